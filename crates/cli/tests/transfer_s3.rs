//! Transfers between two real servers over loopback UDP with the real S3 server on either end:
//! File → S3 and S3 → File, each with one 200 MiB file and a tree of 2,000 small files with
//! empty folders; and a cancelled upload into S3 that leaves no object and no multipart upload.

mod common;

use common::{add_user, wait_transfer_end, wait_until, S3Env, Site};
use serde_json::{json, Value};
use slipstream_client::ApiClient;
use std::path::Path;
use std::time::Duration;

const BIG: usize = 200 << 20;
const SMALL_FILES: usize = 2000;

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

/// A sending and a receiving server; `who` on the sender has a destination for `who` on the
/// receiver. Both sites start with File sandboxes; tests map one side onto S3.
struct Pair {
    sender: Site,
    receiver: Site,
    send_admin: ApiClient,
    recv_admin: ApiClient,
    user: ApiClient,
    destination: Value,
}

async fn pair() -> Pair {
    let sender = Site::start(&[]);
    let receiver = Site::start(&[]);
    for site in [&sender, &receiver] {
        add_user(&site.server.state_dir, "admin", "pw-admin", true);
        add_user(&site.server.state_dir, "dana", "pw-dana", false);
    }
    let user = sender.server.basic("dana", "pw-dana");
    let destination = user
        .call(
            "send.createDestination",
            json!({"destinationAddress": format!("127.0.0.1:{}", receiver.server.api_port),
                   "user": "dana", "password": "pw-dana"}),
        )
        .await
        .expect("createDestination")["destinationId"]
        .clone();
    Pair {
        send_admin: sender.server.basic("admin", "pw-admin"),
        recv_admin: receiver.server.basic("admin", "pw-admin"),
        sender,
        receiver,
        user,
        destination,
    }
}

impl Pair {
    async fn send(&self, mappings: Value, options: Value) -> Value {
        let manifest = self
            .user
            .call("send.createManifest", json!({ "mappings": mappings }))
            .await
            .expect("createManifest");
        assert_eq!(manifest["status"], "complete", "{manifest}");
        let mut params =
            json!({"destinationId": self.destination, "manifestId": manifest["manifestId"]});
        for (k, v) in options.as_object().expect("options") {
            params[k] = v.clone();
        }
        self.user
            .call("send.createTransfer", params)
            .await
            .expect("createTransfer")
    }

    fn logs(&self) -> String {
        format!(
            "--- sender log:\n{}\n--- receiver log:\n{}",
            self.sender.server.log(),
            self.receiver.server.log()
        )
    }
}

async fn get_object(s3: &S3Env, bucket: &str, key: &str) -> Vec<u8> {
    let object = s3
        .raw_client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    object
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
        .to_vec()
}

async fn all_keys(s3: &S3Env, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .raw_client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return keys;
        }
    }
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("tree/empty/deeper")).unwrap();
    for i in 0..SMALL_FILES {
        let dir = root.join(format!("tree/d{}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            pattern(100 + i % 300, i as u64),
        )
        .unwrap();
    }
    std::fs::write(root.join("big.bin"), pattern(BIG, 7)).unwrap();
}

fn s3_sandbox(s3: &S3Env, bucket: &str, path: &str) -> Value {
    json!({"": s3.sandbox(bucket, path)})
}

#[tokio::test]
async fn file_to_s3_big_file_and_a_tree() {
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("xfer-to").await;
    let pair = pair().await;
    pair.recv_admin
        .call(
            "server.setSandboxMapping",
            json!(["dana", s3_sandbox(&s3, &bucket, "/inbox")]),
        )
        .await
        .unwrap();
    write_tree(pair.sender.sandbox.path());
    let transfer = pair
        .send(
            json!({"big.bin": "/big.bin", "tree": "/tree"}),
            json!({"destinationPath": "in"}),
        )
        .await;
    let done = wait_transfer_end(
        &pair.user,
        &transfer["transferId"],
        Duration::from_secs(400),
    )
    .await;
    assert_eq!(done["status"], "complete", "{done}\n{}", pair.logs());
    assert_eq!(done["totalFiles"], json!(SMALL_FILES + 1));

    assert!(
        get_object(&s3, &bucket, "inbox/in/big.bin").await == pattern(BIG, 7),
        "big.bin differs"
    );
    let keys = all_keys(&s3, &bucket, "inbox/in/tree/").await;
    let files: Vec<_> = keys.iter().filter(|k| k.ends_with(".txt")).collect();
    assert_eq!(files.len(), SMALL_FILES);
    assert!(
        keys.contains(&"inbox/in/tree/empty/deeper/".to_string()),
        "empty folder marker"
    );
    for i in [0usize, 999, 1999] {
        let key = format!("inbox/in/tree/d{}/f{i}.txt", i % 20);
        assert_eq!(
            get_object(&s3, &bucket, &key).await,
            pattern(100 + i % 300, i as u64),
            "{key}"
        );
    }
    let uploads = s3
        .raw_client()
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no multipart upload is left");
}

