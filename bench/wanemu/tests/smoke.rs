//! Root-only smoke tests of the real emulator: namespaces, TUN devices, delay, and cleanup on
//! every exit path. They do nothing unless `SLIPSTREAM_BENCH_ROOT=1` (they need root, iproute2
//! and ping, and create network namespaces). Run them with
//! `SLIPSTREAM_BENCH_ROOT=1 cargo test --release --test smoke -- --test-threads=1`.
//!
//! Traffic goes only between the 10.77.x addresses inside the namespaces the tests create.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wanemu");

fn enabled() -> bool {
    let on = std::env::var("SLIPSTREAM_BENCH_ROOT").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set SLIPSTREAM_BENCH_ROOT=1 (root) to run the namespace smoke tests");
    }
    on
}

/// Namespace names unique to this process and test.
fn names(tag: &str) -> (String, String) {
    let pid = std::process::id();
    (format!("sswt{pid}{tag}A"), format!("sswt{pid}{tag}B"))
}

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn ns_del(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Starts the emulator and waits for READY on its stdout.
fn start(a: &str, b: &str, extra: &[&str]) -> Child {
    let mut child = Command::new(BIN)
        .args(["--ns-a", a, "--ns-b", b])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wanemu");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read stdout");
    assert_eq!(line.trim(), "READY", "wanemu did not get ready");
    child
}

/// Sends `sig` to the child and returns (exit success, stderr).
fn stop(mut child: Child, sig: libc::c_int) -> (bool, String) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
    let status = child.wait().expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status.success(), err)
}

/// Average RTT in ms of `count` pings from namespace `ns` to `dst`.
fn ping_avg_ms(ns: &str, dst: &str, count: u32) -> f64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            dst,
        ])
        .output()
        .expect("run ping (install iputils-ping)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping failed: {text}");
    // "rtt min/avg/max/mdev = 40.227/40.280/40.438/0.079 ms"
    let stats = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .expect("ping summary");
    stats
        .trim()
        .split('/')
        .nth(1)
        .expect("avg")
        .parse()
        .expect("number")
}

#[test]
fn ping_rtt_is_twice_the_delay_and_namespaces_are_removed() {
    if !enabled() {
        return;
    }
    let (a, b) = names("p");
    let child = start(&a, &b, &["--delay-ms", "25"]);
    assert!(ns_exists(&a) && ns_exists(&b));
    let rtt = ping_avg_ms(&a, "10.77.9.2", 5);
    let (ok, err) = stop(child, libc::SIGTERM);
    assert!(ok, "exit status; stderr: {err}");
    assert!(
        (50.0..58.0).contains(&rtt),
        "rtt {rtt} ms, expected about 50"
    );
    assert!(err.contains("\"a2b\":{\"rx_pkts\":5"), "counters: {err}");
    assert!(!ns_exists(&a) && !ns_exists(&b), "namespaces left behind");
}

#[test]
fn asymmetric_delay_and_sigint_cleanup() {
    if !enabled() {
        return;
    }
    let (a, b) = names("s");
    let child = start(&a, &b, &["--delay-a2b-ms", "30", "--delay-b2a-ms", "5"]);
    let rtt = ping_avg_ms(&a, "10.77.9.2", 3);
    let (ok, _) = stop(child, libc::SIGINT);
    assert!(ok);
    assert!(
        (35.0..43.0).contains(&rtt),
        "rtt {rtt} ms, expected about 35"
    );
    assert!(!ns_exists(&a) && !ns_exists(&b));
}

#[test]
fn full_loss_blocks_ping() {
    if !enabled() {
        return;
    }
    let (a, b) = names("l");
    let child = start(&a, &b, &["--loss", "100%", "--loss-a2b-only"]);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a,
            "ping",
            "-n",
            "-q",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "10.77.9.2",
        ])
        .output()
        .expect("ping");
    let (ok, err) = stop(child, libc::SIGTERM);
    assert!(ok);
    assert!(!out.status.success(), "ping got through 100 % loss");
    assert!(err.contains("\"lost\":2"), "{err}");
    assert!(!ns_exists(&a) && !ns_exists(&b));
}

