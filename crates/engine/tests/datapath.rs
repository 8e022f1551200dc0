//! The UDP data path over real loopback sockets: File readers to File sinks, two endpoints and
//! one endpoint sending to itself, cipher levels, resume, cancel, a wrong key, a rate limit,
//! the bound on open sinks, and an ignored throughput smoke test.

use slipstream_engine::datapath::{
    DataEndpoint, DataError, ReceiveCheckpoint, ReceiveHandle, ReceivePlan, SendFile, SendHandle,
    SendPlan, SinkOpener, SinkRequest,
};
use slipstream_proto::{CipherLevel, RateLimits, TransferParams};
use slipstream_storage::data::{FileSink, OverwriteMode, SinkOptions};
use slipstream_storage::{Backend, FileBackend, RelPath};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Source and destination folders with their backends.
struct Fixture {
    _src_dir: tempfile::TempDir,
    dst_dir: tempfile::TempDir,
    src: Arc<FileBackend>,
    dst: Arc<FileBackend>,
    names: Vec<String>,
    data: Vec<Vec<u8>>,
}

fn fixture(sizes: &[usize]) -> Fixture {
    let src_dir = tempfile::tempdir().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    let mut data = Vec::new();
    for (index, &size) in sizes.iter().enumerate() {
        let name = format!("file{index}.bin");
        let bytes = pattern(size, index as u64 + 1);
        std::fs::write(src_dir.path().join(&name), &bytes).unwrap();
        names.push(name);
        data.push(bytes);
    }
    Fixture {
        src: Arc::new(FileBackend::new(src_dir.path().to_path_buf())),
        dst: Arc::new(FileBackend::new(dst_dir.path().to_path_buf())),
        _src_dir: src_dir,
        dst_dir,
        names,
        data,
    }
}

impl Fixture {
    fn total(&self) -> u64 {
        self.data.iter().map(|d| d.len() as u64).sum()
    }

    async fn send_files(&self) -> Vec<SendFile> {
        let mut files = Vec::new();
        for name in &self.names {
            let reader = self
                .src
                .open_reader(&RelPath::parse(name).unwrap())
                .await
                .unwrap();
            files.push(SendFile {
                size: reader.size(),
                reader,
            });
        }
        files
    }

    fn options(&self, index: usize, reception: &str) -> SinkOptions {
        SinkOptions {
            size: self.data[index].len() as u64,
            overwrite: OverwriteMode::Always,
            executable: false,
            modification_time: None,
            reception_id: format!("{reception}-{index}"),
            resume: None,
            resume_only: false,
        }
    }

    fn opener(&self, reception: &str) -> SinkOpener {
        let backend = self.dst.clone();
        let names = self.names.clone();
        let options: Vec<SinkOptions> = (0..self.names.len())
            .map(|i| self.options(i, reception))
            .collect();
        Arc::new(move |request: SinkRequest| {
            let backend = backend.clone();
            let name = names[request.index].clone();
            let mut options = options[request.index].clone();
            options.resume = request.resume;
            options.resume_only = request.resume_only;
            Box::pin(async move { backend.create_sink(&RelPath::parse(&name)?, options).await })
        })
    }

