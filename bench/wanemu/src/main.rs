//! `wanemu`: sets up two network namespaces joined by an emulated WAN path and relays packets
//! until SIGINT/SIGTERM; `wanemu cleanup` removes leftovers. See the crate docs and
//! `bench/README.md`.

use std::error::Error;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use wanemu::cli::{Cli, Command, NsNames, RunArgs};
use wanemu::model::Link;
use wanemu::netns::{self, ip, NsGuard};
use wanemu::pump::{Counters, Pump};
use wanemu::relay::{self, RelayIo};
use wanemu::rng::SplitMix64;
use wanemu::signals;

type Res<T> = Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Cleanup(names)) => cleanup(&names),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wanemu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Removes the named namespaces if they exist (devices inside go with them).
fn cleanup(names: &NsNames) -> Res<()> {
    for name in [&names.ns_a, &names.ns_b] {
        netns::validate_name(name)?;
        if netns::delete(name)? {
            eprintln!("wanemu: removed namespace {name}");
        } else {
            eprintln!("wanemu: no namespace {name}");
        }
    }
    Ok(())
}

/// Sets the stop flag when dropped, so relay threads end even if the main thread unwinds.
struct StopOnDrop;

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        signals::request_stop();
    }
}

fn check_args(a: &RunArgs) -> Res<()> {
    netns::validate_name(&a.ns.ns_a)?;
    netns::validate_name(&a.ns.ns_b)?;
    if a.ns.ns_a == a.ns.ns_b {
        return Err("--ns-a and --ns-b must differ".into());
    }
    if a.addr_a == a.addr_b {
        return Err("--addr-a and --addr-b must differ".into());
    }
    for n in [&a.tun_a, &a.tun_b] {
        if n.is_empty()
            || n.len() > 15
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("bad device name {n:?}: 1 to 15 of [A-Za-z0-9_-]").into());
        }
    }
    for n in [&a.ns.ns_a, &a.ns.ns_b] {
        if netns::exists(n) {
            return Err(format!(
                "network namespace {n:?} already exists; if it is a leftover, remove it with \
                 `wanemu cleanup --ns-a {} --ns-b {}`, or choose other names with --ns-a/--ns-b",
                a.ns.ns_a, a.ns.ns_b
            )
            .into());
        }
    }
    Ok(())
}

fn run(a: &RunArgs) -> Res<()> {
    signals::install()?;
    check_args(a)?;

    // Declared before the devices, so it is dropped after them: devices close first, then the
    // namespaces go, on the normal path, on `?` and on unwinding alike.
    let mut guard = NsGuard::new();
    guard.create(&a.ns.ns_a)?;
    guard.create(&a.ns.ns_b)?;
    let sides = [
        (&a.ns.ns_a, &a.tun_a, a.addr_a, a.addr_b),
        (&a.ns.ns_b, &a.tun_b, a.addr_b, a.addr_a),
    ];
    let mut tuns = Vec::with_capacity(2);
    for (ns, dev, mine, peer) in sides {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        tuns.push(netns::open_tun_in(ns, dev, !a.no_offload)?);
        let (mtu, qlen) = (a.mtu.to_string(), a.txqueuelen.to_string());
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            "dev",
            dev,
            "mtu",
            &mtu,
            "txqueuelen",
            &qlen,
            "up",
        ])?;
        let (mine, peer) = (mine.to_string(), format!("{peer}/32"));
        ip(&["-n", ns, "addr", "add", &mine, "peer", &peer, "dev", dev])?;
    }
    if signals::stop_requested() {
        return Ok(());
    }

    let (a2b_cfg, b2a_cfg) = (a.a2b(), a.b2a());
    // MTU + vnet header, rounded up with room to spare.
    let slot_size = a.mtu as usize + 64;
    let pump_a2b = Pump::new(
        Link::new(&a2b_cfg, SplitMix64::derive(a.seed, 0)),
        a.slots_for(&a2b_cfg),
        slot_size,
        !a.no_offload,
    );
    let pump_b2a = Pump::new(
        Link::new(&b2a_cfg, SplitMix64::derive(a.seed, 1)),
        a.slots_for(&b2a_cfg),
        slot_size,
        !a.no_offload,
    );
    let io_a2b = RelayIo {
        ingress: tuns[0].raw(),
        egress: tuns[1].raw(),
        batch: a.batch,
        early_ns: (a.early_us * 1e3) as u64,
    };
    let io_b2a = RelayIo {
        ingress: tuns[1].raw(),
        egress: tuns[0].raw(),
        batch: a.batch,
        early_ns: (a.early_us * 1e3) as u64,
    };
    let origin = Instant::now();
    let limit = (a.duration_s > 0.0).then(|| Duration::from_secs_f64(a.duration_s));

    let (r_a2b, r_b2a) = std::thread::scope(|s| {
        let _stop = StopOnDrop;
        let h_a2b = s.spawn(|| relay::run(pump_a2b, io_a2b, origin, &signals::STOP));
        let h_b2a = s.spawn(|| relay::run(pump_b2a, io_b2a, origin, &signals::STOP));
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the emulator; the caller may only watch the namespaces.
        let _ = writeln!(out, "READY").and_then(|()| out.flush());
        drop(out);
        if a.test_panic_after_ready {
            panic!("--test-panic-after-ready");
        }
        while !signals::stop_requested() && !h_a2b.is_finished() && !h_b2a.is_finished() {
            if limit.is_some_and(|l| origin.elapsed() >= l) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signals::request_stop();
        (h_a2b.join(), h_b2a.join())
    });
    let elapsed = origin.elapsed().as_secs_f64();
    // Packets the kernel dropped because the TUN queue was full never reached the relay; read
    // them before the devices go.
    let tun_drops_a = netns::tun_tx_dropped(&a.ns.ns_a, &a.tun_a);
    let tun_drops_b = netns::tun_tx_dropped(&a.ns.ns_b, &a.tun_b);
    drop(tuns);
    guard.remove_all();

    let mut errors = Vec::new();
    let mut report = |name: &str, r: std::thread::Result<(Pump, Option<std::io::Error>)>| match r {
        Ok((pump, err)) => {
            if let Some(e) = err {
                errors.push(format!("relay {name}: {e}"));
            }
            *pump.counters()
        }
        Err(_) => {
            errors.push(format!("relay {name} panicked"));
            Counters::default()
        }
    };
    let c_a2b = report("a2b", r_a2b);
    let c_b2a = report("b2a", r_b2a);
    eprintln!(
        "{{\"a2b\":{},\"b2a\":{},\"tun_queue_drops_a2b\":{},\"tun_queue_drops_b2a\":{},\"elapsed_s\":{elapsed:.3},\"seed\":{}}}",
        c_a2b.to_json(),
        c_b2a.to_json(),
        tun_drops_a.map_or("null".to_owned(), |n| n.to_string()),
        tun_drops_b.map_or("null".to_owned(), |n| n.to_string()),
        a.seed
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; ").into())
    }
}
