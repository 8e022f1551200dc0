//! Sandbox mappings as users write them: parsing and validation (errors name the key and list
//! the valid ones), placeholder expansion (`%u %d %f %%`) and secret redaction.

use std::collections::BTreeMap;

/// A secret string (secret key, session token, proxy password): never printed by `Debug`,
/// never serialised back to users (they see `"********"`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"********\"")
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    Http,
    #[default]
    Https,
}

/// A File sandbox: a folder on local disk (`path` may hold placeholders until expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub path: String,
}

/// An S3 sandbox, with every option of the seed page (names in comments are the JSON keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `path`: key prefix; "/" or "" is the bucket root. Stored without leading/trailing '/'.
    pub path: String,
    /// `bucketName` (required).
    pub bucket_name: String,
    /// `region`, default `us-east-1`.
    pub region: String,
    /// `accessKeyId`.
    pub access_key_id: Option<String>,
    /// `secretKey`.
    pub secret_key: Option<Secret>,
    /// `sessionToken`.
    pub session_token: Option<Secret>,
    /// `scheme`, default https.
    pub scheme: Scheme,
    /// `endpointOverride`: `host[:port]` or a URL (a URL's scheme wins over `scheme`).
    pub endpoint_override: Option<String>,
    /// `proxyScheme`, default http.
    pub proxy_scheme: Scheme,
    /// `proxyHost`.
    pub proxy_host: Option<String>,
    /// `proxyPort` (1..=65535).
    pub proxy_port: Option<u16>,
    /// `proxyUserName`.
    pub proxy_user_name: Option<String>,
    /// `proxyPassword`.
    pub proxy_password: Option<Secret>,
    /// `verifySSL`, default true.
    pub verify_ssl: bool,
    /// `caPath`: a folder of PEM certificates added to the trust roots.
    pub ca_path: Option<String>,
    /// `caFile`: a PEM bundle added to the trust roots.
    pub ca_file: Option<String>,
    /// `forcePathStyle` (our addition): default true when `endpointOverride` is set.
    pub force_path_style: Option<bool>,
}

/// One sandbox of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxConfig {
    File(FileConfig),
    S3(Box<S3Config>),
}

/// A whole mapping: virtual name → sandbox. The key "" makes that sandbox the user's root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    pub roots: BTreeMap<String, SandboxConfig>,
}
