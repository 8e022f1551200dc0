//! The transfer engine's control plane against real servers: manifests (expansion, paging,
//! ownership) and destinations (login at once, certificate pinning, secrets never shown).

mod common;

use common::{add_user, rpc_error, Site};
use serde_json::{json, Value};
use slipstream_client::Trust;
use std::time::{Duration, Instant};

#[tokio::test]
async fn manifests_expand_folders_and_belong_to_their_owner() {
    let site = Site::start(&[]);
    add_user(&site.server.state_dir, "alice", "pw-a", false);
    add_user(&site.server.state_dir, "bob", "pw-b", false);
    add_user(&site.server.state_dir, "root", "pw-r", true);
    std::fs::create_dir_all(site.path("tree/sub/empty")).unwrap();
    for i in 0..25 {
        std::fs::write(site.path(&format!("tree/f{i:02}")), vec![b'x'; i]).unwrap();
    }
    std::fs::write(site.path("tree/sub/run.sh"), b"#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        site.path("tree/sub/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let alice = site.server.basic("alice", "pw-a");
    let manifest = alice
        .call(
            "send.createManifest",
            json!({"mappings": {"out": "/tree", "one.txt": "/tree/f03"}}),
        )
        .await
        .unwrap();
    assert_eq!(manifest["status"], "complete", "{manifest}");
    assert_eq!(manifest["processing"], false);
    assert_eq!(manifest["owner"], "alice");
    assert_eq!(manifest["totalFiles"], 27);
    assert_eq!(manifest["totalSize"], (0..25).sum::<u64>() + 10 + 3);
    let id = manifest["manifestId"].clone();

    // Paging through the files; the empty folder is listed, the executable bit kept.
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let page = alice
            .call(
                "send.getManifestFiles",
                json!({"manifestId": id, "offset": offset, "limit": 10}),
            )
            .await
            .unwrap();
        let entries = page["fileMappings"].as_array().unwrap().clone();
        if entries.is_empty() {
            break;
        }
        offset += entries.len();
        all.extend(entries);
    }
    assert_eq!(all.len(), 28);
    let by_dest = |d: &str| all.iter().find(|e| e["destPath"] == d).cloned().unwrap();
    assert_eq!(by_dest("out/sub/empty")["isEmptyDir"], true);
    assert_eq!(by_dest("out/sub/run.sh")["executable"], true);
    assert_eq!(by_dest("out/f07")["fileSize"], 7);
    assert_eq!(by_dest("out/f07")["srcPath"], "/tree/f07");
    assert!(by_dest("out/f07")["modificationTime"].is_i64());
    assert_eq!(by_dest("one.txt")["fileSize"], 3);

    // Owner only: bob sees nothing, a superuser sees all.
    let bob = site.server.basic("bob", "pw-b");
    let error = rpc_error(bob.call("send.getManifest", json!([id])).await);
    assert_eq!(error.code, -32004, "{}", error.message);
    let error = rpc_error(bob.call("send.deleteManifest", json!([id])).await);
    assert_eq!(error.code, -32004);
    assert_eq!(
        bob.call("send.getManifests", Value::Null).await.unwrap(),
        json!([])
    );
    let root = site.server.basic("root", "pw-r");
    let listed = root.call("send.getManifests", Value::Null).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // Errors name the thing.
    let error = rpc_error(
        alice
            .call("send.createManifest", json!({"mappings": {"x": "/nope"}}))
            .await,
    );
    assert_eq!(error.code, -32004);
    assert!(error.message.contains("/nope"), "{}", error.message);
    let error = rpc_error(
        alice
            .call("send.createManifest", json!({"mappings": {"x": "/../etc"}}))
            .await,
    );
    assert_eq!(error.code, -32003, "{}", error.message);
    let error = rpc_error(
        alice
            .call(
                "send.createManifest",
                json!({"mappings": {"x": "/tree"}, "symlinks": "maybe"}),
            )
            .await,
    );
    assert_eq!(error.code, -32602);

    alice
        .call("send.deleteManifest", json!({"manifestId": id}))
        .await
        .unwrap();
    let error = rpc_error(alice.call("send.getManifest", json!([id])).await);
    assert_eq!(error.code, -32004);
}

