//! Sandboxes through the API of a real server process, against the real S3 server: mapping
//! management (superuser only, validation, probing, secrets never shown or logged), browsing
//! File and S3 sandboxes, precedence, placeholders, async requests, traversal attempts.

mod common;

use common::{add_user, rpc_error, S3Env, TestServer};
use serde_json::{json, Value};
use slipstream_client::ApiClient;

const SECRET_PROXY_PASSWORD: &str = "proxy-secret-never-shown-7731";
const SECRET_SESSION_TOKEN: &str = "session-token-never-shown-9914";

fn admin(server: &TestServer) -> ApiClient {
    server.basic("admin", "adminpw")
}

fn start_with_admin(extra: &[&str]) -> TestServer {
    let server = TestServer::start(extra);
    add_user(&server.state_dir, "admin", "adminpw", true);
    server
}

fn names(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn seed_example_through_the_api() {
    let server = start_with_admin(&[]);
    let seed = json!({"": {
        "type": "S3",
        "bucketName": "sandboxBucket",
        "path": "/",
        "region": "us-west-2",
        "accessKeyId": "SECRETKEYID",
        "secretKey": "secretkey"
    }});
    // As written it is accepted when validation is skipped (AWS is not reachable from here)...
    admin(&server)
        .call("server.setSandboxMapping", json!(["", seed.clone(), true]))
        .await
        .unwrap();
    let mappings = admin(&server)
        .call("server.getSandboxMappings", Value::Null)
        .await
        .unwrap();
    assert_eq!(mappings[""][""]["bucketName"], json!("sandboxBucket"));
    assert_eq!(mappings[""][""]["region"], json!("us-west-2"));
    assert_eq!(mappings[""][""]["secretKey"], json!("********"));
    // ...and probed otherwise: the unreachable endpoint is a clear storage error, not a hang.
    let started = std::time::Instant::now();
    let error = rpc_error(
        admin(&server)
            .call(
                "server.setSandboxMapping",
                json!({"user": "", "mapping": seed}),
            )
            .await,
    );
    assert_eq!(error.code, -32010, "{}", error.message);
    assert!(started.elapsed().as_secs() < 60);
    assert!(!error.message.contains("secretkey"));

    // The same shape pointed at the local S3 server works end to end.
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("seed").await;
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["", {"": s3.sandbox(&bucket, "/")}]),
        )
        .await
        .unwrap();
    add_user(&server.state_dir, "alice", "pw", false);
    let alice = server.basic("alice", "pw");
    alice
        .call("server.mkdir", json!({"path": "/projects/2026"}))
        .await
        .unwrap();
    alice
        .call("server.mkFile", json!({"path": "/projects/readme.txt"}))
        .await
        .unwrap();
    let listing = alice
        .call("server.ls", json!({"path": "/projects"}))
        .await
        .unwrap();
    assert_eq!(names(&listing), vec!["2026", "readme.txt"]);
    let roots = alice.call("server.lsRoots", Value::Null).await.unwrap();
    assert_eq!(roots[0]["sandboxType"], json!("S3"));
    // The marker and the file are real objects in the bucket.
    let objects = s3
        .raw_client()
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.contains(&"projects/readme.txt"), "{keys:?}");
}

