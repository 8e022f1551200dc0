//! Shared helpers for the integration tests: the test services' addresses from the
//! environment, sandbox configs, unique buckets made with a raw SDK client, a tiny HTTP stub.
#![allow(dead_code)]

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use slipstream_storage::config::{S3Config, Scheme, Secret};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The addresses and keys `scripts/test-services.sh env` exports.
#[derive(Debug, Clone)]
pub struct Services {
    pub endpoint: String,
    pub tls_endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub ca_file: String,
    pub ca_path: String,
    pub role_arn: String,
    pub proxy_host: String,
    pub proxy_port: u16,
    pub proxy_user: String,
    pub proxy_password: String,
}

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the S3 integration tests need the test services. \
             Run scripts/test-services.sh start and eval its env: \
             eval \"$(scripts/test-services.sh env)\""
        ),
    }
}

pub fn services() -> Services {
    Services {
        endpoint: var("SLIPSTREAM_TEST_S3_ENDPOINT"),
        tls_endpoint: var("SLIPSTREAM_TEST_S3_TLS_ENDPOINT"),
        access_key: var("SLIPSTREAM_TEST_S3_ACCESS_KEY"),
        secret_key: var("SLIPSTREAM_TEST_S3_SECRET_KEY"),
        ca_file: var("SLIPSTREAM_TEST_S3_CA_FILE"),
        ca_path: var("SLIPSTREAM_TEST_S3_CA_PATH"),
        role_arn: var("SLIPSTREAM_TEST_S3_ROLE_ARN"),
        proxy_host: var("SLIPSTREAM_TEST_PROXY_HOST"),
        proxy_port: var("SLIPSTREAM_TEST_PROXY_PORT")
            .parse()
            .expect("SLIPSTREAM_TEST_PROXY_PORT is a port number"),
        proxy_user: var("SLIPSTREAM_TEST_PROXY_USER"),
        proxy_password: var("SLIPSTREAM_TEST_PROXY_PASSWORD"),
    }
}

/// `host:port` of a URL like `http://127.0.0.1:18333`.
pub fn host_port(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_string()
}

/// A config with no endpoint or keys: the base for stub-server tests.
pub fn bare_config(bucket: &str) -> S3Config {
    S3Config {
        path: String::new(),
        bucket_name: bucket.to_string(),
        region: "us-east-1".into(),
        access_key_id: None,
        secret_key: None,
        session_token: None,
        scheme: Scheme::Https,
        endpoint_override: None,
        proxy_scheme: Scheme::Http,
        proxy_host: None,
        proxy_port: None,
        proxy_user_name: None,
        proxy_password: None,
        verify_ssl: true,
        ca_path: None,
        ca_file: None,
        force_path_style: None,
    }
}

/// A sandbox on the plain-HTTP SeaweedFS port, endpointOverride as `host:port` + scheme http.
pub fn config(s: &Services, bucket: &str) -> S3Config {
    let mut c = bare_config(bucket);
    c.access_key_id = Some(s.access_key.clone());
    c.secret_key = Some(Secret(s.secret_key.clone()));
    c.scheme = Scheme::Http;
    c.endpoint_override = Some(host_port(&s.endpoint));
    c
}

/// An SDK client of its own (not built by the code under test), for setup and planting keys.
pub fn raw_client(s: &Services) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            &s.access_key,
            &s.secret_key,
            None,
            None,
            "test",
        ))
        .endpoint_url(&s.endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates a fresh bucket named after the test.
pub async fn bucket(s: &Services, tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut name = format!("t-{tag}-{}-{n}-{nanos:x}", std::process::id()).to_lowercase();
    name.truncate(63);
    raw_client(s)
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

/// Puts `body` at `key` with the raw client.
pub async fn put(s: &Services, bucket: &str, key: &str, body: &[u8]) {
    raw_client(s)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// Every key in the bucket (raw listing, no delimiter).
pub async fn all_keys(s: &Services, bucket: &str) -> Vec<String> {
    let client = raw_client(s);
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = out.next_continuation_token().map(str::to_string);
        if out.is_truncated() != Some(true) {
            break;
        }
    }
    keys
}

/// A one-trick HTTP server: answers every request with `response` (raw HTTP/1.1 bytes) and
/// closes the connection. Returns `host:port`.
pub async fn stub(response: String) -> String {
    stub_with(move |_| response.clone()).await
}

/// A tiny HTTP server that answers each request with `answer(request head)` (raw HTTP/1.1
/// bytes) and closes the connection. Returns `host:port`.
pub async fn stub_with<F>(answer: F) -> String
where
    F: Fn(&str) -> String + Send + Sync + 'static,
{
    let answer = std::sync::Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = answer(&String::from_utf8_lossy(&buf));
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr.to_string()
}

/// An S3-style XML error response.
pub fn error_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A TCP listener that accepts connections and never answers. Returns `host:port`.
pub async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr.to_string()
}

/// A `host:port` on which nothing listens.
pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}