/// `send.createManifest`'s `symlinks`: "follow" takes links inside the sandbox as their
/// targets (a link back to a parent folder is not walked again), "ignore" leaves links out and
/// refuses a mapping whose source is one; links out of the sandbox are never taken.
#[tokio::test]
async fn manifests_follow_or_ignore_symbolic_links() {
    use std::os::unix::fs::symlink;
    let site = Site::start(&[]);
    add_user(&site.server.state_dir, "alice", "pw-a", false);
    std::fs::create_dir_all(site.path("tree/sub")).unwrap();
    std::fs::create_dir_all(site.path("data/deep")).unwrap();
    std::fs::write(site.path("tree/a.txt"), b"hello").unwrap();
    std::fs::write(site.path("tree/sub/b.txt"), b"bb").unwrap();
    std::fs::write(site.path("data/deep/d.txt"), b"ddd").unwrap();
    symlink("a.txt", site.path("tree/link_file")).unwrap();
    symlink("../data", site.path("tree/link_dir")).unwrap();
    symlink(".", site.path("tree/self")).unwrap();
    symlink("..", site.path("tree/sub/up")).unwrap();
    symlink("nowhere", site.path("tree/dangling")).unwrap();
    symlink("/etc", site.path("tree/etc")).unwrap();
    symlink("../../", site.path("tree/escape")).unwrap();
    let alice = site.server.basic("alice", "pw-a");
    let create = |mappings: Value, symlinks: Option<&str>| {
        let mut params = json!({"mappings": mappings});
        if let Some(mode) = symlinks {
            params["symlinks"] = json!(mode);
        }
        alice.call("send.createManifest", params)
    };
    let dests = |manifest: Value| {
        let alice = alice.clone();
        async move {
            let page = alice
                .call(
                    "send.getManifestFiles",
                    json!({"manifestId": manifest["manifestId"]}),
                )
                .await
                .unwrap();
            page["fileMappings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["destPath"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let totals = |m: &Value| {
        (
            m["totalFiles"].as_u64().unwrap(),
            m["totalSize"].as_u64().unwrap(),
        )
    };
    // Links inside are followed only on kernels with openat2 (the File backend's rule).
    let links_followed = alice
        .call("server.ls", json!({"path": "/tree/link_dir"}))
        .await
        .is_ok();

    let ignored = create(json!({"out": "/tree"}), Some("ignore"))
        .await
        .unwrap();
    assert_eq!(ignored["status"], "complete", "{ignored}");
    assert_eq!(totals(&ignored), (2, 7));
    assert_eq!(dests(ignored).await, ["out/a.txt", "out/sub/b.txt"]);

    let followed = create(json!({"out": "/tree"}), None).await.unwrap();
    assert_eq!(followed["status"], "complete", "{followed}");
    if links_followed {
        assert_eq!(totals(&followed), (4, 15));
        assert_eq!(
            dests(followed).await,
            [
                "out/a.txt",
                "out/link_file",
                "out/link_dir/deep/d.txt",
                "out/sub/b.txt"
            ]
        );
    } else {
        assert_eq!(dests(followed).await, ["out/a.txt", "out/sub/b.txt"]);
    }

    // A link named as the source.
    if links_followed {
        let one = create(json!({"x": "/tree/link_file"}), Some("follow"))
            .await
            .unwrap();
        assert_eq!(totals(&one), (1, 5));
    }
    for src in ["/tree/link_file", "/tree/link_dir"] {
        let error = rpc_error(create(json!({"x": src}), Some("ignore")).await);
        if links_followed {
            assert_eq!(error.code, -32602, "{}", error.message);
            assert!(
                error.message.contains(src) && error.message.contains("\"ignore\""),
                "{}",
                error.message
            );
        } else {
            assert_eq!(error.code, -32004, "{}", error.message);
        }
    }
    // Links that leave the sandbox or dangle are no sources, whatever the mode.
    for mode in ["follow", "ignore"] {
        for src in ["/tree/etc", "/tree/escape", "/tree/dangling"] {
            let error = rpc_error(create(json!({"x": src}), Some(mode)).await);
            assert_eq!(error.code, -32004, "{mode} {src}: {}", error.message);
        }
    }
}

#[tokio::test]
async fn destinations_log_in_at_once_and_pin_the_certificate() {
    let sender = Site::start(&[]);
    let receiver = Site::start(&[]);
    add_user(&sender.server.state_dir, "alice", "pw-a", false);
    add_user(&sender.server.state_dir, "bob", "pw-b", false);
    add_user(&receiver.server.state_dir, "carol", "secret-c", false);
    let alice = sender.server.basic("alice", "pw-a");
    let address = format!("127.0.0.1:{}", receiver.server.api_port);
    let info = receiver
        .server
        .client(Trust::Insecure)
        .call("server.getServerInfo", Value::Null)
        .await
        .unwrap();
    let fingerprint = info["certificateFingerprint"].as_str().unwrap().to_string();

    // A wrong password is an error at once.
    let started = Instant::now();
    let error = rpc_error(
        alice
            .call(
                "send.createDestination",
                json!({"destinationAddress": address, "user": "carol", "password": "wrong"}),
            )
            .await,
    );
    assert_eq!(error.code, -32001, "{}", error.message);
    assert!(
        error.message.contains("destination login failed"),
        "{}",
        error.message
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // Nobody listening: a clear error, quickly.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let started = Instant::now();
    let error = rpc_error(
        alice
            .call(
                "send.createDestination",
                json!({"destinationAddress": dead, "user": "carol", "password": "x"}),
            )
            .await,
    );
    assert_eq!(error.code, -32010, "{}", error.message);
    assert!(started.elapsed() < Duration::from_secs(15));

    // A wrong pinned fingerprint is refused.
    let error = rpc_error(
        alice
            .call(
                "send.createDestination",
                json!({"destinationAddress": address, "user": "carol",
                       "password": "secret-c", "fingerprint": "ab".repeat(32)}),
            )
            .await,
    );
    assert_eq!(error.code, -32001, "{}", error.message);

    // Trust on first use records the fingerprint; the password never comes back.
    let destination = alice
        .call(
            "send.createDestination",
            json!({"destinationAddress": address, "user": "carol", "password": "secret-c",
                   "sendRateMax": 50000}),
        )
        .await
        .unwrap();
    assert_eq!(destination["fingerprint"], fingerprint.as_str());
    assert_eq!(destination["destinationPort"], receiver.server.recv_port);
    assert_eq!(destination["destinationIP"], "127.0.0.1");
    assert_eq!(destination["encryptedConnectionState"], "disconnected");
    assert_eq!(destination["sendRateMax"], 50000);
    assert_eq!(destination["numTransfersQueued"], 0);
    assert_eq!(destination["owner"], "alice");
    assert_eq!(destination["user"], "carol");
    assert!(!destination.to_string().contains("secret-c"));

    // A given fingerprint, with colons and in upper case, is accepted.
    let colons: Vec<String> = fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let pinned = alice
        .call(
            "send.createDestination",
            json!([address, "carol", "secret-c", null, null, colons.join(":")]),
        )
        .await
        .unwrap();
    assert_eq!(pinned["fingerprint"], fingerprint.as_str());

    let all = alice
        .call("send.getDestinations", Value::Null)
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(!all.to_string().contains("secret-c"));
    let id = destination["destinationId"].clone();
    let bob = sender.server.basic("bob", "pw-b");
    assert_eq!(
        rpc_error(bob.call("send.getDestination", json!([id])).await).code,
        -32004
    );
    alice
        .call("send.deleteDestination", json!({"destinationId": id}))
        .await
        .unwrap();
    assert_eq!(
        rpc_error(alice.call("send.getDestination", json!([id])).await).code,
        -32004
    );
    assert!(!sender.server.log().contains("secret-c"));
    let db = std::fs::metadata(sender.server.state_dir.join("engine.db")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(db.permissions().mode() & 0o777, 0o600);
}