#[tokio::test]
async fn mapping_methods_need_a_superuser_and_validate() {
    let server = start_with_admin(&[]);
    add_user(&server.state_dir, "bob", "pw", false);
    let bob = server.basic("bob", "pw");
    for (method, params) in [
        ("server.setSandboxMapping", json!(["bob", {"": "/tmp"}])),
        ("server.getSandboxMappings", Value::Null),
        ("server.deleteSandboxMapping", json!(["bob"])),
    ] {
        assert_eq!(
            rpc_error(bob.call(method, params).await).code,
            -32003,
            "{method}"
        );
    }
    let set = |mapping: Value| {
        let admin = admin(&server);
        async move {
            rpc_error(
                admin
                    .call(
                        "server.setSandboxMapping",
                        json!({"user": "bob", "mapping": mapping, "skipValidation": true}),
                    )
                    .await,
            )
        }
    };
    let error = set(json!({"": {"type": "FTP", "path": "/x"}})).await;
    assert_eq!(error.code, -32602);
    assert!(
        error.message.contains("File") && error.message.contains("S3"),
        "{}",
        error.message
    );
    let error = set(json!({"": {"type": "S3", "bucketName": "b", "bucketname": "c"}})).await;
    assert_eq!(error.code, -32602);
    assert!(
        error.message.contains("bucketname") && error.message.contains("endpointOverride"),
        "{}",
        error.message
    );
    let error = set(json!({"": {"type": "S3"}})).await;
    assert_eq!(error.data.unwrap()["field"], json!("bucketName"));
    let error = set(json!({"": {"type": "S3", "bucketName": "b", "scheme": "ftp"}})).await;
    assert_eq!(error.data.unwrap()["field"], json!("scheme"));
    let error =
        set(json!({"": {"type": "S3", "bucketName": "b", "proxyHost": "p", "proxyPort": 70000}}))
            .await;
    assert_eq!(error.data.unwrap()["field"], json!("proxyPort"));
    let error =
        set(json!({"": {"type": "S3", "bucketName": "b", "proxyHost": "p", "proxyUserName": "u"}}))
            .await;
    assert!(error.message.contains("proxyPassword"), "{}", error.message);
    let error =
        set(json!({"": {"type": "S3", "bucketName": "b", "caFile": "/no/such/ca.pem"}})).await;
    assert_eq!(error.data.unwrap()["field"], json!("caFile"));
    let error = set(json!({"": {"type": "S3", "bucketName": "b", "verifySSL": "no"}})).await;
    assert_eq!(error.data.unwrap()["field"], json!("verifySSL"));
    let error = set(json!(42)).await;
    assert_eq!(error.data.unwrap()["field"], json!("mapping"));
    // A File folder that does not exist is refused unless validation is skipped.
    let error = rpc_error(
        admin(&server)
            .call(
                "server.setSandboxMapping",
                json!(["bob", {"": "/no/such/folder"}]),
            )
            .await,
    );
    assert_eq!(error.code, -32010);
    assert!(error.message.contains("/no/such/folder"));
    // Nothing was stored by any of these.
    let mappings = admin(&server)
        .call("server.getSandboxMappings", Value::Null)
        .await
        .unwrap();
    assert_eq!(mappings, json!({}));
    let error = rpc_error(
        admin(&server)
            .call("server.deleteSandboxMapping", json!(["bob"]))
            .await,
    );
    assert_eq!(error.code, -32004);
}

#[tokio::test]
async fn secrets_are_never_returned_or_logged() {
    let server = start_with_admin(&[]);
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("secrets").await;
    let mut sandbox = s3.sandbox(&bucket, "/");
    sandbox["sessionToken"] = json!(SECRET_SESSION_TOKEN);
    sandbox["proxyHost"] = json!("127.0.0.1");
    sandbox["proxyPort"] = json!(9);
    sandbox["proxyUserName"] = json!("someone");
    sandbox["proxyPassword"] = json!(SECRET_PROXY_PASSWORD);
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["", {"media": sandbox.clone()}, true]),
        )
        .await
        .unwrap();
    // A failing probe mentions no secret either.
    let error = rpc_error(
        admin(&server)
            .call("server.setSandboxMapping", json!(["x", {"media": sandbox}]))
            .await,
    );
    let mappings = admin(&server)
        .call("server.getSandboxMappings", Value::Null)
        .await
        .unwrap();
    let text = mappings.to_string();
    for secret in [
        s3.secret_key.as_str(),
        SECRET_SESSION_TOKEN,
        SECRET_PROXY_PASSWORD,
    ] {
        assert!(
            !text.contains(secret),
            "getSandboxMappings leaks a secret: {text}"
        );
        assert!(
            !error.message.contains(secret),
            "error leaks a secret: {}",
            error.message
        );
    }
    assert_eq!(mappings[""]["media"]["proxyPassword"], json!("********"));
    // Sending the redacted form back keeps the stored secrets.
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["", mappings[""].clone(), true]),
        )
        .await
        .unwrap();
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        stored.extend(
            std::fs::read(server.state_dir.join(format!("slipstream.db{suffix}")))
                .unwrap_or_default(),
        );
    }
    assert!(
        String::from_utf8_lossy(&stored).contains(SECRET_PROXY_PASSWORD),
        "kept in the state database"
    );
    let log = server.log();
    for secret in [
        s3.secret_key.as_str(),
        SECRET_SESSION_TOKEN,
        SECRET_PROXY_PASSWORD,
        "adminpw",
    ] {
        assert!(!log.contains(secret), "the server log contains a secret");
    }
}

