//! Transfers between two real servers over loopback UDP: File → File with a big file and a
//! tree of 2,000 small files, every overwrite mode, suspend/resume, cancel, a receiver or a
//! sender killed mid-way and restarted, cipher levels and the receiver's cipher floor.

mod common;

use common::{add_user, rpc_error, wait_transfer_end, wait_until, Site};
use serde_json::{json, Value};
use slipstream_client::ApiClient;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1 << 20;
/// The send rate of the big transfers, kbit/s.
const RATE_KBPS: u64 = 400_000;

/// The tests that move hundreds of MiB take turns: on a 2-core machine, several at once starve
/// each other's receivers.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A sending server with user alice, a receiving one with user carol, and alice's destination
/// for carol.
struct Pair {
    sender: Site,
    receiver: Site,
    alice: ApiClient,
    carol: ApiClient,
    destination: Value,
}

async fn pair(receiver_args: &[&str]) -> Pair {
    let sender = Site::start(&[]);
    let receiver = Site::start(receiver_args);
    add_user(&sender.server.state_dir, "alice", "pw-a", false);
    add_user(&receiver.server.state_dir, "carol", "pw-c", false);
    let alice = sender.server.basic("alice", "pw-a");
    let carol = receiver.server.basic("carol", "pw-c");
    let destination = alice
        .call(
            "send.createDestination",
            json!({"destinationAddress": format!("127.0.0.1:{}", receiver.server.api_port),
                   "user": "carol", "password": "pw-c"}),
        )
        .await
        .expect("createDestination")["destinationId"]
        .clone();
    Pair {
        sender,
        receiver,
        alice,
        carol,
        destination,
    }
}

impl Pair {
    async fn manifest(&self, mappings: Value) -> Value {
        let manifest = self
            .alice
            .call("send.createManifest", json!({ "mappings": mappings }))
            .await
            .expect("createManifest");
        assert_eq!(manifest["status"], "complete", "{manifest}");
        manifest["manifestId"].clone()
    }

    /// Creates a transfer of `manifest` with `options` (createTransfer params) and returns it.
    async fn transfer(&self, manifest: &Value, options: Value) -> Value {
        let mut params = json!({"destinationId": self.destination, "manifestId": manifest});
        for (k, v) in options.as_object().expect("options object") {
            params[k] = v.clone();
        }
        self.alice
            .call("send.createTransfer", params)
            .await
            .expect("createTransfer")
    }

    async fn get(&self, id: &Value) -> Value {
        self.alice
            .call("send.getTransfer", json!({ "transferId": id }))
            .await
            .expect("getTransfer")
    }

