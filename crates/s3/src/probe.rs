//! Validating a mapping before it is stored: one bounded ListObjectsV2 (max-keys 1) under the
//! sandbox prefix, with each failure turned into its own message (see [`crate::errors`]).

use crate::client::{build, Target};
use crate::errors::{describe, proxy_credentials_message};
use crate::insecure::base64_encode;
use crate::keys::normalize_prefix;
use slipstream_storage::config::S3Config;
use slipstream_storage::config::Scheme;
use slipstream_storage::{StorageError, StorageResult};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on one probe attempt (the connect itself is bounded by `CONNECT_TIMEOUT`).
pub const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// Bound on the whole probe, retries included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks that the sandbox is usable: the options are valid, the endpoint (and proxy) answer,
/// TLS is trusted, the keys are accepted, the bucket exists in the configured region and its
/// prefix can be listed. Never takes longer than about [`PROBE_TIMEOUT`].
///
/// Errors: [`StorageError::InvalidConfig`] for options that cannot work at all,
/// [`StorageError::Backend`] with the cause, the fix and the S3 code and text otherwise.
pub async fn probe(config: &S3Config) -> StorageResult<()> {
    let target = Target::from_config(config)?;
    let prefix = normalize_prefix(&config.path)?;
    let client = build(
        config,
        &target,
        Some((PROBE_ATTEMPT_TIMEOUT, PROBE_TIMEOUT)),
    )?;
    let mut request = client.list_objects_v2().bucket(&target.bucket).max_keys(1);
    if !prefix.is_empty() {
        request = request.prefix(format!("{prefix}/"));
    }
    let outcome =
        tokio::time::timeout(PROBE_TIMEOUT + Duration::from_secs(5), request.send()).await;
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let message = describe(&e, &target);
            if message.contains("refused to open a tunnel") {
                // hyper's tunnel hides the proxy's status; ask the proxy ourselves.
                if let Some(status) = connect_status(config, &target).await {
                    if status == 401 || status == 407 {
                        return Err(StorageError::Backend(proxy_credentials_message(
                            status,
                            &target,
                            &format!("CONNECT to {} with {status}", target.endpoint_label),
                        )));
                    }
                    return Err(StorageError::Backend(format!(
                        "proxy {} answered CONNECT to {} with {status}: it does not allow tunnels to \
                         this host and port; fix the proxy's rules or the endpoint",
                        target.proxy.as_deref().unwrap_or(""),
                        target.endpoint_label
                    )));
                }
            }
            Err(StorageError::Backend(message))
        }
        Err(_) => Err(StorageError::Backend(format!(
            "no answer from {} within {} s: check that the endpoint is up and reachable",
            target.endpoint_label,
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// The status line a plain-HTTP proxy gives our CONNECT to the endpoint (with the configured
/// credentials), for explaining a failed tunnel. `None` when it cannot be found out.
async fn connect_status(config: &S3Config, target: &Target) -> Option<u16> {
    if config.proxy_scheme != Scheme::Http {
        return None;
    }
    let proxy_uri: http::Uri = target.proxy.as_deref()?.parse().ok()?;
    let proxy = format!("{}:{}", proxy_uri.host()?, proxy_uri.port_u16()?);
    let endpoint: http::Uri = target.endpoint_label.parse().ok()?;
    let port = endpoint.port_u16().unwrap_or(443);
    let authority = format!("{}:{port}", endpoint.host()?);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = config.proxy_user_name.as_deref() {
        let password = config.proxy_password.as_ref().map_or("", |p| p.0.as_str());
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(proxy).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    tokio::time::timeout(crate::client::CONNECT_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
