//! Validating a mapping before it is stored: one bounded ListObjectsV2 (max-keys 1) under the
//! sandbox prefix, with each failure turned into its own message (see [`crate::errors`]).

use crate::client::{build, Target};
use crate::errors::describe;
use crate::keys::normalize_prefix;
use slipstream_storage::config::S3Config;
use slipstream_storage::{StorageError, StorageResult};
use std::time::Duration;

/// Bound on one probe attempt (the connect itself is bounded by `CONNECT_TIMEOUT`).
pub const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the whole probe, retries included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(25);

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
        Ok(Err(e)) => Err(StorageError::Backend(describe(&e, &target))),
        Err(_) => Err(StorageError::Backend(format!(
            "no answer from {} within {} s: check that the endpoint is up and reachable",
            target.endpoint_label,
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}
