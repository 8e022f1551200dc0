//! The receiving server's upkeep, between two real servers over loopback UDP: a reception
//! whose sender is killed and never comes back expires (its partfiles, or its S3 multipart
//! upload, are removed and it ends in error; a sender that returns later is told it expired),
//! and a tree of 3,000 files into a receiver allowed only 256 open files arrives intact.

mod common;

use common::{add_user, wait_until, S3Env, Site};
use serde_json::{json, Value};
use slipstream_client::ApiClient;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1 << 20;
/// The receivers' expiry in these tests (`--reception-expiry-seconds`).
const EXPIRY_SECONDS: u64 = 4;

/// The tests take turns: on a 2-core machine two transfers at once starve each other.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A sending server with user alice, a receiving one with user carol (and a superuser admin),
/// and alice's destination for carol.
struct Pair {
    sender: Site,
    receiver: Site,
    alice: ApiClient,
    carol: ApiClient,
    admin: ApiClient,
    destination: Value,
}

async fn pair(receiver: Site) -> Pair {
    let sender = Site::start(&[]);
    add_user(&sender.server.state_dir, "alice", "pw-a", false);
    add_user(&receiver.server.state_dir, "carol", "pw-c", false);
    add_user(&receiver.server.state_dir, "admin", "pw-admin", true);
    let alice = sender.server.basic("alice", "pw-a");
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
        carol: receiver.server.basic("carol", "pw-c"),
        admin: receiver.server.basic("admin", "pw-admin"),
        sender,
        receiver,
        alice,
        destination,
    }
}

impl Pair {
    /// Makes a manifest of `mappings` and a transfer of it with `options`; returns its id.
    async fn send(&self, mappings: Value, options: Value) -> Value {
        let manifest = self
            .alice
            .call("send.createManifest", json!({ "mappings": mappings }))
            .await
            .expect("createManifest");
        assert_eq!(manifest["status"], "complete", "{manifest}");
        let mut params =
            json!({"destinationId": self.destination, "manifestId": manifest["manifestId"]});
        for (k, v) in options.as_object().expect("options object") {
            params[k] = v.clone();
        }
        self.alice
            .call("send.createTransfer", params)
            .await
            .expect("createTransfer")["transferId"]
            .clone()
    }

    async fn get(&self, id: &Value) -> Value {
        self.alice
            .call("send.getTransfer", json!({ "transferId": id }))
            .await
            .expect("getTransfer")
    }

    fn logs(&self) -> String {
        format!(
            "--- sender log:\n{}\n--- receiver log:\n{}",
            tail(&self.sender.server.log()),
            tail(&self.receiver.server.log())
        )
    }