    /// Waits until the transfer ended; on a timeout, fails with both servers' logs.
    async fn wait_end(&self, id: &Value, seconds: u64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let t = self.get(id).await;
            if matches!(
                t["status"].as_str(),
                Some("complete" | "error" | "cancelled")
            ) {
                return t;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "transfer {id} did not end within {seconds} s: {t}\n--- sender log:\n{}\n--- receiver log:\n{}",
                    tail(&self.sender.server.log()),
                    tail(&self.receiver.server.log())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `bytes` are acknowledged.
    async fn wait_acked(&self, id: &Value, bytes: u64) -> Value {
        wait_until(
            "bytes to be acknowledged",
            Duration::from_secs(60),
            || async {
                let t = self.get(id).await;
                assert_ne!(t["status"], "error", "{t}");
                (t["bytesAcked"].as_u64().unwrap_or(0) >= bytes).then_some(t)
            },
        )
        .await
    }
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Writes `size` pseudo-random bytes (xorshift from `seed`).
fn write_pattern(path: &Path, size: usize, seed: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = seed | 1;
    let mut chunk = vec![0u8; MIB.min(size.max(1))];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    file.flush().unwrap();
}

/// True if both files have the same bytes.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ra, mut rb) = (
        std::io::BufReader::with_capacity(4 * MIB, fa),
        std::io::BufReader::with_capacity(4 * MIB, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; 4 * MIB], vec![0u8; 4 * MIB]);
    loop {
        let n = ra.read(&mut ba).unwrap();
        if n == 0 {
            return rb.read(&mut bb).unwrap() == 0;
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Every partfile below `dir`.
fn partfiles(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".slipstream-part") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn big_file_and_a_tree_of_2000_files() {
    let _turn = HEAVY.lock().await;
    let p = pair(&[]).await;
    write_pattern(&p.sender.path("big.bin"), 200 * MIB, 7);
    for i in 0..2000 {
        let path = p.sender.path(&format!("tree/d{:02}/f{i:04}.txt", i % 40));
        write_pattern(&path, (i * 37) % 5000, i as u64 + 1);
    }
    std::fs::create_dir_all(p.sender.path("tree/empty/inner-empty")).unwrap();
    std::fs::create_dir_all(p.sender.path("tree/also-empty")).unwrap();
    let tool = p.sender.path("tree/d00/f0000.txt");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

    let manifest = p
        .manifest(json!({"big.bin": "/big.bin", "tree": "/tree"}))
        .await;
    // A cap keeps a loaded 2-core test machine from overrunning the receiver.
    let created = p
        .transfer(
            &manifest,
            json!({"destinationPath": "/incoming", "sendRate": RATE_KBPS}),
        )
        .await;
    assert_eq!(created["totalFiles"], 2001);
    assert_eq!(created["overwriteMode"], 4);
    assert_eq!(created["minCipher"], 3);
    assert!(created["requestTime"].as_i64().unwrap() > 1_600_000_000_000_000);
    let id = created["transferId"].clone();
    let done = p.wait_end(&id, 400).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["filesComplete"], 2001);
    assert_eq!(done["bytesAcked"], done["totalBytes"]);
    assert!(done["bytesSent"].as_u64().unwrap() >= 200 * MIB as u64);
    assert!(done["endTime"].as_i64() >= done["startTime"].as_i64());
    assert_eq!(done["bytesResumed"], 0);

    let out = p.receiver.path("incoming");
    assert!(same_bytes(&p.sender.path("big.bin"), &out.join("big.bin")));
    for i in (0..2000).step_by(1) {
        let rel = format!("tree/d{:02}/f{i:04}.txt", i % 40);
        assert!(
            same_bytes(&p.sender.path(&rel), &out.join(&rel)),
            "{rel} differs"
        );
    }
    assert!(out.join("tree/empty/inner-empty").is_dir());
    assert!(out.join("tree/also-empty").is_dir());
    let mode = std::fs::metadata(out.join("tree/d00/f0000.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o100, 0, "executable bit kept");
    let mode = std::fs::metadata(out.join("tree/d01/f0001.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0);
    assert!(partfiles(p.receiver.sandbox.path()).is_empty());

    // The receiving side's view.
    let incoming = p
        .carol
        .call("recv.getTransfers", Value::Null)
        .await
        .unwrap();
    let incoming = &incoming.as_array().unwrap()[0];
    assert_eq!(incoming["status"], "complete", "{incoming}");
    assert_eq!(incoming["owner"], "carol");
    assert_eq!(incoming["sourceTransferId"], id);
    assert_eq!(incoming["sourceIP"], "127.0.0.1");
    assert_eq!(incoming["bytesRecv"], incoming["totalSize"]);
    let sources = p.carol.call("recv.getSources", Value::Null).await.unwrap();
    assert_eq!(sources[0]["completeTransferCount"], 1, "{sources}");
    assert_eq!(sources[0]["sourceIP"], "127.0.0.1");
}

#[tokio::test]
async fn every_overwrite_mode_against_an_existing_target() {
    let p = pair(&[]).await;
    write_pattern(&p.sender.path("new.txt"), 100_000, 3);
    let manifest = p.manifest(json!({"f.txt": "/new.txt"})).await;
    let old = b"the old content".to_vec();
    let mut ids = Vec::new();
    for mode in 0..=5 {
        let dir = p.receiver.path(&format!("m{mode}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f.txt"), &old).unwrap();
        let t = p
            .transfer(
                &manifest,
                json!({"destinationPath": format!("m{mode}"), "overwriteMode": mode}),
            )
            .await;
        ids.push(t["transferId"].clone());
    }
    for (mode, id) in ids.iter().enumerate() {
        let done = p.wait_end(id, 60).await;
        let dir = p.receiver.path(&format!("m{mode}"));
        let target = dir.join("f.txt");
        match mode {
            0 | 2 | 3 => {
                assert_eq!(done["status"], "error", "mode {mode}: {done}");
                let message = done["errorMessage"].as_str().unwrap();
                assert!(message.contains("f.txt"), "mode {mode}: {message}");
                assert_eq!(done["bytesSent"], 0, "mode {mode}");
                assert_eq!(std::fs::read(&target).unwrap(), old, "mode {mode}");
            }
            _ => {
                assert_eq!(done["status"], "complete", "mode {mode}: {done}");
                assert!(
                    same_bytes(&p.sender.path("new.txt"), &target),
                    "mode {mode}"
                );
            }
        }
        if mode == 5 {
            assert_eq!(std::fs::read(dir.join("f.txt.bak")).unwrap(), old);
        }
        assert!(partfiles(&dir).is_empty(), "mode {mode}: partfile left");
    }
    // Mode 2 replaces a target of the same size.
    std::fs::create_dir_all(p.receiver.path("same")).unwrap();
    std::fs::write(p.receiver.path("same/f.txt"), vec![b'o'; 100_000]).unwrap();
    let t = p
        .transfer(
            &manifest,
            json!({"destinationPath": "same", "overwriteMode": 2}),
        )
        .await;
    let done = p.wait_end(&t["transferId"], 60).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert!(same_bytes(
        &p.sender.path("new.txt"),
        &p.receiver.path("same/f.txt")
    ));
    // The receiver shows the refused ones as errors.
    let incoming = p
        .carol
        .call("recv.getTransfers", Value::Null)
        .await
        .unwrap();
    let errors = incoming
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "error")
        .count();
    assert_eq!(errors, 3, "{incoming}");
}

#[tokio::test]
async fn suspend_resume_then_cancel_leaves_nothing() {
    let _turn = HEAVY.lock().await;
    let p = pair(&[]).await;
    write_pattern(&p.sender.path("mid.bin"), 48 * MIB, 11);
    let manifest = p.manifest(json!({"mid.bin": "/mid.bin"})).await;
    // 50 Mbit/s: a few seconds for the whole file, time enough to suspend it mid-way.
    let t = p
        .transfer(
            &manifest,
            json!({"destinationPath": "s", "sendRate": 50_000, "checkpointFrequencySeconds": 1}),
        )
        .await;
    let id = t["transferId"].clone();
    p.wait_acked(&id, 4 * MIB as u64).await;
    p.alice
        .call("send.suspendTransfer", json!([id]))
        .await
        .unwrap();
    let suspended = wait_until("suspended", Duration::from_secs(20), || async {
        let t = p.get(&id).await;
        (t["status"] == "suspended").then_some(t)
    })
    .await;
    let acked = suspended["bytesAcked"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = p.get(&id).await;
    assert_eq!(still["status"], "suspended");
    assert!(still["bytesSent"].as_u64() <= suspended["bytesSent"].as_u64().map(|b| b + 1));
    assert!(!p.receiver.path("s/mid.bin").exists());
    // Live rate change, then resume to the end.
    p.alice
        .call(
            "send.setSendRate",
            json!({"transferId": id, "kbps": 400_000}),
        )
        .await
        .unwrap();
    p.alice
        .call("send.resumeTransfer", json!([id]))
        .await
        .unwrap();
    let done = p.wait_end(&id, 120).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["sendRate"], 400_000);
    assert!(acked > 0);
    assert!(same_bytes(
        &p.sender.path("mid.bin"),
        &p.receiver.path("s/mid.bin")
    ));

    // Cancel mid-way: nothing is left on the receiver.
    let t = p
        .transfer(
            &manifest,
            json!({"destinationPath": "c", "sendRate": 50_000, "checkpointFrequencySeconds": 1}),
        )
        .await;
    let id = t["transferId"].clone();
    p.wait_acked(&id, 4 * MIB as u64).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    p.alice
        .call("send.cancelTransfer", json!([id]))
        .await
        .unwrap();
    let done = p.wait_end(&id, 30).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    wait_until(
        "the receiver to discard",
        Duration::from_secs(20),
        || async {
            let incoming = p
                .carol
                .call("recv.getTransfers", Value::Null)
                .await
                .unwrap();
            incoming
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["destinationPath"] == "c" && r["status"] == "error")
                .then_some(())
        },
    )
    .await;
    assert!(partfiles(p.receiver.sandbox.path()).is_empty());
    assert!(!p.receiver.path("c/mid.bin").exists());
    // Control calls on an ended transfer are conflicts; delete forgets it.
    let error = rpc_error(p.alice.call("send.suspendTransfer", json!([id])).await);
    assert_eq!(error.code, -32011);
    p.alice
        .call("send.deleteTransfer", json!([id]))
        .await
        .unwrap();
    assert_eq!(
        rpc_error(p.alice.call("send.getTransfer", json!([id])).await).code,
        -32004
    );
}

/// A resume larger than the protocol's 16 MiB initial flow window (proto 60c98ed).
#[tokio::test]
async fn receiver_killed_mid_way_resumes_after_restart() {
    let _turn = HEAVY.lock().await;
    let mut p = pair(&[]).await;
    write_pattern(&p.sender.path("big.bin"), 200 * MIB, 21);
    let manifest = p.manifest(json!({"big.bin": "/big.bin"})).await;
    // 200 Mbit/s: about 8 s for the whole file.
    let t = p
        .transfer(
            &manifest,
            json!({"destinationPath": "k", "sendRate": 200_000, "checkpointFrequencySeconds": 1}),
        )
        .await;
    let id = t["transferId"].clone();
    p.wait_acked(&id, 30 * MIB as u64).await;
    // Let a checkpoint cover what arrived, then kill the receiver without a clean shutdown.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.receiver.server.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.receiver.server.launch();
    let done = p.wait_end(&id, 180).await;
    assert_eq!(
        done["status"],
        "complete",
        "{done}\n--- sender log:\n{}\n--- receiver log:\n{}",
        tail(&p.sender.server.log()),
        tail(&p.receiver.server.log())
    );
    let resumed = done["bytesResumed"].as_u64().unwrap();
    assert!(resumed > 0, "{done}");
    assert!(same_bytes(
        &p.sender.path("big.bin"),
        &p.receiver.path("k/big.bin")
    ));
    assert!(partfiles(p.receiver.sandbox.path()).is_empty());
}

/// The sending server killed with SIGKILL mid-way: at its restart the transfer is queued
/// again, renegotiates with the same id, and continues from the receiver's checkpoints; the
/// receiver keeps one reception for it.
#[tokio::test]
async fn sender_killed_mid_way_resumes_after_restart() {
    let _turn = HEAVY.lock().await;
    let mut p = pair(&[]).await;
    write_pattern(&p.sender.path("big.bin"), 200 * MIB, 23);
    let manifest = p.manifest(json!({"big.bin": "/big.bin"})).await;
    // 200 Mbit/s: about 8 s for the whole file; a checkpoint every second.
    let (rate_kbps, checkpoint_s) = (200_000u64, 1u64);
    let t = p
        .transfer(
            &manifest,
            json!({"destinationPath": "ks", "sendRate": rate_kbps,
                   "checkpointFrequencySeconds": checkpoint_s}),
        )
        .await;
    let id = t["transferId"].clone();
    let before = p.wait_acked(&id, 50 * MIB as u64).await;
    let acked_before = before["bytesAcked"].as_u64().unwrap();
    assert!(acked_before < 150 * MIB as u64, "not mid-way: {before}");
    p.sender.server.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.sender.server.launch();
    let done = p.wait_end(&id, 180).await;
    assert_eq!(
        done["status"],
        "complete",
        "{done}\n--- sender log:\n{}\n--- receiver log:\n{}",
        tail(&p.sender.server.log()),
        tail(&p.receiver.server.log())
    );
    assert!(same_bytes(
        &p.sender.path("big.bin"),
        &p.receiver.path("ks/big.bin")
    ));
    assert!(partfiles(p.receiver.sandbox.path()).is_empty());
    // What the receiver had when the sender came back was not sent again: of what was
    // acknowledged before the kill, at most one checkpoint interval at the send rate plus what
    // was in flight (proto's 16 MiB initial window) is missing from it.
    let total = 200 * MIB as u64;
    let resumed = done["bytesResumed"].as_u64().unwrap();
    let bound = rate_kbps * 1000 / 8 * checkpoint_s + 16 * MIB as u64;
    assert!(resumed > 0, "{done}");
    assert!(
        acked_before.saturating_sub(resumed) <= bound,
        "acknowledged before the kill {acked_before}, resumed {resumed}, bound {bound}: {done}"
    );
    // bytesSent adds up both runs (the killed one's counters are saved every second): its
    // first transmissions are the whole file plus what was sent twice, within the same bound.
    let first_sends = done["bytesSent"].as_u64().unwrap().saturating_sub(
        done["blocksRetransmitted"].as_u64().unwrap() * done["blockSize"].as_u64().unwrap(),
    );
    assert!(
        first_sends.abs_diff(total) <= bound,
        "first transmissions {first_sends} of {total} bytes, bound {bound}: {done}"
    );
    // Distinct blocks do not add up over the runs.
    assert_eq!(done["blocksAcked"], done["totalBlocks"], "{done}");
    assert_eq!(done["blocksSent"], done["totalBlocks"], "{done}");
    // One reception on the receiver, complete, with the sender's transfer id.
    let incoming = p
        .carol
        .call("recv.getTransfers", Value::Null)
        .await
        .unwrap();
    let incoming = incoming.as_array().unwrap();
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    assert_eq!(incoming[0]["status"], "complete", "{incoming:?}");
    assert_eq!(incoming[0]["destinationPath"], "ks");
    assert_eq!(incoming[0]["sourceTransferId"], done["transferId"]);
    assert_eq!(incoming[0]["bytesRecv"], total);
}

#[tokio::test]
async fn cipher_levels_and_the_receivers_floor() {
    let p = pair(&[]).await;
    write_pattern(&p.sender.path("c.bin"), 3 * MIB + 17, 5);
    let manifest = p.manifest(json!({"c.bin": "/c.bin"})).await;
    for level in [0, 3] {
        let t = p
            .transfer(
                &manifest,
                json!({"destinationPath": format!("c{level}"), "minCipher": level}),
            )
            .await;
        let done = p.wait_end(&t["transferId"], 60).await;
        assert_eq!(done["status"], "complete", "cipher {level}: {done}");
        assert!(same_bytes(
            &p.sender.path("c.bin"),
            &p.receiver.path(&format!("c{level}/c.bin"))
        ));
    }

    // A receiver with --min-cipher 2 refuses minCipher 1, naming both levels.
    let strict = Site::start(&["--min-cipher=2"]);
    add_user(&strict.server.state_dir, "dave", "pw-d", false);
    let destination = p
        .alice
        .call(
            "send.createDestination",
            json!({"destinationAddress": format!("127.0.0.1:{}", strict.server.api_port),
                   "user": "dave", "password": "pw-d"}),
        )
        .await
        .unwrap();
    let t = p
        .alice
        .call(
            "send.createTransfer",
            json!({"destinationId": destination["destinationId"], "manifestId": manifest,
                   "minCipher": 1}),
        )
        .await
        .unwrap();
    let done = wait_transfer_end(&p.alice, &t["transferId"], Duration::from_secs(30)).await;
    assert_eq!(done["status"], "error", "{done}");
    let message = done["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("minCipher 1") && message.contains("--min-cipher 2"),
        "{message}"
    );
    assert_eq!(done["bytesSent"], 0);
    assert!(!strict.path("c.bin").exists());
}
