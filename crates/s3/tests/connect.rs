//! Connection options against the real SeaweedFS (HTTP and HTTPS ports) and the real
//! tinyproxy: scheme, endpointOverride forms, region, keys, session tokens from STS, proxy
//! with credentials (forward and CONNECT), verifySSL, caFile, caPath, path style; and the
//! probe's message for each failure these servers can produce.

mod common;
use common::*;
use slipstream_s3::{probe, S3Backend};
use slipstream_storage::config::{S3Config, Scheme, Secret};
use slipstream_storage::{Backend, RelPath, StorageError};
use std::time::{Duration, Instant};

/// Probes, and on success also writes and lists through a backend.
async fn works(cfg: &S3Config) {
    probe(cfg)
        .await
        .unwrap_or_else(|e| panic!("probe failed: {e}"));
    let b = S3Backend::new(cfg).unwrap();
    let name = format!("f{}", std::process::id());
    let path = RelPath::parse(&name).unwrap();
    b.create_file(&path)
        .await
        .unwrap_or_else(|e| panic!("create_file: {e}"));
    let page = b
        .list(&RelPath::root(), 100, None)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert!(page.entries.iter().any(|e| e.name == name));
    b.remove(&path, false)
        .await
        .unwrap_or_else(|e| panic!("remove: {e}"));
}

/// Probes and returns the error message (the probe must fail).
async fn probe_error(cfg: &S3Config) -> String {
    match probe(cfg).await {
        Ok(()) => panic!("probe should have failed"),
        Err(StorageError::Backend(m)) => m,
        Err(other) => panic!("expected a Backend error, got {other:?}"),
    }
}

fn tls_config(s: &Services, bucket: &str) -> S3Config {
    let mut c = config(s, bucket);
    c.scheme = Scheme::Https;
    c.endpoint_override = Some(host_port(&s.tls_endpoint));
    c
}

fn with_proxy(mut c: S3Config, s: &Services, password: &str) -> S3Config {
    c.proxy_host = Some(s.proxy_host.clone());
    c.proxy_port = Some(s.proxy_port);
    c.proxy_user_name = Some(s.proxy_user.clone());
    c.proxy_password = Some(Secret(password.to_string()));
    c
}

#[tokio::test]
async fn scheme_http_and_endpoint_override_forms() {
    let s = services();
    let bucket = bucket(&s, "endpoint").await;
    // host:port, the scheme from `scheme`.
    works(&config(&s, &bucket)).await;
    // A full URL: its own scheme wins over `scheme`.
    let mut c = config(&s, &bucket);
    c.scheme = Scheme::Https;
    c.endpoint_override = Some(format!("{}/", s.endpoint));
    works(&c).await;
    // host:port with the default scheme (https) against the plain-HTTP port: a TLS failure
    // that says what to do.
    let mut c = config(&s, &bucket);
    c.scheme = Scheme::Https;
    let m = probe_error(&c).await;
    assert!(m.contains("set scheme http"), "{m}");
}

#[tokio::test]
async fn region_is_used_for_signing() {
    let s = services();
    let bucket = bucket(&s, "region").await;
    let mut c = config(&s, &bucket);
    c.region = "eu-west-1".into();
    // SeaweedFS verifies the SigV4 signature with whatever region the request's credential
    // scope names, so any region works here; a wrong region is tested against a stub.
    works(&c).await;
}

#[tokio::test]
async fn keys_are_checked() {
    let s = services();
    let bucket = bucket(&s, "keys").await;
    let mut c = config(&s, &bucket);
    c.access_key_id = Some("AKIANOSUCHKEY0000000".into());
    let m = probe_error(&c).await;
    assert!(
        m.contains("access key 'AKIANOSUCHKEY0000000' is not known"),
        "{m}"
    );
    assert!(
        m.contains("check accessKeyId") && m.contains("InvalidAccessKeyId"),
        "{m}"
    );

    let mut c = config(&s, &bucket);
    c.secret_key = Some(Secret("wrong-secret".into()));
    let m = probe_error(&c).await;
    assert!(
        m.contains("check secretKey") && m.contains("SignatureDoesNotMatch"),
        "{m}"
    );
    assert!(
        !m.contains("wrong-secret"),
        "the secret must not appear: {m}"
    );
    // Backend operations explain the same way.
    match S3Backend::new(&c)
        .unwrap()
        .list(&RelPath::root(), 10, None)
        .await
    {
        Err(StorageError::Backend(m)) => assert!(m.contains("check secretKey"), "{m}"),
        other => panic!("expected a Backend error, got {other:?}"),
    }

    let c = config(&s, "no-such-bucket-slipstream");
    let m = probe_error(&c).await;
    assert!(
        m.contains("bucket 'no-such-bucket-slipstream' does not exist")
            && m.contains("create it first"),
        "{m}"
    );
    assert!(m.contains("NoSuchBucket"), "{m}");
}

#[tokio::test]
async fn session_token_from_sts_assume_role() {
    let s = services();
    let bucket = bucket(&s, "sts").await;
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                &s.access_key,
                &s.secret_key,
                None,
                None,
                "test",
            ))
            .endpoint_url(&s.endpoint)
            .build(),
    );
    let out = sts
        .assume_role()
        .role_arn(&s.role_arn)
        .role_session_name("slipstream-test")
        .send()
        .await
        .expect("AssumeRole");
    let creds = out.credentials().expect("temporary credentials");
    let mut c = config(&s, &bucket);
    c.access_key_id = Some(creds.access_key_id().to_string());
    c.secret_key = Some(Secret(creds.secret_access_key().to_string()));
    c.session_token = Some(Secret(creds.session_token().to_string()));
    works(&c).await;

    // A tampered token is refused with a message about the token.
    let token = creds.session_token();
    let tampered = format!("{}{}", &token[..token.len() - 4], "AAAA");
    c.session_token = Some(Secret(tampered.clone()));
    let m = probe_error(&c).await;
    assert!(m.contains("session token is invalid"), "{m}");
    assert!(!m.contains(&tampered), "the token must not appear: {m}");
}

