//! Building an `aws_sdk_s3::Client` from one sandbox's [`S3Config`]: endpoint, region, keys,
//! path style, checksum mode, proxy, extra trust roots or `verifySSL: false`, and timeouts.

use crate::insecure;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedHttpClient,
};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_http_client::Connector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use slipstream_storage::config::{S3Config, Scheme};
use slipstream_storage::{StorageError, StorageResult};
use std::path::Path;
use std::time::Duration;

/// How long a TCP (and proxy) connection may take before the request fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one attempt of a metadata request (list, head, put marker, delete) in
/// [`crate::S3Backend`] and [`crate::probe`]. Bulk clients (uploads, copies) have none.
pub const METADATA_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a whole metadata operation, retries included.
pub const METADATA_OPERATION_TIMEOUT: Duration = Duration::from_secs(90);
/// The region used when the mapping has none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The settled facts about a sandbox's connection, for clients and for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `bucketName`.
    pub bucket: String,
    /// The configured region.
    pub region: String,
    /// The endpoint URL we talk to (`None`: AWS, resolved from the region).
    pub endpoint: Option<String>,
    /// What to call the endpoint in messages.
    pub endpoint_label: String,
    /// `accessKeyId` (not a secret; it names the key in messages).
    pub access_key_id: Option<String>,
    /// A session token is configured.
    pub has_session_token: bool,
    /// `proxyScheme://proxyHost:proxyPort` (no credentials), when a proxy is set.
    pub proxy: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
}

impl Target {
    /// Checks the connection options of `config` and settles endpoint, region and path style.
    pub(crate) fn from_config(config: &S3Config) -> StorageResult<Target> {
        if config.bucket_name.trim().is_empty() {
            return Err(StorageError::config(
                "bucketName",
                "bucketName is required for an S3 sandbox",
            ));
        }
        let region = if config.region.trim().is_empty() {
            DEFAULT_REGION.to_string()
        } else {
            config.region.trim().to_string()
        };
        let endpoint = match config.endpoint_override.as_deref().map(str::trim) {
            None | Some("") => match config.scheme {
                // AWS itself, over plain HTTP: name the regional endpoint so the scheme holds.
                Scheme::Http => Some(format!("http://s3.{region}.amazonaws.com")),
                Scheme::Https => None,
            },
            Some(e) => Some(endpoint_url(e, config.scheme)?),
        };
        let endpoint_label = endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let has_endpoint_override = config
            .endpoint_override
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty());
        let proxy = match config.proxy_host.as_deref().map(str::trim) {
            None | Some("") => {
                if config.proxy_port.is_some() || config.proxy_user_name.is_some() {
                    return Err(StorageError::config(
                        "proxyHost",
                        "proxyPort/proxyUserName are set but proxyHost is not: set proxyHost",
                    ));
                }
                None
            }
            Some(host) => {
                if host.contains(['/', '@', ' ']) {
                    return Err(StorageError::config(
                        "proxyHost",
                        format!("proxyHost '{host}' must be a host name or address, not a URL"),
                    ));
                }
                let scheme = scheme_str(config.proxy_scheme);
                let port = config.proxy_port.unwrap_or(match config.proxy_scheme {
                    Scheme::Http => 80,
                    Scheme::Https => 443,
                });
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]") // a bare IPv6 address
                } else {
                    host.to_string()
                };
                Some(format!("{scheme}://{host}:{port}"))
            }
        };
        Ok(Target {
            bucket: config.bucket_name.trim().to_string(),
            region,
            endpoint,
            endpoint_label,
            access_key_id: config.access_key_id.clone(),
            has_session_token: config
                .session_token
                .as_ref()
                .is_some_and(|t| !t.0.is_empty()),
            proxy,
            force_path_style: config.force_path_style.unwrap_or(has_endpoint_override),
        })
    }
}

