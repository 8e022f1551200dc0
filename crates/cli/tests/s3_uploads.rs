//! Stale multipart uploads in S3 sandboxes, through real processes against the real S3
//! server: `slipstream s3 uploads` and `slipstream s3 cleanup` (dry run and for real) on a
//! state dir whose mapping was stored by a real server, the server's own reaper at start, and
//! `getServerInfo.fileCache` from the server's file cache.

mod common;
use common::{add_user, S3Env, TestServer};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn s3_command(state_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(common::binary())
        .arg("s3")
        .args(args)
        .arg("--persistent-state-dir")
        .arg(state_dir)
        .output()
        .expect("run slipstream s3");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn plant(s3: &S3Env, bucket: &str, key: &str) -> String {
    s3.raw_client()
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("start a multipart upload")
        .upload_id()
        .expect("an upload id")
        .to_string()
}

async fn pending(s3: &S3Env, bucket: &str) -> Vec<String> {
    let out = s3
        .raw_client()
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads");
    let mut keys: Vec<String> = out
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn s3_uploads_and_cleanup_commands_and_the_server_reaper() {
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("reap").await;
    let mut server = TestServer::start(&[
        "--stale-upload-age=0s",
        "--max-file-cache-size=512MiB",
        "--max-file-cache-upload-size=128MiB",
    ]);
    add_user(&server.state_dir, "admin", "adminpw", true);
    let admin = server.basic("admin", "adminpw");
    let info = admin
        .call("server.getServerInfo", Value::Null)
        .await
        .unwrap();
    assert_eq!(
        info["fileCache"],
        json!({"maxSize": 512u64 << 20, "maxUploadSize": 128u64 << 20,
               "maxDownloadSize": 64u64 << 20, "used": 0})
    );
    admin
        .call(
            "server.setSandboxMapping",
            json!(["alice", {"": s3.sandbox(&bucket, "/home/alice")}]),
        )
        .await
        .unwrap();

    let first = plant(&s3, &bucket, "home/alice/a.bin").await;
    plant(&s3, &bucket, "home/alice/deep/b.bin").await;
    plant(&s3, &bucket, "home/bob/c.bin").await;
    let dir = server.state_dir.clone();

    // uploads: every upload under alice's prefix, none of bob's.
    let (ok, out, err) = s3_command(&dir, &["uploads", "--user", "alice"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{bucket}/home/alice/a.bin"))
                && l.contains(&first)
                && l.trim_end().ends_with('s')),
        "{out}"
    );
    let (ok, out, err) = s3_command(&dir, &["uploads", "--user", "alice", "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let uploads = listed["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2, "{out}");
    assert!(uploads
        .iter()
        .all(|u| u["ageSeconds"].as_u64().unwrap() < 600));
    let (ok, out, _) = s3_command(&dir, &["uploads", "--user", "alice", "--older-than", "2h"]);
    assert!(ok && out.trim().is_empty(), "{out}");

    // cleanup: the default age (24 h) spares them; a dry run only shows them.
    let (ok, out, err) = s3_command(&dir, &["cleanup", "--user", "alice"]);
    assert!(ok && out.trim().is_empty(), "{out} {err}");
    let (ok, out, err) = s3_command(
        &dir,
        &[
            "cleanup",
            "--user",
            "alice",
            "--older-than",
            "0s",
            "--dry-run",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["wouldAbort"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(dry["aborted"], json!([]));
    assert_eq!(pending(&s3, &bucket).await.len(), 3);
    let (ok, out, err) = s3_command(&dir, &["cleanup", "--user", "alice", "--older-than", "0s"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("aborted ")).count(),
        2,
        "{out}"
    );
    assert_eq!(pending(&s3, &bucket).await, ["home/bob/c.bin"]);

    // A user without any S3 sandbox is told so.
    let (ok, _, err) = s3_command(&dir, &["uploads", "--user", "nobody"]);
    assert!(!ok && err.contains("no sandbox mapping"), "{err}");

    // The server's reaper runs at start over every stored S3 sandbox.
    plant(&s3, &bucket, "home/alice/late.bin").await;
    server.stop();
    server.launch();
    let mut left = pending(&s3, &bucket).await;
    for _ in 0..100 {
        if left == ["home/bob/c.bin"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = pending(&s3, &bucket).await;
    }
    assert_eq!(left, ["home/bob/c.bin"], "log:\n{}", server.log());
    assert!(server.log().contains("aborted stale S3 multipart uploads"));
}
