//! The server foundation against a real server process: info, logins (Basic, Bearer, throttling,
//! token expiry), error codes, users added while running, restarts, `slipstream api`.

mod common;

use common::{add_user, rpc_error, user_command, TestServer};
use serde_json::{json, Value};
use slipstream_client::{Auth, Trust};
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn server_info_needs_no_login() {
    let server = TestServer::start(&[]);
    let info = server
        .client(Trust::Insecure)
        .call("server.getServerInfo", Value::Null)
        .await
        .unwrap();
    assert_eq!(info["apiControlPort"], json!(server.api_port));
    assert_eq!(info["recvPort"], json!(server.recv_port));
    assert_eq!(info["authRequired"], json!(true));
    assert_eq!(info["certificateFingerprint"].as_str().unwrap().len(), 64);
    for key in ["maxSize", "maxUploadSize", "maxDownloadSize", "used"] {
        assert!(info["fileCache"][key].is_u64(), "fileCache.{key}");
    }
    // Without a sandbox the server warns once at start.
    assert!(server
        .log()
        .lines()
        .any(|l| l.contains("warning") && l.contains("sandbox")));
}

#[tokio::test]
async fn echo_with_basic_and_with_a_bearer_token() {
    let server = TestServer::start(&[]);
    add_user(&server.state_dir, "alice", "correct horse", false);
    let basic = server.basic("alice", "correct horse");
    assert_eq!(
        basic
            .call("server.echo", json!({"text": "hi"}))
            .await
            .unwrap(),
        json!("hi")
    );
    // Positional params too.
    assert_eq!(
        basic.call("echo", json!(["by position"])).await.unwrap(),
        json!("by position")
    );
    let auth = server
        .client(Trust::Insecure)
        .call(
            "server.auth",
            json!({"user": "alice", "password": "correct horse"}),
        )
        .await
        .unwrap();
    let token = auth["token"].as_str().unwrap().to_string();
    assert!(auth["expiryTime"].as_i64().unwrap() > 0);
    let bearer = server
        .client(Trust::Insecure)
        .with_auth(Auth::Bearer(token));
    assert_eq!(
        bearer
            .call("server.echo", json!({"text": "tok"}))
            .await
            .unwrap(),
        json!("tok")
    );
    assert_eq!(
        bearer.call("server.superuser", Value::Null).await.unwrap(),
        json!({"superuser": false})
    );
}

#[tokio::test]
async fn wrong_password_unknown_method_and_bad_params() {
    let server = TestServer::start(&[]);
    add_user(&server.state_dir, "alice", "pw", false);
    let error = rpc_error(
        server
            .basic("alice", "wrong")
            .call("server.echo", json!({"text": "x"}))
            .await,
    );
    assert_eq!((error.code, error.http_status), (-32001, 401));
    let error = rpc_error(
        server
            .client(Trust::Insecure)
            .call("server.echo", json!({"text": "x"}))
            .await,
    );
    assert_eq!(
        (error.code, error.http_status),
        (-32001, 401),
        "no credentials"
    );

    let alice = server.basic("alice", "pw");
    let error = rpc_error(alice.call("server.noSuchMethod", Value::Null).await);
    assert_eq!(error.code, -32601);
    assert!(error.message.contains("server.noSuchMethod"));

    let error = rpc_error(alice.call("server.echo", json!({})).await);
    assert_eq!(error.code, -32602);
    assert!(error.message.contains("'text'"), "{}", error.message);
    assert_eq!(error.data.unwrap()["field"], json!("text"));
    let error = rpc_error(alice.call("server.echo", json!({"txet": "x"})).await);
    assert_eq!(error.code, -32602);
    assert!(error.message.contains("'txet'"), "{}", error.message);
    let error = rpc_error(alice.call("server.echo", json!({"text": 42})).await);
    assert_eq!(error.code, -32602);
    assert!(error.message.contains("'text'") && error.message.contains("string"));
}

