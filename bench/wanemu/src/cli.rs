//! Command-line interface: flags, and parsers for rates (`1g`, `2.5gbit`, `100M`), loss
//! probabilities (`0.01` or `1%`) and sizes.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::{BufferLimit, LinkConfig};

/// WAN emulator: two network namespaces joined by TUN devices, with delay, loss and a rate cap.
///
/// Creates namespaces NS_A and NS_B, a TUN device in each (ADDR_A in NS_A, ADDR_B in NS_B, /32
/// peer routes), relays packets between them, prints READY on stdout once they are usable and
/// per-direction counters as JSON on stderr at exit. Stops on SIGINT/SIGTERM (or after
/// --duration-s) and removes its namespaces on every exit path. Needs root (CAP_NET_ADMIN,
/// CAP_SYS_ADMIN).
#[derive(Debug, Parser)]
#[command(name = "wanemu", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Subcommand; without one, the emulator runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Emulator settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove namespaces left behind by a run that was killed with SIGKILL (or crashed hard).
    Cleanup(NsNames),
}

/// The two namespace names.
#[derive(Debug, Args, Clone)]
pub struct NsNames {
    /// Namespace of side A (the data sender in the benchmarks).
    #[arg(long, default_value = "sswanA")]
    pub ns_a: String,
    /// Namespace of side B (the data receiver in the benchmarks).
    #[arg(long, default_value = "sswanB")]
    pub ns_b: String,
}

/// Emulator settings.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Namespace names.
    #[command(flatten)]
    pub ns: NsNames,
    /// Address of side A.
    #[arg(long, default_value = "10.77.9.1")]
    pub addr_a: std::net::Ipv4Addr,
    /// Address of side B.
    #[arg(long, default_value = "10.77.9.2")]
    pub addr_b: std::net::Ipv4Addr,
    /// TUN device name inside NS_A.
    #[arg(long, default_value = "sswa0")]
    pub tun_a: String,
    /// TUN device name inside NS_B.
    #[arg(long, default_value = "sswb0")]
    pub tun_b: String,
    /// MTU of both devices.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(576..=65_000))]
    pub mtu: u32,
    /// Transmit queue length of both devices (packets the kernel queues for the relay).
    #[arg(long, default_value_t = 10_000)]
    pub txqueuelen: u32,
    /// One-way delay in ms, applied in each direction (RTT ≈ 2 × this).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ms)]
    pub delay_ms: f64,
    /// One-way delay A→B in ms (overrides --delay-ms for that direction).
    #[arg(long, value_parser = parse_ms)]
    pub delay_a2b_ms: Option<f64>,
    /// One-way delay B→A in ms (overrides --delay-ms for that direction).
    #[arg(long, value_parser = parse_ms)]
    pub delay_b2a_ms: Option<f64>,
    /// Random (Bernoulli) loss probability per packet: 0.01 or 1%.
    #[arg(long, default_value = "0", value_parser = parse_loss)]
    pub loss: f64,
    /// Apply --loss only A→B (the data direction); B→A (ACKs) is lossless.
    #[arg(long)]
    pub loss_a2b_only: bool,
    /// Bottleneck rate in bits/s, each direction: 1g, 2.5gbit, 500m, 100000k; 0 = no cap.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub rate: u64,
    /// Bottleneck buffer in ms of the rate (drop-tail).
    #[arg(long, default_value_t = 50.0, value_parser = parse_ms)]
    pub buf_ms: f64,
    /// Bottleneck buffer in bytes (overrides --buf-ms).
    #[arg(long)]
    pub buf_bytes: Option<u64>,
    /// Seed of the loss generator (each direction derives its own stream from it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Preallocated packet buffers per direction (queue + delay line); packets beyond are dropped
    /// and counted as ring_full. Default: enough for the delay × rate, at least 65536.
    #[arg(long)]
    pub slots: Option<usize>,
    /// Most packets read in one go before releasing due ones.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Release packets up to this many µs before they are due (fewer wake-ups, larger merged
    /// writes; a burst of at most this much time at the rate).
    #[arg(long, default_value_t = 5.0, value_parser = parse_ms)]
    pub early_us: f64,
    /// Do not use TUN offloads (vnet headers, TSO): every wire packet is a separate read and
    /// write. Slower; for comparison, or kernels where TUNSETOFFLOAD fails.
    #[arg(long)]
    pub no_offload: bool,
    /// Stop by itself after this many seconds (0 = run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    pub duration_s: f64,
    /// Test hook: panic right after READY (checks that a panic still removes the namespaces).
    #[arg(long, hide = true)]
    pub test_panic_after_ready: bool,
}

impl RunArgs {
    fn buffer(&self) -> BufferLimit {
        match self.buf_bytes {
            Some(b) => BufferLimit::Bytes(b),
            None => BufferLimit::Time(Duration::from_secs_f64(self.buf_ms / 1e3)),
        }
    }

