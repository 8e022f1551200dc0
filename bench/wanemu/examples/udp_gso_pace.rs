//! Paced UDP through a running wanemu with `UDP_SEGMENT` (GSO) sends and a `UDP_GRO` receiver,
//! the way Slipstream's data plane will send: shows the harness ceiling and CPU for such a sender.
//!
//! Needs root and a running emulator:
//!
//! ```text
//! wanemu --delay-ms 50 --loss 1% --loss-a2b-only --rate 1g &
//! cargo run --release --example udp_gso_pace -- sswanA sswanB 950 10
//! ```
//!
//! Arguments: namespace A, namespace B, target Mbit/s (UDP payload), seconds. Prints one JSON
//! line. Traffic goes only from 10.77.9.1 to 10.77.9.2 inside those namespaces.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wanemu::netns::in_namespace;

const SEG: usize = 1200;
const PER_SEND: usize = 32;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

fn setsockopt_int(
    fd: i32,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: an int option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: udp_gso_pace NS_A NS_B MBIT SECS".into());
    }
    let (ns_a, ns_b) = (&args[1], &args[2]);
    let mbit: f64 = args[3].parse()?;
    let secs: f64 = args[4].parse()?;

    let rx = in_namespace(ns_b, || UdpSocket::bind("10.77.9.2:0"))?;
    let port = rx.local_addr()?.port();
    setsockopt_int(
        rx.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        16 << 20,
    )?;
    setsockopt_int(rx.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1)?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let tx = in_namespace(ns_a, || UdpSocket::bind("10.77.9.1:0"))?;
    tx.connect(("10.77.9.2", port))?;
    setsockopt_int(
        tx.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        4 << 20,
    )?;
    setsockopt_int(
        tx.as_raw_fd(),
        libc::SOL_UDP,
        UDP_SEGMENT,
        SEG as libc::c_int,
    )?;

    let done = Arc::new(AtomicBool::new(false));
    let done_rx = Arc::clone(&done);
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut bytes = 0u64;
        let mut last = Instant::now();
        loop {
            match rx.recv(&mut buf) {
                Ok(n) => {
                    bytes += n as u64;
                    last = Instant::now();
                }
                Err(_) if done_rx.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        (bytes, last)
    });

    let msg = vec![0x5Au8; SEG * PER_SEND];
    let interval = Duration::from_secs_f64((msg.len() * 8) as f64 / (mbit * 1e6));
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let mut next = start;
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        if tx.send(&msg).is_ok() {
            sent += msg.len() as u64;
        }
        next += interval;
    }
    let send_secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300)); // the last packets are still on the delay line
    done.store(true, Ordering::Relaxed);
    let (received, _) = receiver.join().map_err(|_| "receiver panicked")?;
    let cpu = cpu_secs() - cpu0;
    println!(
        "{{\"target_mbps\":{mbit},\"sent_mbps\":{:.1},\"recv_mbps\":{:.1},\"recv_ratio\":{:.4},\"endpoints_cpu_pct\":{:.1}}}",
        sent as f64 * 8.0 / send_secs / 1e6,
        received as f64 * 8.0 / send_secs / 1e6,
        received as f64 / sent.max(1) as f64,
        100.0 * cpu / send_secs
    );
    Ok(())
}