    /// Waits until the sending transfer ended; on a timeout, fails with both logs.
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
            assert!(
                std::time::Instant::now() < deadline,
                "transfer {id} did not end within {seconds} s: {t}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `bytes` are acknowledged.
    async fn wait_acked(&self, id: &Value, bytes: u64) {
        wait_until(
            "bytes to be acknowledged",
            Duration::from_secs(120),
            || async {
                let t = self.get(id).await;
                assert_ne!(t["status"], "error", "{t}");
                (t["bytesAcked"].as_u64().unwrap_or(0) >= bytes).then_some(())
            },
        )
        .await;
    }

    /// carol's only reception, once its status is `status` (fails after 60 s with the logs).
    async fn reception_when(&self, status: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let all = self
                .carol
                .call("recv.getTransfers", Value::Null)
                .await
                .expect("recv.getTransfers");
            let reception = all[0].clone();
            if reception["status"] == status {
                return reception;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reception is not {status} after 60 s: {reception}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The last lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Deterministic content: file `seed`'s bytes.
fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Every file below `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
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
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn partfiles(dir: &Path) -> Vec<String> {
    files_ending(dir, ".slipstream-part")
}

/// Ten small files (sent first, so they complete and their sinks are closed) and a 48 MiB one
/// in a folder after them, still arriving when the sender dies.
fn write_abandoned_set(root: &Path) {
    for i in 0..10 {
        write(
            &root.join(format!("set/f{i}.bin")),
            &pattern(100_000, i + 1),
        );
    }
    write(&root.join("set/z/big.bin"), &pattern(48 * MIB, 99));
}

/// The reception expired with the expected message, and the sender, started again, is told
/// so: its transfer fails naming the expiry.
async fn assert_expired_and_sender_told(p: &mut Pair, id: &Value) {
    let reception = p.reception_when("error").await;
    assert_eq!(
        reception["errorMessage"],
        format!("expired: the sender did not come back within {EXPIRY_SECONDS} s"),
        "{reception}"
    );
    assert!(reception["endTime"].as_i64().is_some(), "{reception}");
    p.sender.server.launch();
    let done = p.wait_end(id, 120).await;
    assert_eq!(done["status"], "error", "{done}");
    let message = done["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("expired") && message.contains("create a new transfer"),
        "{message}"
    );
    assert!(
        message.contains(&format!("incoming transfer {}", reception["transferId"])),
        "the message names the reception: {message}"
    );
}

#[tokio::test]
async fn abandoned_reception_expires_and_leaves_no_partfile() {
    let _turn = TURN.lock().await;
    let expiry = format!("--reception-expiry-seconds={EXPIRY_SECONDS}");
    let mut p = pair(Site::start(&[&expiry])).await;
    write_abandoned_set(p.sender.sandbox.path());
    let id = p
        .send(
            json!({"set": "/set"}),
            json!({"destinationPath": "in", "sendRate": 20_000,
                   "checkpointFrequencySeconds": 1}),
        )
        .await;
    p.wait_acked(&id, 8 * MIB as u64).await;
    let before = partfiles(p.receiver.sandbox.path());
    assert!(
        before.iter().any(|f| f.contains(".big.bin."))
            && before.iter().any(|f| f.contains(".f0.bin.")),
        "partfiles of the small files and the big one: {before:?}"
    );
    let receiving = p.reception_when("receiving").await;
    assert!(receiving["errorMessage"].is_null(), "{receiving}");

    // The sender dies and does not come back within the expiry.
    p.sender.server.kill9();
    let reception = p.reception_when("error").await;
    assert!(
        partfiles(p.receiver.sandbox.path()).is_empty(),
        "partfiles left: {:?}\n{}",
        partfiles(p.receiver.sandbox.path()),
        p.logs()
    );
    assert!(files_ending(p.receiver.sandbox.path(), ".bin").is_empty());
    assert!(
        reception["bytesRecv"].as_u64().unwrap_or(0) >= 8 * MIB as u64,
        "{reception}"
    );
    assert_expired_and_sender_told(&mut p, &id).await;
    assert!(partfiles(p.receiver.sandbox.path()).is_empty());
    assert!(p
        .receiver
        .server
        .log()
        .contains("incoming transfer expired"));
}

#[tokio::test]
async fn abandoned_reception_into_s3_expires_and_leaves_no_upload() {
    let _turn = TURN.lock().await;
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("recv-expiry").await;
    let expiry = format!("--reception-expiry-seconds={EXPIRY_SECONDS}");
    let mut p = pair(Site::start(&[&expiry])).await;
    p.admin
        .call(
            "server.setSandboxMapping",
            json!(["carol", {"": s3.sandbox(&bucket, "/inbox")}]),
        )
        .await
        .expect("map carol onto S3");
    write_abandoned_set(p.sender.sandbox.path());
    let id = p
        .send(
            json!({"set": "/set"}),
            json!({"destinationPath": "in", "sendRate": 20_000,
                   "checkpointFrequencySeconds": 1}),
        )
        .await;
    let uploads = || async {
        s3.raw_client()
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .expect("ListMultipartUploads")
            .uploads()
            .len()
    };
    // Parts of big.bin (8 MiB each) have gone up.
    p.wait_acked(&id, 20 * MIB as u64).await;
    assert_eq!(
        uploads().await,
        1,
        "big.bin's multipart upload is under way"
    );

    p.sender.server.kill9();
    p.reception_when("error").await;
    assert_eq!(
        uploads().await,
        0,
        "no multipart upload is left\n{}",
        p.logs()
    );
    let objects = s3
        .raw_client()
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("inbox/in/")
        .send()
        .await
        .expect("ListObjectsV2");
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.iter().all(|k| k.ends_with('/')),
        "only folder markers, no object: {keys:?}"
    );
    assert_expired_and_sender_told(&mut p, &id).await;
    assert_eq!(uploads().await, 0);
}

#[tokio::test]
async fn three_thousand_files_into_a_receiver_with_256_open_files() {
    let _turn = TURN.lock().await;
    let receiver = Site::start_with_nofile(256, &[]);
    assert_eq!(receiver.server.nofile_limit(), Some((256, 256)));
    let p = pair(receiver).await;
    let count = 3000;
    let rel = |i: usize| format!("many/d{:02}/f{i:04}.bin", i % 30);
    for i in 0..count {
        // Some empty files, most a few KiB, every 100th 200 KiB.
        let size = match i {
            _ if i % 97 == 0 => 0,
            _ if i % 100 == 1 => 200 << 10,
            _ => (i * 131) % 9000 + 1,
        };
        write(&p.sender.path(&rel(i)), &pattern(size, i as u64));
    }
    let id = p
        .send(
            json!({"many": "/many"}),
            json!({"destinationPath": "in", "sendRate": 200_000}),
        )
        .await;
    let done = p.wait_end(&id, 400).await;
    assert_eq!(done["status"], "complete", "{done}\n{}", p.logs());
    assert_eq!(done["filesComplete"], count);
    let out = p.receiver.path("in");
    for i in 0..count {
        let name = rel(i);
        let sent = std::fs::read(p.sender.path(&name)).unwrap();
        let got = std::fs::read(out.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(sent == got, "{name} differs");
    }
    assert!(partfiles(p.receiver.sandbox.path()).is_empty());
    let log = p.receiver.server.log();
    assert!(!log.contains("Too many open files"), "{}", tail(&log));
}