    /// The A→B link (the data direction).
    pub fn a2b(&self) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_secs_f64(self.delay_a2b_ms.unwrap_or(self.delay_ms) / 1e3),
            loss: self.loss,
            rate_bps: self.rate,
            buffer: self.buffer(),
        }
    }

    /// The B→A link.
    pub fn b2a(&self) -> LinkConfig {
        LinkConfig {
            delay: Duration::from_secs_f64(self.delay_b2a_ms.unwrap_or(self.delay_ms) / 1e3),
            loss: if self.loss_a2b_only { 0.0 } else { self.loss },
            rate_bps: self.rate,
            buffer: self.buffer(),
        }
    }

    /// Packet slots for a direction: what `delay + buffer` at the rate holds in MTU-sized
    /// packets, times two for smaller packets, at least 65536 and at most 4 Mi.
    pub fn slots_for(&self, link: &LinkConfig) -> usize {
        if let Some(s) = self.slots {
            return s.max(1);
        }
        let rate = if link.rate_bps == 0 {
            10e9
        } else {
            link.rate_bps as f64
        };
        let hold_s = link.delay.as_secs_f64()
            + match link.buffer {
                BufferLimit::Time(t) => t.as_secs_f64(),
                BufferLimit::Bytes(b) => b as f64 * 8.0 / rate,
                BufferLimit::Unlimited => 1.0,
            };
        let pkts = 2.0 * hold_s * rate / 8.0 / f64::from(self.mtu);
        (pkts.ceil() as usize).clamp(65_536, 4 << 20)
    }
}

/// A non-negative, finite number of milliseconds.
pub fn parse_ms(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !v.is_finite() || !(0.0..=3_600_000.0).contains(&v) {
        return Err(format!("{s:?}: expected 0 to 3600000 ms"));
    }
    Ok(v)
}

/// `0.01` or `1%`, in [0, 1].
pub fn parse_loss(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"))? / 100.0,
        None => t.parse::<f64>().map_err(|e| format!("{s:?}: {e}"))?,
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(format!(
            "{s:?}: loss must be between 0 and 1 (or 0% and 100%)"
        ));
    }
    Ok(v)
}

/// Bits per second with an optional decimal suffix k/m/g/t and optional `bit`/`bps`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("bit")
        .or_else(|| t.strip_suffix("bps"))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        Some('t') => (&t[..t.len() - 1], 1e12),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: {e} (examples: 1g, 2.5gbit, 500m, 0)"))?;
    let bps = v * mult;
    if !bps.is_finite() || !(0.0..=1e13).contains(&bps) {
        return Err(format!("{s:?}: rate out of range"));
    }
    if bps > 0.0 && bps < 8_000.0 {
        return Err(format!("{s:?}: rates below 8 kbit/s are not supported"));
    }
    Ok(bps.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1g"), Ok(1_000_000_000));
        assert_eq!(parse_rate("2.5gbit"), Ok(2_500_000_000));
        assert_eq!(parse_rate("500M"), Ok(500_000_000));
        assert_eq!(parse_rate("100000k"), Ok(100_000_000));
        assert_eq!(parse_rate("1000000"), Ok(1_000_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1g").is_err());
        assert!(parse_rate("100").is_err());
    }

    #[test]
    fn losses() {
        assert_eq!(parse_loss("0.01"), Ok(0.01));
        assert_eq!(parse_loss("1%"), Ok(0.01));
        assert_eq!(parse_loss("0"), Ok(0.0));
        assert!(parse_loss("2").is_err());
        assert!(parse_loss("-0.1").is_err());
    }

    #[test]
    fn flags_build_the_links() {
        let cli = Cli::try_parse_from([
            "wanemu",
            "--delay-ms",
            "50",
            "--delay-b2a-ms",
            "10",
            "--loss",
            "1%",
            "--loss-a2b-only",
            "--rate",
            "1g",
            "--buf-ms",
            "25",
        ])
        .unwrap();
        let a2b = cli.run.a2b();
        let b2a = cli.run.b2a();
        assert_eq!(a2b.delay, Duration::from_millis(50));
        assert_eq!(b2a.delay, Duration::from_millis(10));
        assert_eq!((a2b.loss, b2a.loss), (0.01, 0.0));
        assert_eq!(a2b.rate_bps, 1_000_000_000);
        assert_eq!(a2b.buffer, BufferLimit::Time(Duration::from_millis(25)));
        assert_eq!(cli.run.ns.ns_a, "sswanA");
        // 75 ms × 1 Gbit/s = 6250 MTU packets, ×2 = 12 500: below the floor.
        assert_eq!(cli.run.slots_for(&a2b), 65_536);
    }

    #[test]
    fn cleanup_subcommand() {
        let cli = Cli::try_parse_from(["wanemu", "cleanup", "--ns-a", "x", "--ns-b", "y"]).unwrap();
        match cli.command {
            Some(Command::Cleanup(n)) => assert_eq!((n.ns_a.as_str(), n.ns_b.as_str()), ("x", "y")),
            c => panic!("{c:?}"),
        }
    }
}