#[tokio::test]
async fn malformed_requests_and_body_limit() {
    let server = TestServer::start(&["--max-request-size=4KiB"]);
    let client = server.client(Trust::Insecure);
    let (status, body) = client.post(b"{not json".to_vec()).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (200, json!(-32700))
    );
    let (_, body) = client
        .post(br#"{"jsonrpc":"1.0","id":1,"method":"server.echo"}"#.to_vec())
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], json!(-32600));
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"server.echo","params":{{"text":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    let (status, _) = client.post(big.into_bytes()).await.unwrap();
    assert_eq!(status, 413);
    // A batch answers each request.
    let (_, body) = client
        .post(
            br#"[{"jsonrpc":"2.0","id":1,"method":"server.getServerInfo"},{"jsonrpc":"2.0","id":2,"method":"nope"}]"#
                .to_vec(),
        )
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body[0]["result"].is_object());
    assert_eq!(body[1]["error"]["code"], json!(-32601));
}

#[tokio::test]
async fn tokens_expire() {
    let server = TestServer::start(&["--api-token-lifetime=2s"]);
    add_user(&server.state_dir, "alice", "pw", false);
    let auth = server
        .client(Trust::Insecure)
        .call("server.auth", json!(["alice", "pw"]))
        .await
        .unwrap();
    let bearer = server
        .client(Trust::Insecure)
        .with_auth(Auth::Bearer(auth["token"].as_str().unwrap().into()));
    assert!(bearer.call("server.echo", json!(["x"])).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let error = rpc_error(bearer.call("server.echo", json!(["x"])).await);
    assert_eq!((error.code, error.http_status), (-32001, 401));
    assert!(error.message.contains("expired"), "{}", error.message);
    let error = rpc_error(
        server
            .client(Trust::Insecure)
            .with_auth(Auth::Bearer("f".repeat(64)))
            .call("server.echo", json!(["x"]))
            .await,
    );
    assert_eq!(error.code, -32001);
}

#[tokio::test]
async fn rapid_wrong_logins_are_throttled() {
    let server = TestServer::start(&[]);
    add_user(&server.state_dir, "alice", "pw", false);
    add_user(&server.state_dir, "bob", "pw", false);
    let wrong = server.basic("alice", "guess");
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(rpc_error(wrong.call("server.echo", json!(["x"])).await).http_status);
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let error = rpc_error(
        server
            .basic("alice", "pw")
            .call("server.echo", json!(["x"]))
            .await,
    );
    assert_eq!((error.code, error.http_status), (-32001, 429));
    assert!(
        error.message.contains("too many failed logins, retry in"),
        "{}",
        error.message
    );
    // server.auth is throttled the same way.
    let error = rpc_error(
        server
            .client(Trust::Insecure)
            .call("server.auth", json!(["alice", "pw"]))
            .await,
    );
    assert_eq!(error.http_status, 429);
    // Another user from the same address is not affected.
    assert!(server
        .basic("bob", "pw")
        .call("server.echo", json!(["x"]))
        .await
        .is_ok());
}

#[tokio::test]
async fn users_added_while_running_and_superusers() {
    let server = TestServer::start(&["--superuser", "ops"]);
    add_user(&server.state_dir, "carol", "pw", false);
    assert!(server
        .basic("carol", "pw")
        .call("echo", json!(["x"]))
        .await
        .is_ok());
    add_user(&server.state_dir, "root", "pw", true);
    add_user(&server.state_dir, "ops", "pw", false);
    for (user, expected) in [("carol", false), ("root", true), ("ops", true)] {
        let answer = server
            .basic(user, "pw")
            .call("server.superuser", Value::Null)
            .await
            .unwrap();
        assert_eq!(answer, json!({"superuser": expected}), "{user}");
    }
    // passwd and del take effect at the next login.
    let output = user_command(
        &server.state_dir,
        &["passwd", "carol", "--password-stdin"],
        "new\n",
    );
    assert!(output.status.success());
    assert!(server
        .basic("carol", "pw")
        .call("echo", json!(["x"]))
        .await
        .is_err());
    assert!(server
        .basic("carol", "new")
        .call("echo", json!(["x"]))
        .await
        .is_ok());
    let output = user_command(&server.state_dir, &["del", "carol"], "");
    assert!(output.status.success());
    assert!(server
        .basic("carol", "new")
        .call("echo", json!(["x"]))
        .await
        .is_err());
    let output = user_command(&server.state_dir, &["list"], "");
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains("root\tsuperuser") && !listing.contains("carol"),
        "{listing}"
    );
    let output = user_command(
        &server.state_dir,
        &["add", "root", "--password-stdin"],
        "x\n",
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
}

#[tokio::test]
async fn restart_keeps_users_and_certificate() {
    let mut server = TestServer::start(&[]);
    add_user(&server.state_dir, "alice", "pw", false);
    let fingerprint_of = |info: Value| info["certificateFingerprint"].as_str().unwrap().to_string();
    let before = fingerprint_of(
        server
            .client(Trust::Insecure)
            .call("server.getServerInfo", Value::Null)
            .await
            .unwrap(),
    );
    let status = server.stop().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    server.launch();
    let pinned = server.client(Trust::Fingerprint(before.clone()));
    let after = fingerprint_of(
        pinned
            .call("server.getServerInfo", Value::Null)
            .await
            .unwrap(),
    );
    assert_eq!(before, after);
    assert!(server
        .basic("alice", "pw")
        .call("echo", json!(["x"]))
        .await
        .is_ok());
    // A wrong pin is refused.
    let wrong = server.client(Trust::Fingerprint("0".repeat(64)));
    let error = wrong
        .call("server.getServerInfo", Value::Null)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
}

#[tokio::test]
async fn api_command_prints_the_echo_and_pins_the_certificate() {
    let server = TestServer::start(&[]);
    add_user(&server.state_dir, "alice", "pw", false);
    let config = tempfile::tempdir().unwrap();
    let api = |args: &[&str], password: &str| {
        Command::new(common::binary())
            .arg("api")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &server.api_port.to_string(),
            ])
            .args(args)
            .env("SLIPSTREAM_API_PASSWORD", password)
            .env("XDG_CONFIG_HOME", config.path())
            .output()
            .unwrap()
    };
    let output = api(
        &["--user", "alice", "server.echo", "--text=hello there"],
        "pw",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, json!("hello there"));
    // The certificate was pinned on first use.
    let known =
        std::fs::read_to_string(config.path().join("slipstream/known_servers.json")).unwrap();
    assert!(known.contains(&format!("127.0.0.1:{}", server.api_port)));
    // Errors go to stderr with a non-zero exit.
    let output = api(&["--user", "alice", "server.echo", "--text=x"], "wrong");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("authentication failed"));
    // --params by position, JSON values.
    let output = api(
        &["--user", "alice", "echo", "--params", "[\"positional\"]"],
        "pw",
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        json!("positional")
    );
    // A changed certificate is refused with a hint.
    std::fs::write(
        config.path().join("slipstream/known_servers.json"),
        format!(
            "{{\"127.0.0.1:{}\": \"{}\"}}",
            server.api_port,
            "0".repeat(64)
        ),
    )
    .unwrap();
    let output = api(&["server.getServerInfo"], "");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("known_servers.json"));
    let output = api(&["--insecure", "server.getServerInfo"], "");
    assert!(output.status.success());
}