#[tokio::test]
async fn s3_to_file_big_file_and_a_tree() {
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("xfer-from").await;
    let raw = s3.raw_client();
    // The source objects, planted with a plain S3 client.
    raw.put_object()
        .bucket(&bucket)
        .key("src/big.bin")
        .body(pattern(BIG, 11).into())
        .send()
        .await
        .unwrap();
    let mut puts = tokio::task::JoinSet::new();
    for chunk in 0..8usize {
        let raw = raw.clone();
        let bucket = bucket.clone();
        puts.spawn(async move {
            for i in (chunk..SMALL_FILES).step_by(8) {
                raw.put_object()
                    .bucket(&bucket)
                    .key(format!("src/tree/d{}/f{i}.txt", i % 20))
                    .body(pattern(50 + i % 200, i as u64).into())
                    .send()
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(result) = puts.join_next().await {
        result.unwrap();
    }
    raw.put_object()
        .bucket(&bucket)
        .key("src/tree/empty/")
        .body(Vec::new().into())
        .send()
        .await
        .unwrap();

    let pair = pair().await;
    pair.send_admin
        .call(
            "server.setSandboxMapping",
            json!(["dana", s3_sandbox(&s3, &bucket, "/src")]),
        )
        .await
        .unwrap();
    let transfer = pair
        .send(
            json!({"big.bin": "/big.bin", "tree": "/tree"}),
            json!({"destinationPath": "from-s3"}),
        )
        .await;
    let done = wait_transfer_end(
        &pair.user,
        &transfer["transferId"],
        Duration::from_secs(400),
    )
    .await;
    assert_eq!(done["status"], "complete", "{done}\n{}", pair.logs());
    let out = pair.receiver.path("from-s3");
    assert!(
        std::fs::read(out.join("big.bin")).unwrap() == pattern(BIG, 11),
        "big.bin differs"
    );
    for i in 0..SMALL_FILES {
        let file = out.join(format!("tree/d{}/f{i}.txt", i % 20));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            pattern(50 + i % 200, i as u64),
            "{}",
            file.display()
        );
    }
    assert!(out.join("tree/empty").is_dir(), "the empty folder travels");
}

#[tokio::test]
async fn cancelled_upload_into_s3_leaves_nothing() {
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("xfer-cancel").await;
    let pair = pair().await;
    pair.recv_admin
        .call(
            "server.setSandboxMapping",
            json!(["dana", s3_sandbox(&s3, &bucket, "/")]),
        )
        .await
        .unwrap();
    std::fs::write(pair.sender.path("slow.bin"), pattern(64 << 20, 3)).unwrap();
    let transfer = pair
        .send(
            json!({"slow.bin": "/slow.bin"}),
            json!({"sendRate": 40_000}),
        )
        .await;
    let id = transfer["transferId"].clone();
    // Cancel once some parts have gone up.
    wait_until(
        "a quarter of the file to be acknowledged",
        Duration::from_secs(120),
        || async {
            let t = pair
                .user
                .call("send.getTransfer", json!([id.clone()]))
                .await
                .unwrap();
            (t["bytesAcked"].as_u64().unwrap_or(0) > 16 << 20).then_some(())
        },
    )
    .await;
    pair.user
        .call("send.cancelTransfer", json!([id.clone()]))
        .await
        .unwrap();
    let done = wait_transfer_end(&pair.user, &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    wait_until(
        "the multipart upload to be aborted",
        Duration::from_secs(30),
        || async {
            let uploads = s3
                .raw_client()
                .list_multipart_uploads()
                .bucket(&bucket)
                .send()
                .await
                .unwrap();
            uploads.uploads().is_empty().then_some(())
        },
    )
    .await;
    assert!(
        all_keys(&s3, &bucket, "slow.bin").await.is_empty(),
        "no object under the final name"
    );
}
