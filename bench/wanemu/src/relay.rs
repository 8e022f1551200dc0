//! The relay thread of one direction: read packets from one TUN descriptor in batches (until
//! `EAGAIN`), release those that are due to the other, and sleep in `ppoll(2)` until either
//! a packet arrives or the next queued one is due (nanosecond timeout, 1 ns timer slack).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::pump::{Pump, Released};
use crate::tun::{read_fd, write_fd};

/// Longest single sleep, so a stop request is seen within this time even when idle.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// How often to retry a blocked egress (TUN writes practically never block).
const BLOCKED_RETRY: Duration = Duration::from_micros(100);

/// Settings of one relay thread.
#[derive(Debug, Clone, Copy)]
pub struct RelayIo {
    /// Descriptor packets are read from.
    pub ingress: RawFd,
    /// Descriptor packets are written to.
    pub egress: RawFd,
    /// Most packets read in one go before releasing due ones.
    pub batch: usize,
    /// Packets due within this many ns are released now rather than slept for: fewer wake-ups
    /// and larger merged writes, at the price of leaving up to this much early.
    pub early_ns: u64,
}

/// Nanoseconds since `origin` (the common clock of both directions).
pub fn now_ns(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Asks the kernel to wake this thread as close to its deadlines as it can (the default slack
/// is 50 µs, four packet times at 1 Gbit/s).
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes; EINTR counts as a wake-up.
fn wait(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::other(format!(
            "descriptor {fd} reported poll error (revents {:#x})",
            pfd.revents
        )));
    }
    Ok(())
}

/// Relays one direction until `stop` is set or an I/O error occurs; returns the pump (with its
/// counters) either way, plus the error if there was one.
pub fn run(
    mut pump: Pump,
    io: RelayIo,
    origin: Instant,
    stop: &AtomicBool,
) -> (Pump, Option<io::Error>) {
    tighten_timer_slack();
    let batch = io.batch.max(1);
    while !stop.load(Ordering::Relaxed) {
        let now = now_ns(origin);
        if pump.release(now.saturating_add(io.early_ns), |iov| {
            write_fd(io.egress, iov)
        }) == Released::Blocked
        {
            if let Err(e) = wait(io.egress, libc::POLLOUT, BLOCKED_RETRY) {
                return (pump, Some(e));
            }
            continue;
        }
        let read = match pump.ingest(now, batch, |b| read_fd(io.ingress, b)) {
            Ok(n) => n,
            Err(e) => return (pump, Some(e)),
        };
        if read == batch {
            continue; // more may be waiting: release what is due, then read on
        }
        let now = now_ns(origin);
        let sleep = match pump.next_due() {
            Some(due) if due <= now.saturating_add(io.early_ns) => continue,
            Some(due) => Duration::from_nanos(due - now - io.early_ns).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        if let Err(e) = wait(io.ingress, libc::POLLIN, sleep) {
            return (pump, Some(e));
        }
    }
    (pump, None)
}
