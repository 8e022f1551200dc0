//! Slipstream's WAN emulator: two network namespaces joined by TUN devices, relayed in userspace
//! with a constant one-way delay, Bernoulli loss, a rate cap and a drop-tail bottleneck buffer.
//!
//! The kernel here has no netem, so delay has to be added in userspace. The crate is split so
//! that everything that decides *what happens to a packet* is testable without root:
//!
//! * [`rng`] — SplitMix64 and a Bernoulli trial (deterministic for a seed);
//! * [`model`] — the per-direction impairment model (sans-IO, time passed in);
//! * [`ring`] — preallocated packet buffers in FIFO order;
//! * [`pump`] — model + ring + counters behind read/write closures;
//! * [`gso`] — TCP segmentation of TUN super-packets and merging on the way out;
//!
//! and the parts that need root are thin:
//!
//! * [`tun`] — TUN devices via `/dev/net/tun`;
//! * [`netns`] — namespaces via `ip netns`, a cleanup guard, `setns` to create devices inside;
//! * [`relay`] — one thread per direction with batched reads and `ppoll` deadlines;
//! * [`signals`] — SIGINT/SIGTERM/SIGHUP set a stop flag;
//! * [`cli`] — flags.

pub mod cli;
pub mod gso;
pub mod model;
pub mod netns;
pub mod pump;
pub mod relay;
pub mod ring;
pub mod rng;
pub mod signals;
pub mod tun;