#[tokio::test]
async fn two_users_in_two_prefixes_of_one_bucket() {
    let server = start_with_admin(&[]);
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("prefixes").await;
    // One global mapping; %u gives each user their own prefix.
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["", {"": s3.sandbox(&bucket, "/home/%u")}]),
        )
        .await
        .unwrap();
    add_user(&server.state_dir, "ann", "pw", false);
    add_user(&server.state_dir, "ben", "pw", false);
    let ann = server.basic("ann", "pw");
    let ben = server.basic("ben", "pw");
    ann.call("server.mkFile", json!(["/ann-only.txt"]))
        .await
        .unwrap();
    ben.call("server.mkFile", json!(["/ben-only.txt"]))
        .await
        .unwrap();
    assert_eq!(
        names(&ann.call("server.ls", json!(["/"])).await.unwrap()),
        vec!["ann-only.txt"]
    );
    assert_eq!(
        names(&ben.call("server.ls", json!(["/"])).await.unwrap()),
        vec!["ben-only.txt"]
    );
    let error = rpc_error(ann.call("server.ls", json!(["/../ben"])).await);
    assert_eq!(error.code, -32003);
    let error = rpc_error(ann.call("server.rm", json!(["/ben-only.txt"])).await);
    assert_eq!(error.code, -32004);
    let objects = s3
        .raw_client()
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = objects.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(keys, vec!["home/ann/ann-only.txt", "home/ben/ben-only.txt"]);
}

#[tokio::test]
async fn browsing_an_s3_sandbox_and_async_requests() {
    let server = start_with_admin(&[]);
    let s3 = S3Env::from_env();
    let bucket = s3.new_bucket("browse").await;
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["carl", {"media": s3.sandbox(&bucket, "/m")}]),
        )
        .await
        .unwrap();
    add_user(&server.state_dir, "carl", "pw", false);
    let carl = server.basic("carl", "pw");
    assert_eq!(
        carl.call("server.lsRoots", Value::Null).await.unwrap(),
        json!([{"name": "media", "type": "directory", "sandboxType": "S3", "path": "/media"}])
    );
    // Nothing can be created at / itself when there are named roots.
    assert_eq!(
        rpc_error(carl.call("server.mkdir", json!(["/new"])).await).code,
        -32003
    );
    carl.call("server.mkdir", json!(["/media/a/b"]))
        .await
        .unwrap();
    for name in ["x", "y", "z"] {
        carl.call("server.mkFile", json!([format!("/media/a/{name}")]))
            .await
            .unwrap();
    }
    s3.raw_client()
        .put_object()
        .bucket(&bucket)
        .key("m/a/big.bin")
        .body(vec![7u8; 1000].into())
        .send()
        .await
        .unwrap();
    // Paged by two: every entry once, in order, no page over the limit.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..10 {
        let page = carl
            .call(
                "server.ls",
                json!({"path": "/media/a", "limit": 2, "cursor": cursor}),
            )
            .await
            .unwrap();
        assert!(names(&page).len() <= 2);
        seen.extend(names(&page));
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, vec!["b", "big.bin", "x", "y", "z"]);
    let du = carl.call("server.du", json!(["/media"])).await.unwrap();
    assert_eq!(
        (
            du["totalSize"].clone(),
            du["totalFiles"].clone(),
            du["totalDirectories"].clone()
        ),
        (json!(1000), json!(4), json!(2))
    );
    carl.call("server.mv", json!(["/media/a/x", "/media/a/b/x"]))
        .await
        .unwrap();
    assert_eq!(
        rpc_error(
            carl.call("server.mv", json!(["/media/a/none", "/media/q"]))
                .await
        )
        .code,
        -32004
    );
    assert_eq!(
        rpc_error(carl.call("server.mkFile", json!(["/media/a/y"])).await).code,
        -32011
    );
    assert_eq!(
        rpc_error(carl.call("server.rm", json!(["/media/a"])).await).code,
        -32011
    );
    assert_eq!(
        rpc_error(carl.call("server.ls", json!(["/media/nothing"])).await).code,
        -32004
    );

    // The async variants run in the background.
    let request = carl
        .call(
            "server.rmAsync",
            json!({"path": "/media/a", "recursive": true}),
        )
        .await
        .unwrap();
    let id = request["requestId"].clone();
    assert_eq!(
        carl.call("server.getRequestResult", json!([id.clone()]))
            .await
            .unwrap(),
        Value::Null
    );
    let status = carl
        .call("server.getRequestStatus", json!([id.clone()]))
        .await
        .unwrap();
    assert_eq!(
        (status["status"].clone(), status["processing"].clone()),
        (json!("complete"), json!(false))
    );
    let request = carl
        .call("server.lsAsync", json!(["/media/a"]))
        .await
        .unwrap();
    let error = rpc_error(
        carl.call("server.getRequestResult", json!([request["requestId"]]))
            .await,
    );
    assert_eq!(error.code, -32004, "the folder was removed");
    let status = carl
        .call("server.getRequestStatus", json!([request["requestId"]]))
        .await
        .unwrap();
    assert_eq!(status["status"], json!("error"));
    // Another user cannot see carl's requests.
    add_user(&server.state_dir, "dora", "pw", false);
    let error = rpc_error(
        server
            .basic("dora", "pw")
            .call("server.getRequestStatus", json!([id]))
            .await,
    );
    assert_eq!(error.code, -32004);
}