#[test]
fn duration_limit_exits_and_cleans_up() {
    if !enabled() {
        return;
    }
    let (a, b) = names("d");
    let t = Instant::now();
    let child = start(&a, &b, &["--duration-s", "0.5"]);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!ns_exists(&a) && !ns_exists(&b));
}

#[test]
fn refuses_existing_namespace_and_cleanup_subcommand_removes_it() {
    if !enabled() {
        return;
    }
    let (a, b) = names("e");
    assert!(Command::new("ip")
        .args(["netns", "add", &a])
        .status()
        .expect("ip")
        .success());
    let out = Command::new(BIN)
        .args(["--ns-a", &a, "--ns-b", &b])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already exists") && err.contains("wanemu cleanup"),
        "{err}"
    );
    assert!(
        ns_exists(&a),
        "must not delete a namespace it did not create"
    );
    assert!(!ns_exists(&b), "must not create the second one either");
    let st = Command::new(BIN)
        .args(["cleanup", "--ns-a", &a, "--ns-b", &b])
        .status()
        .expect("cleanup");
    assert!(st.success());
    if ns_exists(&a) {
        ns_del(&a);
        panic!("cleanup left {a}");
    }
}

#[test]
fn setup_error_removes_created_namespaces() {
    if !enabled() {
        return;
    }
    let (a, b) = names("f");
    // "lo" already exists in the new namespace and is no TUN device: TUNSETIFF fails after
    // both namespaces were created.
    let out = Command::new(BIN)
        .args([
            "--ns-a",
            &a,
            "--ns-b",
            &b,
            "--tun-b",
            "lo",
            "--duration-s",
            "1",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "setup should fail: {err}");
    assert!(
        !ns_exists(&a) && !ns_exists(&b),
        "leftovers after a setup error: {err}"
    );
}

#[test]
fn panic_removes_namespaces() {
    if !enabled() {
        return;
    }
    let (a, b) = names("x");
    let child = start(&a, &b, &["--test-panic-after-ready"]);
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    assert!(!ns_exists(&a) && !ns_exists(&b), "leftovers after a panic");
}

/// Sends `total` bytes of a seeded pseudo-random stream from namespace `a` to `b` over TCP
/// and returns (bytes received intact, seconds).
fn tcp_transfer(a: &str, b: &str, total: usize) -> (usize, f64) {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use wanemu::netns::in_namespace;

    fn stream(i: usize) -> u8 {
        // A cheap non-repeating pattern: a hash of the byte's position.
        let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 56) as u8
    }
    let listener = in_namespace(b, || TcpListener::bind("10.77.9.2:0")).expect("bind in B");
    let port = listener.local_addr().expect("addr").port();
    let t = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let (mut pos, mut ok) = (0usize, 0usize);
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            ok += buf[..n]
                .iter()
                .enumerate()
                .filter(|&(k, &v)| v == stream(pos + k))
                .count();
            pos += n;
        }
        (pos, ok)
    });
    let addr = format!("10.77.9.2:{port}");
    let mut s = in_namespace(a, || TcpStream::connect(&addr)).expect("connect from A");
    let chunk: Vec<u8> = (0..total).map(stream).collect();
    s.write_all(&chunk).expect("write");
    drop(s);
    let (pos, ok) = receiver.join().expect("receiver");
    assert_eq!(pos, total, "byte count");
    (ok, t.elapsed().as_secs_f64())
}