fn scheme_str(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

/// `endpointOverride` as a URL: `host[:port]` takes `scheme`; a full URL keeps its own.
fn endpoint_url(endpoint: &str, scheme: Scheme) -> StorageResult<String> {
    let url = if endpoint.contains("://") {
        endpoint.trim_end_matches('/').to_string()
    } else {
        format!(
            "{}://{}",
            scheme_str(scheme),
            endpoint.trim_end_matches('/')
        )
    };
    let uri: http::Uri = url.parse().map_err(|e| {
        StorageError::config(
            "endpointOverride",
            format!("endpointOverride '{endpoint}' is not a host[:port] or URL: {e}"),
        )
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(StorageError::config(
                "endpointOverride",
                format!("endpointOverride '{endpoint}': the scheme must be http or https"),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(StorageError::config(
            "endpointOverride",
            format!("endpointOverride '{endpoint}' has no host"),
        ));
    }
    Ok(url)
}

/// Builds the S3 client for one sandbox. Requests are bounded only by the connect timeout
/// ([`CONNECT_TIMEOUT`]), so that long uploads and copies can run; metadata callers use
/// [`metadata_client`].
///
/// Errors are [`StorageError::InvalidConfig`] naming the field (unreadable caFile, bad
/// endpointOverride, a key without its secret, ...). Nothing is sent over the network here.
pub fn client(config: &S3Config) -> StorageResult<aws_sdk_s3::Client> {
    let target = Target::from_config(config)?;
    build(config, &target, None)
}

/// Like [`client`], with every operation bounded ([`METADATA_ATTEMPT_TIMEOUT`] per attempt,
/// [`METADATA_OPERATION_TIMEOUT`] in all): for listings, HEADs, markers and deletes.
pub fn metadata_client(config: &S3Config) -> StorageResult<aws_sdk_s3::Client> {
    let target = Target::from_config(config)?;
    build(
        config,
        &target,
        Some((METADATA_ATTEMPT_TIMEOUT, METADATA_OPERATION_TIMEOUT)),
    )
}

/// The shared builder behind [`client`] and [`metadata_client`].
pub(crate) fn build(
    config: &S3Config,
    target: &Target,
    bounds: Option<(Duration, Duration)>,
) -> StorageResult<aws_sdk_s3::Client> {
    let credentials = credentials(config, &target.region)?;
    let http_client = http_client(config, target)?;
    let mut timeouts = TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT);
    if let Some((attempt, operation)) = bounds {
        timeouts = timeouts
            .operation_attempt_timeout(attempt)
            .operation_timeout(operation);
    }
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(target.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(target.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .http_client(http_client)
        .timeout_config(timeouts.build())
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(endpoint) = &target.endpoint {
        builder = builder.endpoint_url(endpoint.clone());
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

/// Static keys from the mapping, or, with neither key set, the server's own AWS credentials
/// (environment, profile, container or instance role), found on first use.
fn credentials(config: &S3Config, region: &str) -> StorageResult<SharedCredentialsProvider> {
    let key = config.access_key_id.as_deref().filter(|k| !k.is_empty());
    let secret = config
        .secret_key
        .as_ref()
        .map(|s| s.0.as_str())
        .filter(|s| !s.is_empty());
    let token = config
        .session_token
        .as_ref()
        .map(|s| s.0.clone())
        .filter(|s| !s.is_empty());
    match (key, secret) {
        (Some(key), Some(secret)) => Ok(SharedCredentialsProvider::new(Credentials::new(
            key,
            secret,
            token,
            None,
            "slipstream-sandbox",
        ))),
        (Some(_), None) => Err(StorageError::config(
            "secretKey",
            "accessKeyId is set but secretKey is not: set both, or neither to use the server's own AWS credentials",
        )),
        (None, Some(_)) => Err(StorageError::config(
            "accessKeyId",
            "secretKey is set but accessKeyId is not: set both, or neither to use the server's own AWS credentials",
        )),
        (None, None) if token.is_some() => Err(StorageError::config(
            "sessionToken",
            "sessionToken needs accessKeyId and secretKey (the temporary credentials it belongs to)",
        )),
        (None, None) => Ok(SharedCredentialsProvider::new(AmbientCredentials {
            region: region.to_string(),
            chain: tokio::sync::OnceCell::new(),
        })),
    }
}

/// The AWS default credential chain, built on first use (building it is async).
#[derive(Debug)]
struct AmbientCredentials {
    region: String,
    chain:
        tokio::sync::OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
}

impl ProvideCredentials for AmbientCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| async {
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(Region::new(self.region.clone()))
                        .build()
                        .await
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

/// The HTTP client: the SDK's own connector (rustls, proxy, extra roots), or ours when
/// certificate verification is off.
fn http_client(config: &S3Config, target: &Target) -> StorageResult<SharedHttpClient> {
    let proxy = proxy_config(config, target)?;
    if !config.verify_ssl {
        return insecure::http_client(target.proxy.as_deref(), proxy_auth(config));
    }
    let tls_context = tls_context(config)?;
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(
            move |settings, components| {
                let mut builder = Connector::builder();
                builder.set_connector_settings(settings.cloned());
                if let Some(sleep) = components.and_then(|c| c.sleep_impl()) {
                    builder = builder.sleep_impl(sleep);
                }
                builder.set_proxy_config(proxy.clone());
                builder
                    .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                    .tls_context(tls_context.clone())
                    .build()
            },
        ),
    )
}

/// `(user, password)` for the proxy, when both are configured.
fn proxy_auth(config: &S3Config) -> Option<(String, String)> {
    let user = config.proxy_user_name.clone().filter(|u| !u.is_empty())?;
    let password = config
        .proxy_password
        .as_ref()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    Some((user, password))
}

/// The SDK proxy setting: every request (http and https, loopback included) goes through the
/// proxy. No `no_proxy` list is set, and the environment (`NO_PROXY`, `HTTP_PROXY`) is ignored.
fn proxy_config(config: &S3Config, target: &Target) -> StorageResult<Option<ProxyConfig>> {
    let Some(url) = &target.proxy else {
        return Ok(Some(ProxyConfig::disabled()));
    };
    let proxy = ProxyConfig::all(url.as_str()).map_err(|e| {
        StorageError::config("proxyHost", format!("proxy '{url}' is not usable: {e}"))
    })?;
    Ok(Some(match proxy_auth(config) {
        // The SDK puts these into the proxy URL's userinfo, which is percent-decoded again.
        Some((user, password)) => proxy.with_basic_auth(userinfo(&user), userinfo(&password)),
        None => proxy,
    }))
}

/// Percent-encodes a proxy user name or password for a URL's userinfo.
fn userinfo(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The trust roots: the platform's, plus `caFile` and every PEM certificate in `caPath`.
fn tls_context(config: &S3Config) -> StorageResult<TlsContext> {
    // The SDK asserts (in debug builds) that enabled platform roots are not empty; a minimal
    // container may have none, and then only caFile/caPath can be trusted anyway.
    static PLATFORM_ROOTS: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| !rustls_native_certs::load_native_certs().certs.is_empty());
    let mut store = TrustStore::default().with_native_roots(*PLATFORM_ROOTS);
    for pem in extra_roots(config)? {
        store = store.with_pem_certificate(pem);
    }
    TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| StorageError::config("caFile", format!("TLS setup failed: {e}")))
}

/// Reads `caFile` and `caPath` into PEM blobs, each checked to hold parsable certificates (the
/// SDK would panic on a bad one later).
pub(crate) fn extra_roots(config: &S3Config) -> StorageResult<Vec<Vec<u8>>> {
    let mut pems = Vec::new();
    if let Some(file) = config.ca_file.as_deref().filter(|f| !f.is_empty()) {
        let bytes = std::fs::read(file).map_err(|e| {
            StorageError::config("caFile", format!("caFile '{file}' cannot be read: {e}"))
        })?;
        match checked_pem(&bytes) {
            Ok(0) => {
                return Err(StorageError::config(
                    "caFile",
                    format!("caFile '{file}' holds no PEM certificate"),
                ))
            }
            Ok(_) => pems.push(bytes),
            Err(e) => {
                return Err(StorageError::config(
                    "caFile",
                    format!("caFile '{file}': {e}"),
                ))
            }
        }
    }
    if let Some(dir) = config.ca_path.as_deref().filter(|d| !d.is_empty()) {
        let found = read_ca_dir(Path::new(dir))?;
        if found.is_empty() {
            return Err(StorageError::config(
                "caPath",
                format!("caPath '{dir}' holds no PEM certificate files"),
            ));
        }
        pems.extend(found);
    }
    Ok(pems)
}

/// Every file in `dir` (symlinks followed, not recursive) that holds PEM certificates.
/// Files with no certificate block (CRLs, notes) are skipped; a broken certificate is an error.
fn read_ca_dir(dir: &Path) -> StorageResult<Vec<Vec<u8>>> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        StorageError::config("caPath", format!("caPath '{shown}' cannot be read: {e}"))
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            StorageError::config("caPath", format!("caPath '{shown}' cannot be read: {e}"))
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    let mut pems = Vec::new();
    for path in paths {
        if !path.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue; // unreadable files in a shared CA folder are not ours to judge
        };
        match checked_pem(&bytes) {
            Ok(0) => {}
            Ok(_) => pems.push(bytes),
            Err(e) => {
                return Err(StorageError::config(
                    "caPath",
                    format!("caPath file '{}': {e}", path.display()),
                ))
            }
        }
    }
    Ok(pems)
}

/// The number of certificates in a PEM blob, each parsed as a trust anchor.
fn checked_pem(bytes: &[u8]) -> Result<usize, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(bytes) {
        let cert = cert.map_err(|e| format!("not a valid PEM certificate ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate cannot be used as a trust root ({e})"))?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipstream_storage::config::Secret;

    pub(crate) fn config() -> S3Config {
        S3Config {
            path: String::new(),
            bucket_name: "b".into(),
            region: String::new(),
            access_key_id: Some("AK".into()),
            secret_key: Some(Secret("SK".into())),
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

    #[test]
    fn endpoint_forms_and_path_style() {
        let mut c = config();
        let t = Target::from_config(&c).unwrap();
        assert_eq!(t.region, "us-east-1");
        assert_eq!(t.endpoint, None);
        assert!(!t.force_path_style);

        c.scheme = Scheme::Http;
        c.endpoint_override = Some("127.0.0.1:9000".into());
        let t = Target::from_config(&c).unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(t.force_path_style);

        c.endpoint_override = Some("https://minio.example:9000/".into());
        c.force_path_style = Some(false);
        let t = Target::from_config(&c).unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("https://minio.example:9000"));
        assert!(!t.force_path_style);

        c.endpoint_override = None;
        c.region = "eu-west-1".into();
        let t = Target::from_config(&c).unwrap();
        assert_eq!(
            t.endpoint.as_deref(),
            Some("http://s3.eu-west-1.amazonaws.com")
        );

        c.endpoint_override = Some("ftp://x".into());
        assert!(matches!(
            Target::from_config(&c),
            Err(StorageError::InvalidConfig { field, .. }) if field == "endpointOverride"
        ));
    }

    #[test]
    fn proxy_url_and_userinfo() {
        let mut c = config();
        c.proxy_host = Some("10.0.0.1".into());
        c.proxy_port = Some(3128);
        assert_eq!(
            Target::from_config(&c).unwrap().proxy.as_deref(),
            Some("http://10.0.0.1:3128")
        );
        c.proxy_scheme = Scheme::Https;
        c.proxy_port = None;
        assert_eq!(
            Target::from_config(&c).unwrap().proxy.as_deref(),
            Some("https://10.0.0.1:443")
        );
        assert_eq!(userinfo("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        c.proxy_host = Some("http://x".into());
        assert!(Target::from_config(&c).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut c = config();
        c.secret_key = Some(Secret("SECRET-KEY-VALUE".into()));
        c.session_token = Some(Secret("SESSION-TOKEN-VALUE".into()));
        c.proxy_host = Some("127.0.0.1".into());
        c.proxy_user_name = Some("user".into());
        c.proxy_password = Some(Secret("PROXY-PASSWORD-VALUE".into()));
        for verify in [true, false] {
            c.verify_ssl = verify;
            let client = client(&c).unwrap();
            let shown = format!("{:?} {:?}", client, client.config());
            for secret in [
                "SECRET-KEY-VALUE",
                "SESSION-TOKEN-VALUE",
                "PROXY-PASSWORD-VALUE",
            ] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            let backend = crate::S3Backend::new(&c).unwrap();
            assert!(!format!("{backend:?}").contains("VALUE"));
        }
    }

    #[test]
    fn keys_must_come_in_pairs() {
        let mut c = config();
        c.secret_key = None;
        assert!(matches!(
            client(&c),
            Err(StorageError::InvalidConfig { field, .. }) if field == "secretKey"
        ));
        c.access_key_id = None;
        c.secret_key = None;
        c.session_token = Some(Secret("t".into()));
        assert!(matches!(
            client(&c),
            Err(StorageError::InvalidConfig { field, .. }) if field == "sessionToken"
        ));
    }

    #[test]
    fn bad_ca_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut c = config();
        c.ca_file = Some(bad.display().to_string());
        assert!(matches!(
            client(&c),
            Err(StorageError::InvalidConfig { field, .. }) if field == "caFile"
        ));
        c.ca_file = Some(dir.path().join("missing.pem").display().to_string());
        assert!(client(&c).is_err());
        c.ca_file = None;
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("README"), "no certificates here").unwrap();
        c.ca_path = Some(empty.path().display().to_string());
        assert!(matches!(
            client(&c),
            Err(StorageError::InvalidConfig { field, .. }) if field == "caPath"
        ));
    }
}