#[tokio::test]
async fn precedence_file_sandboxes_and_traversal() {
    let data = tempfile::tempdir().unwrap();
    let system = data.path().join("system");
    let global = data.path().join("global");
    let own = data.path().join("own");
    for dir in [&system, &global, &own] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(format!("in-{}", dir.file_name().unwrap().to_str().unwrap())),
            b"x",
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("/etc", system.join("escape")).unwrap();
    let server = start_with_admin(&["--sandbox-dir", system.to_str().unwrap()]);
    assert!(
        !server.log().contains("no sandbox"),
        "a system sandbox is configured"
    );
    add_user(&server.state_dir, "eve", "pw", false);
    let eve = server.basic("eve", "pw");
    let listing = eve.call("server.ls", json!(["/"])).await.unwrap();
    assert_eq!(
        names(&listing),
        vec!["in-system"],
        "the escaping symlink is not listed"
    );
    for path in [
        "/escape",
        "/escape/passwd",
        "/../global",
        "/..",
        "//etc",
        "/a/../../etc",
    ] {
        let error = rpc_error(eve.call("server.ls", json!([path])).await);
        assert!(
            matches!(error.code, -32003 | -32004),
            "{path}: {}",
            error.message
        );
    }
    assert_eq!(
        rpc_error(eve.call("server.mkdir", json!(["/escape/x"])).await).code,
        -32003
    );
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["", global.to_str().unwrap()]),
        )
        .await
        .unwrap();
    assert_eq!(
        names(&eve.call("server.ls", json!(["/"])).await.unwrap()),
        vec!["in-global"]
    );
    admin(&server)
        .call(
            "server.setSandboxMapping",
            json!(["eve", {"": {"type": "File", "path": own.to_str().unwrap()}}]),
        )
        .await
        .unwrap();
    assert_eq!(
        names(&eve.call("server.ls", json!(["/"])).await.unwrap()),
        vec!["in-own"]
    );
    let mappings = admin(&server)
        .call("server.getSandboxMappings", Value::Null)
        .await
        .unwrap();
    assert_eq!(
        mappings["eve"][""],
        json!({"type": "File", "path": own.to_str().unwrap()})
    );
    assert_eq!(
        mappings[""][""],
        json!({"type": "File", "path": global.to_str().unwrap()})
    );
    admin(&server)
        .call("server.deleteSandboxMapping", json!(["eve"]))
        .await
        .unwrap();
    assert_eq!(
        names(&eve.call("server.ls", json!(["/"])).await.unwrap()),
        vec!["in-global"]
    );
}