#[tokio::test]
async fn proxy_forward_for_http_endpoint() {
    let s = services();
    let bucket = bucket(&s, "proxyhttp").await;
    works(&with_proxy(config(&s, &bucket), &s, &s.proxy_password)).await;

    // tinyproxy answers a wrong password with 401 and missing credentials with 407.
    let m = probe_error(&with_proxy(config(&s, &bucket), &s, "wrong-password")).await;
    assert!(
        m.contains("proxy refused the credentials (401): check proxyUserName/proxyPassword"),
        "{m}"
    );
    assert!(!m.contains("wrong-password"), "{m}");
    let mut anonymous = with_proxy(config(&s, &bucket), &s, "");
    anonymous.proxy_user_name = None;
    anonymous.proxy_password = None;
    let m = probe_error(&anonymous).await;
    assert!(
        m.contains("proxy refused the credentials (407): check proxyUserName/proxyPassword"),
        "{m}"
    );

    // Loopback endpoints are not exempt: with a dead proxy the request fails, although the
    // endpoint itself is reachable.
    let mut c = config(&s, &bucket);
    let dead = closed_port().await;
    let (host, port) = dead.split_once(':').unwrap();
    c.proxy_host = Some(host.into());
    c.proxy_port = Some(port.parse().unwrap());
    let started = Instant::now();
    let m = probe_error(&c).await;
    assert!(
        m.contains("refused the connection") && m.contains(&format!("proxy http://{dead}")),
        "{m}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn proxy_connect_tunnel_for_https_endpoint_with_ca_file() {
    let s = services();
    let bucket = bucket(&s, "proxytls").await;
    let mut c = tls_config(&s, &bucket);
    c.ca_file = Some(s.ca_file.clone());
    works(&with_proxy(c.clone(), &s, &s.proxy_password)).await;
    let m = probe_error(&with_proxy(c.clone(), &s, "wrong-password")).await;
    assert!(
        m.contains("proxy refused the credentials (401): check proxyUserName/proxyPassword"),
        "{m}"
    );
    let mut anonymous = with_proxy(c, &s, "");
    anonymous.proxy_user_name = None;
    anonymous.proxy_password = None;
    let m = probe_error(&anonymous).await;
    assert!(
        m.contains("proxy refused the credentials (407): check proxyUserName/proxyPassword"),
        "{m}"
    );
}

#[tokio::test]
async fn verify_ssl_false_also_through_the_proxy() {
    let s = services();
    let bucket = bucket(&s, "insecure").await;
    let mut c = tls_config(&s, &bucket);
    c.verify_ssl = false;
    works(&c).await;
    // Through the proxy: CONNECT tunnel (https) and forward proxy (http), with our client.
    works(&with_proxy(c.clone(), &s, &s.proxy_password)).await;
    let m = probe_error(&with_proxy(c, &s, "wrong-password")).await;
    assert!(m.contains("proxy refused the credentials (401)"), "{m}");
    let mut plain = config(&s, &bucket);
    plain.verify_ssl = false;
    works(&with_proxy(plain.clone(), &s, &s.proxy_password)).await;
    let m = probe_error(&with_proxy(plain, &s, "wrong-password")).await;
    assert!(m.contains("proxy refused the credentials (401)"), "{m}");
}

#[tokio::test]
async fn tls_trust_default_ca_file_ca_path() {
    let s = services();
    let bucket = bucket(&s, "tls").await;
    // Default: verification on, the test CA unknown.
    let m = probe_error(&tls_config(&s, &bucket)).await;
    assert!(
        m.starts_with("TLS: certificate not trusted: set caFile/caPath, or verifySSL false"),
        "{m}"
    );
    let mut c = tls_config(&s, &bucket);
    c.ca_file = Some(s.ca_file.clone());
    works(&c).await;
    let mut c = tls_config(&s, &bucket);
    c.ca_path = Some(s.ca_path.clone());
    works(&c).await;
    // The endpoint as a URL with https.
    let mut c = tls_config(&s, &bucket);
    c.endpoint_override = Some(s.tls_endpoint.clone());
    c.scheme = Scheme::Http;
    c.ca_file = Some(s.ca_file.clone());
    works(&c).await;
}

#[tokio::test]
async fn force_path_style() {
    let s = services();
    let bucket = bucket(&s, "pathstyle").await;
    let mut c = config(&s, &bucket);
    c.force_path_style = Some(true);
    works(&c).await;
    // Virtual-hosted style against an IP endpoint: the SDK's S3 endpoint rules cannot put a
    // bucket in front of an IP address, so they fall back to path style; it still works.
    let mut c = config(&s, &bucket);
    c.force_path_style = Some(false);
    works(&c).await;
    // With a host name, virtual-hosted style asks for BUCKET.localhost, which does not
    // resolve here (glibc does not map *.localhost): the probe says the host is unknown.
    let mut c = config(&s, &bucket);
    c.endpoint_override = Some(s.endpoint.replace("127.0.0.1", "localhost"));
    c.force_path_style = Some(false);
    let m = probe_error(&c).await;
    assert!(m.contains("cannot be resolved"), "{m}");
    c.force_path_style = None; // the default with endpointOverride: path style
    works(&c).await;
}