#[tokio::test]
async fn config_file_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "max-file-cache-size = \"2GiB\"\nlog-format = \"json\"\nmin-cipher = 2\n",
    )
    .unwrap();
    let server = TestServer::start(&["--config", config.to_str().unwrap(), "--min-cipher=3"]);
    let info = server
        .client(Trust::Insecure)
        .call("server.getServerInfo", Value::Null)
        .await
        .unwrap();
    assert_eq!(info["fileCache"]["maxSize"], json!(2u64 << 30));
    assert_eq!(info["minCipher"], json!(3), "flags override the file");
    let first = server.log().lines().next().unwrap_or_default().to_string();
    assert!(
        serde_json::from_str::<Value>(&first).is_ok(),
        "JSON log line: {first}"
    );
}

#[tokio::test]
async fn api_cert_and_key_are_used_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=slipstream-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;
    let expected = slipstream_client::sha256_fingerprint(&der);
    let server = TestServer::start(&[
        &format!("--api-cert={}", cert.display()),
        &format!("--api-key={}", key.display()),
    ]);
    let info = server
        .client(Trust::Fingerprint(expected.clone()))
        .call("server.getServerInfo", Value::Null)
        .await
        .unwrap();
    assert_eq!(info["certificateFingerprint"], json!(expected));
    assert!(
        !server.state_dir.join("tls/api-cert.pem").exists(),
        "no self-signed certificate made"
    );
}