    fn assert_received(&self) {
        for (name, data) in self.names.iter().zip(&self.data) {
            let got = std::fs::read(self.dst_dir.path().join(name)).unwrap();
            assert!(got == *data, "{name}: received bytes differ");
        }
        assert_eq!(entries(self.dst_dir.path()).len(), self.names.len());
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn block_size(cipher: CipherLevel) -> u32 {
    TransferParams::block_size_for_datagram(1472, cipher).unwrap()
}

async fn loopback() -> Arc<DataEndpoint> {
    DataEndpoint::bind("127.0.0.1:0".parse().unwrap(), None, None)
        .await
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn receive(
    endpoint: &Arc<DataEndpoint>,
    f: &Fixture,
    session_id: u32,
    cipher: CipherLevel,
    key: [u8; 32],
    reception: &str,
    resumed_sinks: Vec<(usize, Box<dyn FileSink>)>,
    peer_timeout: Duration,
) -> ReceiveHandle {
    endpoint.start_receive(ReceivePlan {
        session_id,
        cipher,
        key,
        block_size: block_size(cipher),
        sizes: f.data.iter().map(|d| d.len() as u64).collect(),
        open_sink: f.opener(reception),
        resumed_sinks,
        resumed_closed: Vec::new(),
        checkpoint_interval: Duration::from_millis(100),
        peer_timeout,
    })
}

#[allow(clippy::too_many_arguments)]
async fn send(
    endpoint: &Arc<DataEndpoint>,
    f: &Fixture,
    session_id: u32,
    peer: SocketAddr,
    cipher: CipherLevel,
    key: [u8; 32],
    resume: Vec<std::ops::Range<u64>>,
    rate: RateLimits,
    peer_timeout: Duration,
) -> SendHandle {
    endpoint.start_send(SendPlan {
        session_id,
        peer,
        cipher,
        key,
        block_size: block_size(cipher),
        files: f.send_files().await,
        resume,
        rate,
        peer_timeout,
    })
}

async fn transfer(
    sender_end: &Arc<DataEndpoint>,
    receiver_end: &Arc<DataEndpoint>,
    cipher: CipherLevel,
) {
    let f = fixture(&[0, 1, 20 * MIB]);
    let key = [7u8; 32];
    let session = receiver_end.allocate_session_id();
    let receiving = receive(
        receiver_end,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let mut sending = send(
        sender_end,
        &f,
        session,
        receiver_end.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::default(),
        Duration::from_secs(10),
    )
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), sending.wait())
        .await
        .expect("send finishes")
        .expect("send succeeds");
    assert_eq!(outcome.digests.len(), 3);
    assert_eq!(outcome.progress.bytes_acked, f.total());
    assert_eq!(outcome.progress.files_read, 3);
    let results = tokio::time::timeout(Duration::from_secs(30), receiving.finish(outcome.digests))
        .await
        .expect("finish returns")
        .expect("reception succeeds");
    for result in results {
        result.unwrap();
    }
    let progress = receiving.progress();
    assert_eq!(progress.bytes_received, f.total());
    assert_eq!(progress.peer, Some(sender_end.local_addr()));
    f.assert_received();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_two_endpoints_plaintext() {
    let (a, b) = (loopback().await, loopback().await);
    transfer(&a, &b, CipherLevel::None).await;
    assert!(a.stats().datagrams_sent > 14_000);
    assert!(b.stats().datagrams_received > 14_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_two_endpoints_aes256() {
    let (a, b) = (loopback().await, loopback().await);
    transfer(&a, &b, CipherLevel::Aes256Gcm).await;
    // And back the other way on the same sockets.
    transfer(&b, &a, CipherLevel::Aes256Gcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_endpoint_sends_to_itself() {
    let a = loopback().await;
    transfer(&a, &a, CipherLevel::Aes256Gcm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_survives_random_loss_both_ways() {
    let (a, b) = (loopback().await, loopback().await);
    a.simulate_inbound_loss(0.05);
    b.simulate_inbound_loss(0.05);
    let f = fixture(&[4 * MIB + 1, 0, 3 * MIB]);
    let key = [8u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::transfer(400_000),
        Duration::from_secs(10),
    )
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), sending.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        outcome.progress.blocks_retransmitted > 0,
        "{:?}",
        outcome.progress
    );
    let results = receiving.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(b.stats().datagrams_dropped > 0);
    f.assert_received();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_empty_transfer() {
    let (a, b) = (loopback().await, loopback().await);
    let f = fixture(&[0, 0]);
    let session = b.allocate_session_id();
    let key = [1u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(5),
    );
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::default(),
        Duration::from_secs(5),
    )
    .await;
    let outcome = sending.wait().await.unwrap();
    let results = receiving.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    f.assert_received();
}

/// Many files through a receiver that may keep only 3 File sinks open, with loss (so files
/// wait for retransmissions while later ones arrive): sinks are closed when complete or least
/// recently used and reopened from their checkpoints; every file arrives intact, the bound
/// holds (each reception may go one over), and nothing stays open. Then a second run is
/// cancelled part way: the closed sinks' partfiles are removed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_bounded_open_sinks() {
    let (a, b) = (loopback().await, loopback().await);
    b.set_open_sink_limit(3);
    assert_eq!(b.open_sink_limit(), 3);
    b.simulate_inbound_loss(0.05);
    let sizes: Vec<usize> = (0..300).map(|i| (i * 7919) % 40_000 + 1).collect();
    let f = fixture(&sizes);
    let key = [4u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::transfer(100_000),
        Duration::from_secs(10),
    )
    .await;
    let watched = b.clone();
    let most = tokio::spawn(async move {
        let mut most = 0;
        loop {
            most = most.max(watched.open_sinks());
            if most > 4 {
                return most;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(60), sending.wait())
        .await
        .unwrap()
        .unwrap();
    let results = receiving.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(!most.is_finished(), "more than 4 sinks were open at once");
    most.abort();
    f.assert_received();
    assert_eq!(b.open_sinks(), 0);

    // Cancelled part way: closed and open sinks alike leave nothing behind.
    let g = fixture(&sizes);
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &g,
        session,
        cipher,
        key,
        "r2",
        Vec::new(),
        Duration::from_secs(10),
    );
    let mut sending = send(
        &a,
        &g,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::transfer(20_000),
        Duration::from_secs(10),
    )
    .await;
    let checkpoint = checkpoint_with(&receiving, 1_000_000).await;
    assert!(checkpoint.files.len() > 3, "{}", checkpoint.files.len());
    sending.cancel();
    let _ = sending.wait().await;
    receiving.abort().await;
    assert!(
        entries(g.dst_dir.path()).is_empty(),
        "{:?}",
        entries(g.dst_dir.path())
    );
    assert_eq!(b.open_sinks(), 0);
}

/// Waits for a checkpoint with at least `bytes` durable.
async fn checkpoint_with(handle: &ReceiveHandle, bytes: u64) -> ReceiveCheckpoint {
    let mut checkpoints = handle.checkpoints();
    let checkpoint = tokio::time::timeout(
        Duration::from_secs(30),
        checkpoints.wait_for(|c| {
            c.as_ref()
                .is_some_and(|c| c.durable.iter().map(|r| r.end - r.start).sum::<u64>() >= bytes)
        }),
    )
    .await
    .expect("a checkpoint arrives")
    .unwrap();
    checkpoint.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_resume_after_pause() {
    let (a, b) = (loopback().await, loopback().await);
    let f = fixture(&[3 * MIB + 5, 0, 20 * MIB + 3]);
    let key = [9u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    // First run: slow, paused part way.
    let session = b.allocate_session_id();
    let first = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_millis(800),
    );
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::transfer(100_000),
        Duration::from_secs(10),
    )
    .await;
    let _ = checkpoint_with(&first, 6 * MIB as u64).await;
    sending.pause();
    assert_eq!(sending.wait().await.unwrap_err(), DataError::Cancelled);
    // The first reception notices the silence; its files stay for the resume.
    let stopped = tokio::time::timeout(Duration::from_secs(10), first.stopped())
        .await
        .expect("the first reception stops");
    assert!(matches!(stopped, DataError::PeerSilent(_)), "{stopped:?}");
    let checkpoint = first.checkpoints().borrow().clone().unwrap();
    drop(first);
    let durable: u64 = checkpoint.durable.iter().map(|r| r.end - r.start).sum();
    assert!(
        durable >= 6 * MIB as u64 && durable < f.total(),
        "{durable}"
    );

    // Second run: sinks resumed from the checkpoint states, the sender skips durable ranges.
    let mut resumed_sinks = Vec::new();
    for (index, file) in &checkpoint.files {
        let mut options = f.options(*index, "r1");
        options.resume = Some(file.state.clone());
        let sink = f
            .dst
            .create_sink(&RelPath::parse(&f.names[*index]).unwrap(), options)
            .await
            .unwrap();
        assert!(!sink.resumed().is_empty() || file.durable.is_empty());
        resumed_sinks.push((*index, sink));
    }
    let session = b.allocate_session_id();
    let second = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        resumed_sinks,
        Duration::from_secs(10),
    );
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        checkpoint.durable.clone(),
        RateLimits::default(),
        Duration::from_secs(10),
    )
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), sending.wait())
        .await
        .unwrap()
        .unwrap();
    let sent = outcome.progress.bytes_sent;
    let block = block_size(cipher) as u64;
    assert!(
        outcome.progress.resumed_bytes + 4 * block >= durable,
        "{:?}",
        outcome.progress
    );
    // First transmissions cover only what was missing (a block straddling a durable range's
    // edge is sent again); retransmissions come on top, loosely bounded (a loaded machine
    // loses some on loopback too).
    let missing = f.total() - durable;
    let first_time = sent.saturating_sub(outcome.progress.blocks_retransmitted * block);
    assert!(
        first_time <= missing + 4 * block,
        "{first_time} bytes sent once, {missing} were missing"
    );
    assert!(
        sent <= missing + missing / 4 + 16 * block,
        "sent {sent} of {} with {durable} resumed",
        f.total()
    );
    let results = second.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(second.progress().resumed_bytes > 0);
    f.assert_received();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_cancel_stops_the_receiver() {
    let (a, b) = (loopback().await, loopback().await);
    let f = fixture(&[8 * MIB, 1]);
    let key = [3u8; 32];
    let cipher = CipherLevel::Aes128Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::transfer(20_000),
        Duration::from_secs(10),
    )
    .await;
    let _ = checkpoint_with(&receiving, 1).await;
    sending.cancel();
    assert_eq!(sending.wait().await.unwrap_err(), DataError::Cancelled);
    let stopped = tokio::time::timeout(Duration::from_secs(5), receiving.stopped())
        .await
        .expect("the receiver learns of the cancel");
    assert_eq!(stopped, DataError::Cancelled);
    assert!(receiving.finish(vec![]).await.is_err());
    receiving.abort().await;
    assert!(
        entries(f.dst_dir.path()).is_empty(),
        "{:?}",
        entries(f.dst_dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_wrong_key_is_refused() {
    let (a, b) = (loopback().await, loopback().await);
    let f = fixture(&[2 * MIB]);
    let cipher = CipherLevel::Aes256Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        [1u8; 32],
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        [2u8; 32],
        Vec::new(),
        RateLimits::default(),
        Duration::from_secs(1),
    )
    .await;
    let error = tokio::time::timeout(Duration::from_secs(10), sending.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, DataError::PeerSilent(_)), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let progress = receiving.progress();
    assert_eq!(progress.bytes_received, 0);
    assert!(progress.packets_dropped > 0, "{progress:?}");
    assert!(b.stats().datagrams_dropped > 0);
    assert_eq!(progress.peer, None);
    receiving.abort().await;
    assert!(entries(f.dst_dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_rate_limit_is_respected() {
    let (a, b) = (loopback().await, loopback().await);
    // 5 MiB at 50 Mbit/s: about 0.86 s with headers.
    let f = fixture(&[5 * MIB]);
    let key = [4u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::transfer(50_000),
        Duration::from_secs(10),
    )
    .await;
    let outcome = sending.wait().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed <= Duration::from_secs(5),
        "{elapsed:?}"
    );
    let results = receiving.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    f.assert_received();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_dual_stack_sockets_reach_ipv4_peers() {
    let bind = |address: &str| {
        let address: SocketAddr = address.parse().unwrap();
        async move { DataEndpoint::bind(address, None, None).await }
    };
    let (Ok(a), Ok(b)) = (bind("[::]:0").await, bind("[::]:0").await) else {
        eprintln!("no IPv6 here: skipped");
        return;
    };
    let f = fixture(&[3 * MIB + 17]);
    let key = [6u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let to_b: SocketAddr = format!("127.0.0.1:{}", b.local_addr().port())
        .parse()
        .unwrap();
    let mut sending = send(
        &a,
        &f,
        session,
        to_b,
        cipher,
        key,
        Vec::new(),
        RateLimits::default(),
        Duration::from_secs(10),
    )
    .await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), sending.wait())
        .await
        .unwrap()
        .unwrap();
    let results = receiving.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    // The sender is seen as an IPv4 peer, not as a mapped IPv6 address.
    let peer = receiving.progress().peer.unwrap();
    assert_eq!(
        peer,
        SocketAddr::new("127.0.0.1".parse().unwrap(), a.local_addr().port())
    );
    f.assert_received();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_server_outgoing_limit_is_shared() {
    // 40 Mbit/s for the whole server, two sends of 2.5 MiB at once: about 1.05 s with headers.
    let a = DataEndpoint::bind("127.0.0.1:0".parse().unwrap(), Some(40_000), None)
        .await
        .unwrap();
    let b = loopback().await;
    let cipher = CipherLevel::None;
    let key = [0u8; 32];
    let started = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let f = fixture(&[5 * MIB / 2]);
        let session = b.allocate_session_id();
        let receiving = receive(
            &b,
            &f,
            session,
            cipher,
            key,
            "r1",
            Vec::new(),
            Duration::from_secs(10),
        );
        let sending = send(
            &a,
            &f,
            session,
            b.local_addr(),
            cipher,
            key,
            Vec::new(),
            RateLimits::default(),
            Duration::from_secs(10),
        )
        .await;
        runs.push((f, receiving, sending));
    }
    for (f, receiving, sending) in &mut runs {
        let outcome = sending.wait().await.unwrap();
        let results = receiving.finish(outcome.digests).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
        f.assert_received();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed <= Duration::from_secs(8),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datapath_server_incoming_limit_holds_the_window() {
    // 40 Mbit/s into the receiving server: after the initial 16 MiB window, the last 4 MiB
    // take about 0.84 s.
    let a = loopback().await;
    let b = DataEndpoint::bind("127.0.0.1:0".parse().unwrap(), None, Some(40_000))
        .await
        .unwrap();
    let f = fixture(&[20 * MIB]);
    let (cipher, key) = (CipherLevel::None, [0u8; 32]);
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::default(),
        Duration::from_secs(10),
    )
    .await;
    let outcome = sending.wait().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed <= Duration::from_secs(10),
        "{elapsed:?}"
    );
    let results = receiving.finish(outcome.digests).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    f.assert_received();
}

/// User + system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (which ends with ')'), utime and stime are the 12th and 13th
    // fields, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// `cargo test --release -p slipstream-engine --test datapath -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn datapath_throughput_1gib_aes256() {
    let (a, b) = (loopback().await, loopback().await);
    println!("socket buffers (recv, send): {:?}", b.socket_buffer_sizes());
    let f = fixture(&[1 << 30]);
    let key = [5u8; 32];
    let cipher = CipherLevel::Aes256Gcm;
    let session = b.allocate_session_id();
    let receiving = receive(
        &b,
        &f,
        session,
        cipher,
        key,
        "r1",
        Vec::new(),
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut sending = send(
        &a,
        &f,
        session,
        b.local_addr(),
        cipher,
        key,
        Vec::new(),
        RateLimits::default(),
        Duration::from_secs(10),
    )
    .await;
    let outcome = loop {
        tokio::select! {
            outcome = sending.wait() => break outcome.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let p = sending.progress();
                println!(
                    "{:6.2} s: acked {:5} MiB, retransmitted {:6} blocks, rate {:7} kbit/s, rtt {:.2} ms",
                    started.elapsed().as_secs_f64(),
                    p.bytes_acked >> 20,
                    p.blocks_retransmitted,
                    p.rate_kbps,
                    p.round_trip_time_ms
                );
            }
        }
    };
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "CPU during the transfer: {cpu:.2} s in {:.2} s ({:.0} % of one core)",
        elapsed.as_secs_f64(),
        cpu / elapsed.as_secs_f64() * 100.0
    );
    let results = receiving.finish(outcome.digests).await.unwrap();
    let total = started.elapsed();
    assert!(results.iter().all(Result::is_ok));
    let p = &outcome.progress;
    println!(
        "1 GiB at cipher 3 over loopback: {:.2} s, {:.0} Mbit/s goodput ({:.2} s with commit); \
         retransmitted {} blocks, rate {} kbit/s, rtt {:.2} ms, receiver dropped {}",
        elapsed.as_secs_f64(),
        (1u64 << 30) as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
        total.as_secs_f64(),
        p.blocks_retransmitted,
        p.rate_kbps,
        p.round_trip_time_ms,
        b.stats().datagrams_dropped,
    );
    f.assert_received();
}