#[test]
fn tcp_stream_survives_segmentation_loss_and_merging_intact() {
    if !enabled() {
        return;
    }
    for (tag, extra) in [("o", &[][..]), ("n", &["--no-offload"][..])] {
        let (a, b) = names(tag);
        let mut args = vec![
            "--delay-ms",
            "2",
            "--loss",
            "1%",
            "--loss-a2b-only",
            "--rate",
            "400m",
        ];
        args.extend_from_slice(extra);
        let child = start(&a, &b, &args);
        let total = 32 << 20;
        let (ok, secs) = tcp_transfer(&a, &b, total);
        let (exit_ok, err) = stop(child, libc::SIGTERM);
        assert!(exit_ok, "{err}");
        assert_eq!(ok, total, "every byte arrived intact ({tag})");
        let mbps = total as f64 * 8.0 / secs / 1e6;
        eprintln!("{tag}: {mbps:.0} Mbit/s; {err}");
        // The counters show that losses happened and, with offloads, that reads carried
        // several wire packets each.
        let a2b = err.split("\"b2a\"").next().unwrap_or_default();
        let num = |key: &str| -> u64 {
            let i = a2b.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
            a2b[i..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0)
        };
        assert!(num("lost") > 0, "no loss drawn: {a2b}");
        if extra.is_empty() {
            assert!(
                num("reads") * 2 < num("rx_pkts"),
                "offload not in use: {a2b}"
            );
        } else {
            assert_eq!(num("reads"), num("rx_pkts"));
        }
        assert!(!ns_exists(&a) && !ns_exists(&b));
    }
}

#[test]
fn udp_segment_sender_is_split_into_datagrams_intact() {
    if !enabled() {
        return;
    }
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use wanemu::netns::in_namespace;

    const SEG: usize = 1200;
    const PER_SEND: usize = 40;
    const SENDS: usize = 100;
    let (a, b) = names("u");
    let child = start(&a, &b, &["--delay-ms", "1"]);
    let rx = in_namespace(&b, || UdpSocket::bind("10.77.9.2:0")).expect("bind in B");
    let port = rx.local_addr().expect("addr").port();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // SAFETY: setsockopt with a valid int option on our own socket.
    let big: libc::c_int = 8 << 20;
    unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let tx = in_namespace(&a, || UdpSocket::bind("10.77.9.1:0")).expect("bind in A");
    tx.connect(("10.77.9.2", port)).expect("connect");
    let seg: libc::c_int = SEG as libc::c_int;
    // SAFETY: UDP_SEGMENT (103) takes an int; our own socket.
    let rc = unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::SOL_UDP,
            103,
            (&seg as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Ok(n) = rx.recv(&mut buf) {
            assert_eq!(n, SEG, "datagram size");
            // Each datagram starts with its index and is filled with its low byte.
            let idx = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            assert!(
                buf[4..n].iter().all(|&x| x == idx as u8),
                "payload of {idx}"
            );
            got.push(idx);
        }
        got
    });
    let mut msg = vec![0u8; SEG * PER_SEND];
    for s in 0..SENDS {
        for d in 0..PER_SEND {
            let idx = (s * PER_SEND + d) as u32;
            let dg = &mut msg[d * SEG..(d + 1) * SEG];
            dg.fill(idx as u8);
            dg[..4].copy_from_slice(&idx.to_be_bytes());
        }
        tx.send(&msg).expect("send");
        std::thread::sleep(Duration::from_micros(500));
    }
    let mut got = receiver.join().expect("receiver");
    let (ok, err) = stop(child, libc::SIGTERM);
    assert!(ok, "{err}");
    got.sort_unstable();
    let want: Vec<u32> = (0..(SENDS * PER_SEND) as u32).collect();
    assert_eq!(got, want, "every datagram once; counters: {err}");
    let a2b = err.split("\"b2a\"").next().unwrap_or_default();
    assert!(
        a2b.contains(&format!("\"reads\":{SENDS},")),
        "one read per UDP_SEGMENT send expected (TUN_F_USO4): {a2b}"
    );
    assert!(!ns_exists(&a) && !ns_exists(&b));
}
