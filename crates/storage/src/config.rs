//! Sandbox mappings as users write them: parsing and validation (errors name the key and list
//! the valid ones), placeholder expansion (`%u %d %f %%`) and secret redaction.

use std::collections::BTreeMap;

use crate::error::{StorageError, StorageResult};
use serde_json::{Map, Value};

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

/// The value shown instead of a secret.
pub const REDACTED: &str = "********";

/// The sandbox types a mapping may name, as users spell them.
pub const SANDBOX_TYPES: [&str; 2] = ["File", "S3"];

/// The keys of a File sandbox object.
pub const FILE_KEYS: [&str; 2] = ["type", "path"];

/// The keys of an S3 sandbox object: the seed page's spelling, plus our `forcePathStyle`.
pub const S3_KEYS: [&str; 18] = [
    "type",
    "path",
    "bucketName",
    "region",
    "accessKeyId",
    "secretKey",
    "sessionToken",
    "scheme",
    "endpointOverride",
    "proxyScheme",
    "proxyHost",
    "proxyPort",
    "proxyUserName",
    "proxyPassword",
    "verifySSL",
    "caPath",
    "caFile",
    "forcePathStyle",
];

/// The default `region` of an S3 sandbox.
pub const DEFAULT_REGION: &str = "us-east-1";

impl Secret {
    /// The secret itself, for the code that must use it (signing, proxy auth). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// Parses `http` or `https` (any case).
    pub fn parse(text: &str) -> Option<Scheme> {
        if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

impl S3Config {
    /// An S3 sandbox on `bucket_name` with every other option at its default.
    pub fn new(bucket_name: impl Into<String>) -> Self {
        S3Config {
            path: String::new(),
            bucket_name: bucket_name.into(),
            region: DEFAULT_REGION.to_string(),
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

    /// `forcePathStyle` as it applies: the explicit setting, else true when `endpointOverride`
    /// is set (third-party stores rarely support virtual-hosted buckets).
    pub fn effective_force_path_style(&self) -> bool {
        self.force_path_style
            .unwrap_or(self.endpoint_override.is_some())
    }
}

impl SandboxConfig {
    /// `"File"` or `"S3"`, as in the mapping's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SandboxConfig::File(_) => "File",
            SandboxConfig::S3(_) => "S3",
        }
    }

    /// The `path` option (a folder for File, a key prefix without outer slashes for S3).
    pub fn path(&self) -> &str {
        match self {
            SandboxConfig::File(f) => &f.path,
            SandboxConfig::S3(s) => &s.path,
        }
    }

    /// True if `path` holds a `%u`, `%d` or `%f` placeholder.
    pub fn uses_placeholders(&self) -> bool {
        has_placeholders(self.path())
    }

    fn to_json(&self, redact: bool) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), self.type_name().into());
        match self {
            SandboxConfig::File(f) => {
                out.insert("path".into(), f.path.clone().into());
            }
            SandboxConfig::S3(s) => {
                let secret = |v: &Secret| -> Value {
                    if redact {
                        REDACTED.into()
                    } else {
                        v.0.clone().into()
                    }
                };
                out.insert("path".into(), format!("/{}", s.path).into());
                out.insert("bucketName".into(), s.bucket_name.clone().into());
                out.insert("region".into(), s.region.clone().into());
                out.insert("scheme".into(), s.scheme.as_str().into());
                out.insert("proxyScheme".into(), s.proxy_scheme.as_str().into());
                out.insert("verifySSL".into(), s.verify_ssl.into());
                let optional = [
                    ("accessKeyId", &s.access_key_id),
                    ("endpointOverride", &s.endpoint_override),
                    ("proxyHost", &s.proxy_host),
                    ("proxyUserName", &s.proxy_user_name),
                    ("caPath", &s.ca_path),
                    ("caFile", &s.ca_file),
                ];
                for (key, value) in optional {
                    if let Some(v) = value {
                        out.insert(key.into(), v.clone().into());
                    }
                }
                let secrets = [
                    ("secretKey", &s.secret_key),
                    ("sessionToken", &s.session_token),
                    ("proxyPassword", &s.proxy_password),
                ];
                for (key, value) in secrets {
                    if let Some(v) = value {
                        out.insert(key.into(), secret(v));
                    }
                }
                if let Some(port) = s.proxy_port {
                    out.insert("proxyPort".into(), port.into());
                }
                if let Some(force) = s.force_path_style {
                    out.insert("forcePathStyle".into(), force.into());
                }
            }
        }
        Value::Object(out)
    }
}

/// Who a mapping is expanded for: the parts that the path placeholders stand for.
///
/// [`UserIdentity::from_login`] splits a login name at its last `@` (`alice@example.com`:
/// `%u` = `alice`, `%d` = `example.com`) or at a `\` (`EXAMPLE\alice`: `%u` = `alice`,
/// `%d` = `EXAMPLE`); a plain name has an empty domain. `%f` is always the login name as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserIdentity {
    /// `%u`: the user name without domain.
    pub name: String,
    /// `%d`: the domain, empty when the login has none.
    pub domain: String,
    /// `%f`: the full login name.
    pub full_name: String,
}

impl UserIdentity {
    /// Splits a login name into its placeholder parts (see the type's documentation).
    pub fn from_login(login: &str) -> Self {
        let (name, domain) = if let Some(at) = login.rfind('@') {
            (&login[..at], &login[at + 1..])
        } else if let Some(slash) = login.find('\\') {
            (&login[slash + 1..], &login[..slash])
        } else {
            (login, "")
        };
        UserIdentity {
            name: name.to_string(),
            domain: domain.to_string(),
            full_name: login.to_string(),
        }
    }

    /// Refuses identities whose parts cannot safely stand in a path: a part holding `/`, NUL
    /// or a control character, or equal to `.` or `..`, and an empty user name. Called before a
    /// mapping with placeholders is expanded for this user.
    pub fn check_path_safe(&self) -> StorageResult<()> {
        for (what, value) in [
            ("user name", &self.name),
            ("domain", &self.domain),
            ("full user name", &self.full_name),
        ] {
            let bad = value.contains('/')
                || value.chars().any(|c| c.is_control())
                || value == "."
                || value == "..";
            if bad {
                return Err(StorageError::PermissionDenied(format!(
                    "the {what} '{}' cannot be used in a sandbox path (placeholder): it contains \
                     '/' or a control character, or is '.' or '..'",
                    value.escape_debug()
                )));
            }
        }
        if self.name.is_empty() {
            return Err(StorageError::PermissionDenied(
                "an empty user name cannot be used in a sandbox path (placeholder %u)".into(),
            ));
        }
        Ok(())
    }
}

/// True if `path` holds `%u`, `%d` or `%f` (not just `%%`).
pub(crate) fn has_placeholders(path: &str) -> bool {
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'd' | 'f') => return true,
                _ => continue,
            }
        }
    }
    false
}

/// Replaces the placeholders of `path`. Unknown sequences are kept literally (parsing has
/// already refused them, so this only matters for hand-built configs).
pub(crate) fn expand_placeholders(path: &str, user: &UserIdentity) -> String {
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&user.name),
            Some('d') => out.push_str(&user.domain),
            Some('f') => out.push_str(&user.full_name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Checks that every `%` in `path` starts a known placeholder.
fn check_placeholders(path: &str, field: &str, label: &str) -> StorageResult<()> {
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'd' | 'f' | '%') => {}
                Some(other) => {
                    return Err(StorageError::config(
                        field,
                        format!(
                            "{label}: unknown placeholder '%{other}' in \"path\" '{path}': use \
                             %u (user name), %d (domain), %f (full user name) or %% (a literal %)"
                        ),
                    ))
                }
                None => {
                    return Err(StorageError::config(
                        field,
                        format!(
                            "{label}: \"path\" '{path}' ends with a lone '%': write %% for a \
                             literal %"
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Normalises an S3 prefix: no outer slashes, no empty segments. `.` and `..` are refused.
fn normalise_prefix(path: &str, field: &str, label: &str) -> StorageResult<String> {
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" => continue,
            "." | ".." => {
                return Err(StorageError::config(
                    field,
                    format!(
                        "{label}: \"path\" '{path}' has a '{segment}' segment; S3 prefixes \
                         must not hold '.' or '..' (such keys are ignored)"
                    ),
                ))
            }
            s => segments.push(s),
        }
    }
    Ok(segments.join("/"))
}

/// How strictly [`Mapping::parse_with`] checks things outside the JSON itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    /// A mapping a user sends: also checks that `caFile` and `caPath` can be read now.
    New,
    /// A mapping read back from the server's own store: syntax only, so that a CA file removed
    /// since does not make the server forget the mapping (the S3 client reports it on use).
    Stored,
}

impl Mapping {
    /// Parses and validates a mapping object as users send it (see [`ParseMode::New`]).
    pub fn parse(value: &Value) -> StorageResult<Mapping> {
        Mapping::parse_with(value, ParseMode::New)
    }

    /// Parses a mapping stored by [`Mapping::to_stored_json`] (see [`ParseMode::Stored`]).
    pub fn parse_stored(value: &Value) -> StorageResult<Mapping> {
        Mapping::parse_with(value, ParseMode::Stored)
    }

    /// Parses and validates `{virtualName: config, ...}`. Errors are
    /// [`StorageError::InvalidConfig`] whose `field` is the key path (`media.bucketName`, or
    /// just `bucketName` for the `""` sandbox) and whose message names the key and the fix.
    pub fn parse_with(value: &Value, mode: ParseMode) -> StorageResult<Mapping> {
        let Value::Object(object) = value else {
            return Err(StorageError::config(
                "mapping",
                format!(
                    "mapping must be an object {{virtualName: sandbox}}, not {}; for example \
                     {{\"\": \"/data\"}}",
                    json_type(value)
                ),
            ));
        };
        if object.is_empty() {
            return Err(StorageError::config(
                "mapping",
                "mapping is empty: give at least one sandbox, for example {\"\": \"/data\"} \
                 (use deleteSandboxMapping to remove a mapping)",
            ));
        }
        let mut roots = BTreeMap::new();
        for (name, config) in object {
            check_virtual_name(name)?;
            roots.insert(name.clone(), parse_sandbox(name, config, mode)?);
        }
        Ok(Mapping { roots })
    }

    /// The normalised form with every secret (`secretKey`, `sessionToken`, `proxyPassword`)
    /// shown as `"********"`: what `getSandboxMappings` returns.
    pub fn to_redacted_json(&self) -> Value {
        self.to_json(true)
    }

    /// The normalised form with secrets, for the server's owner-only store. Read it back with
    /// [`Mapping::parse_stored`] (or [`Mapping::parse`]).
    pub fn to_stored_json(&self) -> Value {
        self.to_json(false)
    }

    fn to_json(&self, redact: bool) -> Value {
        Value::Object(
            self.roots
                .iter()
                .map(|(name, config)| (name.clone(), config.to_json(redact)))
                .collect(),
        )
    }

    /// Puts back the secrets that arrive as `"********"` (a mapping read with
    /// `getSandboxMappings`, edited and sent back) from `previous`, the stored mapping, for the
    /// S3 sandbox of the same virtual name. A `"********"` with nothing to restore is an error,
    /// so that the placeholder never becomes a credential.
    pub fn restore_secrets(&mut self, previous: Option<&Mapping>) -> StorageResult<()> {
        for (name, config) in &mut self.roots {
            let SandboxConfig::S3(s3) = config else {
                continue;
            };
            let old = match previous.and_then(|p| p.roots.get(name)) {
                Some(SandboxConfig::S3(old)) => Some(old.as_ref()),
                _ => None,
            };
            let slots = [
                (
                    "secretKey",
                    &mut s3.secret_key,
                    old.and_then(|o| o.secret_key.clone()),
                ),
                (
                    "sessionToken",
                    &mut s3.session_token,
                    old.and_then(|o| o.session_token.clone()),
                ),
                (
                    "proxyPassword",
                    &mut s3.proxy_password,
                    old.and_then(|o| o.proxy_password.clone()),
                ),
            ];
            for (key, slot, old_value) in slots {
                if slot.as_ref().is_some_and(|v| v.0 == REDACTED) {
                    match old_value {
                        Some(value) => *slot = Some(value),
                        None => {
                            return Err(StorageError::config(
                                field_of(name, key),
                                format!(
                                    "{}: \"{key}\" is \"{REDACTED}\" but there is no stored \
                                     value to keep: give the real value",
                                    sandbox_label(name)
                                ),
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// True if any sandbox path uses `%u`, `%d` or `%f`.
    pub fn uses_placeholders(&self) -> bool {
        self.roots.values().any(SandboxConfig::uses_placeholders)
    }

    /// This mapping with `%u`, `%d`, `%f` and `%%` replaced in every `path` for `user`.
    ///
    /// The values go in literally: callers confining a user should first check the identity
    /// with [`UserIdentity::check_path_safe`] (`VirtualFs::new` does). An S3 prefix is
    /// normalised again afterwards (an empty `%d` leaves no empty segment).
    pub fn expand(&self, user: &UserIdentity) -> Mapping {
        let roots = self
            .roots
            .iter()
            .map(|(name, config)| {
                let expanded = match config {
                    SandboxConfig::File(f) => SandboxConfig::File(FileConfig {
                        path: expand_placeholders(&f.path, user),
                    }),
                    SandboxConfig::S3(s) => {
                        let path = expand_placeholders(&s.path, user);
                        let path = path
                            .split('/')
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join("/");
                        SandboxConfig::S3(Box::new(S3Config {
                            path,
                            ..(**s).clone()
                        }))
                    }
                };
                (name.clone(), expanded)
            })
            .collect();
        Mapping { roots }
    }
}

/// The key path of `key` in the sandbox `name`, as errors report it.
fn field_of(name: &str, key: &str) -> String {
    if name.is_empty() {
        key.to_string()
    } else {
        format!("{name}.{key}")
    }
}

/// How errors name a sandbox.
fn sandbox_label(name: &str) -> String {
    if name.is_empty() {
        "sandbox ''".to_string()
    } else {
        format!("sandbox '{name}'")
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_virtual_name(name: &str) -> StorageResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    let problem = if name == "." || name == ".." {
        Some("is not allowed")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(StorageError::config(
            name,
            format!(
                "virtual name '{}' {problem}: a virtual name is one folder name shown at the \
                 user's root (like \"media\"), or \"\" to make the sandbox the root itself",
                name.escape_debug()
            ),
        )),
    }
}

/// Levenshtein distance, for "did you mean" hints on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// True if one key starts the other (`bucket` for `bucketName`), ignoring case.
fn similar_prefix(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    a.len().min(b.len()) >= 4 && (a.starts_with(&b) || b.starts_with(&a))
}

fn parse_sandbox(name: &str, value: &Value, mode: ParseMode) -> StorageResult<SandboxConfig> {
    let label = sandbox_label(name);
    let object = match value {
        Value::String(path) => {
            let field = field_of(name, "path");
            return parse_file_path(path, &field, &label).map(SandboxConfig::File);
        }
        Value::Object(object) => object,
        other => {
            let field = if name.is_empty() { "mapping" } else { name };
            return Err(StorageError::config(
                field,
                format!(
                    "{label}: must be a folder path (a string) or an object with \"type\", not {}",
                    json_type(other)
                ),
            ));
        }
    };
    let type_field = field_of(name, "type");
    let kind = match object.get("type") {
        None | Some(Value::Null) => {
            return Err(StorageError::config(
                type_field,
                format!(
                    "{label}: missing \"type\": set it to one of {}",
                    SANDBOX_TYPES.join(", ")
                ),
            ))
        }
        Some(Value::String(t)) => SANDBOX_TYPES
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                StorageError::config(
                    &type_field,
                    format!(
                        "{label}: unknown type '{t}': valid types are {}",
                        SANDBOX_TYPES.join(", ")
                    ),
                )
            })?,
        Some(other) => {
            return Err(StorageError::config(
                &type_field,
                format!(
                    "{label}: \"type\" must be a string ({}), not {}",
                    SANDBOX_TYPES.join(" or "),
                    json_type(other)
                ),
            ))
        }
    };
    let valid: &[&str] = if kind == "File" { &FILE_KEYS } else { &S3_KEYS };
    for key in object.keys() {
        if !valid.contains(&key.as_str()) {
            let hint = valid
                .iter()
                .filter(|v| edit_distance(v, key) <= 2 || similar_prefix(v, key))
                .min_by_key(|v| edit_distance(v, key))
                .map(|v| format!(" (did you mean '{v}'?)"))
                .unwrap_or_default();
            return Err(StorageError::config(
                field_of(name, key),
                format!(
                    "{label} ({kind}): unknown key '{key}'{hint}; valid keys are {}",
                    valid.join(", ")
                ),
            ));
        }
    }
    let typed_label = format!("{label} ({kind})");
    let keys = Keys {
        name,
        label: &typed_label,
        object,
    };
    if kind == "File" {
        let field = field_of(name, "path");
        let Some(path) = keys.string("path")? else {
            return Err(StorageError::config(
                field,
                format!("{label} (File): missing \"path\": give the absolute folder path"),
            ));
        };
        return parse_file_path(&path, &field, &label).map(SandboxConfig::File);
    }
    parse_s3(&keys, mode).map(|c| SandboxConfig::S3(Box::new(c)))
}

fn parse_file_path(path: &str, field: &str, label: &str) -> StorageResult<FileConfig> {
    if !path.starts_with('/') {
        return Err(StorageError::config(
            field,
            format!(
                "{label} (File): path '{path}' is not absolute: give the full folder path, \
                 starting with '/'"
            ),
        ));
    }
    if path.contains('\0') {
        return Err(StorageError::config(
            field,
            format!("{label} (File): path must not contain NUL"),
        ));
    }
    check_placeholders(path, field, label)?;
    Ok(FileConfig {
        path: path.to_string(),
    })
}

/// Typed access to the keys of one sandbox object, with errors that name the key path.
struct Keys<'a> {
    name: &'a str,
    label: &'a str,
    object: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn field(&self, key: &str) -> String {
        field_of(self.name, key)
    }

    fn error(&self, key: &str, message: impl std::fmt::Display) -> StorageError {
        StorageError::config(self.field(key), format!("{}: {message}", self.label))
    }

    /// A string option: absent, `null` and `""` mean "not set".
    fn string(&self, key: &str) -> StorageResult<Option<String>> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(
                key,
                format!("\"{key}\" must be a string, not {}", json_type(other)),
            )),
        }
    }

    /// A boolean option: absent and `null` mean "not set".
    fn boolean(&self, key: &str) -> StorageResult<Option<bool>> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                key,
                format!(
                    "\"{key}\" must be a boolean (true or false), not {}",
                    json_type(other)
                ),
            )),
        }
    }

    fn scheme(&self, key: &str, default: Scheme) -> StorageResult<Scheme> {
        match self.string(key)? {
            None => Ok(default),
            Some(text) => Scheme::parse(&text).ok_or_else(|| {
                self.error(
                    key,
                    format!("\"{key}\" is '{text}': it must be \"http\" or \"https\""),
                )
            }),
        }
    }

    fn port(&self, key: &str) -> StorageResult<Option<u16>> {
        let bad = |shown: String| {
            self.error(
                key,
                format!("\"{key}\" is {shown}: it must be a whole number from 1 to 65535"),
            )
        };
        let number = match self.object.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad(format!("'{s}'")))?,
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad(n.to_string()))?,
            Some(other) => return Err(bad(json_type(other).to_string())),
        };
        match u16::try_from(number) {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(bad(number.to_string())),
        }
    }

    fn secret(&self, key: &str) -> StorageResult<Option<Secret>> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(Secret(s.clone()))),
            // Never echo the value: it may be a secret typed in the wrong shape.
            Some(other) => Err(self.error(
                key,
                format!("\"{key}\" must be a string, not {}", json_type(other)),
            )),
        }
    }
}

fn parse_s3(keys: &Keys<'_>, mode: ParseMode) -> StorageResult<S3Config> {
    let label = keys.label;
    let mut config = S3Config::new(String::new());

    config.bucket_name = keys.string("bucketName")?.ok_or_else(|| {
        keys.error(
            "bucketName",
            "missing \"bucketName\": name the bucket (it must already exist)",
        )
    })?;
    if config.bucket_name.contains('/') || config.bucket_name.trim() != config.bucket_name {
        return Err(keys.error(
            "bucketName",
            format!(
                "\"bucketName\" '{}' is not a bucket name: give the name alone, without '/', \
                 spaces or a prefix (put the prefix in \"path\")",
                config.bucket_name
            ),
        ));
    }
    if let Some(path) = keys.string("path")? {
        let field = keys.field("path");
        check_placeholders(&path, &field, label)?;
        config.path = normalise_prefix(&path, &field, label)?;
    }
    if let Some(region) = keys.string("region")? {
        config.region = region;
    }
    config.access_key_id = keys.string("accessKeyId")?;
    config.secret_key = keys.secret("secretKey")?;
    config.session_token = keys.secret("sessionToken")?;
    config.scheme = keys.scheme("scheme", Scheme::Https)?;
    config.endpoint_override = keys.string("endpointOverride")?;
    config.proxy_scheme = keys.scheme("proxyScheme", Scheme::Http)?;
    config.proxy_host = keys.string("proxyHost")?;
    config.proxy_port = keys.port("proxyPort")?;
    config.proxy_user_name = keys.string("proxyUserName")?;
    config.proxy_password = keys.secret("proxyPassword")?;
    if let Some(verify) = keys.boolean("verifySSL")? {
        config.verify_ssl = verify;
    }
    config.ca_path = keys.string("caPath")?;
    config.ca_file = keys.string("caFile")?;
    config.force_path_style = keys.boolean("forcePathStyle")?;

    if config.access_key_id.is_none() {
        for key in ["secretKey", "sessionToken"] {
            if keys
                .object
                .get(key)
                .is_some_and(|v| !v.is_null() && v != "")
            {
                return Err(keys.error(
                    key,
                    format!(
                        "\"{key}\" is set but \"accessKeyId\" is not: give the access key id \
                         that goes with it"
                    ),
                ));
            }
        }
    } else if config.secret_key.is_none() {
        return Err(keys.error(
            "secretKey",
            "\"accessKeyId\" is set but \"secretKey\" is not: give the secret key that goes \
             with it (or neither, for anonymous access)",
        ));
    }
    match (&config.proxy_user_name, &config.proxy_password) {
        (Some(_), None) => {
            return Err(keys.error(
                "proxyPassword",
                "\"proxyUserName\" is set but \"proxyPassword\" is not: give both or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(keys.error(
                "proxyUserName",
                "\"proxyPassword\" is set but \"proxyUserName\" is not: give both or neither",
            ))
        }
        _ => {}
    }
    if config.proxy_host.is_none() {
        for (key, set) in [
            ("proxyPort", config.proxy_port.is_some()),
            ("proxyUserName", config.proxy_user_name.is_some()),
        ] {
            if set {
                return Err(keys.error(
                    key,
                    format!("\"{key}\" is set but \"proxyHost\" is not: give the proxy's host"),
                ));
            }
        }
    }
    if let Some(endpoint) = &config.endpoint_override {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        let bad_scheme = rest.is_none() && endpoint.contains("://");
        if bad_scheme || endpoint.chars().any(char::is_whitespace) || rest == Some("") {
            return Err(keys.error(
                "endpointOverride",
                format!(
                    "\"endpointOverride\" '{endpoint}' is not host[:port] or an http(s) URL \
                     (like \"minio.local:9000\" or \"https://s3.example.com\")"
                ),
            ));
        }
    }
    if mode == ParseMode::New {
        if let Some(file) = &config.ca_file {
            let readable = std::fs::metadata(file).is_ok_and(|m| m.is_file())
                && std::fs::File::open(file).is_ok();
            if !readable {
                return Err(keys.error(
                    "caFile",
                    format!(
                        "\"caFile\" '{file}' is not a readable file on the server: give the \
                         path of a PEM bundle the server can read"
                    ),
                ));
            }
        }
        if let Some(dir) = &config.ca_path {
            if std::fs::read_dir(dir).is_err() {
                return Err(keys.error(
                    "caPath",
                    format!(
                        "\"caPath\" '{dir}' is not a readable folder on the server: give a \
                         folder of PEM certificates the server can read"
                    ),
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses `{"media": sandbox}` and returns the error.
    fn media_error(sandbox: Value) -> (String, String) {
        match Mapping::parse(&json!({ "media": sandbox })) {
            Err(StorageError::InvalidConfig { field, message }) => (field, message),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    fn s3(extra: Value) -> Value {
        let mut base = json!({"type": "S3", "bucketName": "bucket"});
        if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
            base.extend(extra);
        }
        base
    }

    fn s3_of(mapping: &Mapping, name: &str) -> S3Config {
        match &mapping.roots[name] {
            SandboxConfig::S3(c) => (**c).clone(),
            other => panic!("not S3: {other:?}"),
        }
    }

    #[test]
    fn seed_example_parses() {
        let mapping = Mapping::parse(&json!({
            "": {
                "type": "S3",
                "bucketName": "sandboxBucket",
                "path": "/",
                "region": "us-west-2",
                "accessKeyId": "SECRETKEYID",
                "secretKey": "secretkey"
            }
        }))
        .unwrap();
        let c = s3_of(&mapping, "");
        assert_eq!(c.bucket_name, "sandboxBucket");
        assert_eq!(c.path, "");
        assert_eq!(c.region, "us-west-2");
        assert_eq!(c.access_key_id.as_deref(), Some("SECRETKEYID"));
        assert_eq!(c.secret_key, Some(Secret("secretkey".into())));
        assert_eq!(c.scheme, Scheme::Https);
        assert_eq!(c.proxy_scheme, Scheme::Http);
        assert!(c.verify_ssl);
        assert!(!c.effective_force_path_style());
    }

    #[test]
    fn plain_string_is_a_file_sandbox() {
        let mapping = Mapping::parse(&json!({"": "/data"})).unwrap();
        assert_eq!(
            mapping.roots[""],
            SandboxConfig::File(FileConfig {
                path: "/data".into()
            })
        );
        assert_eq!(
            mapping.to_redacted_json(),
            json!({"": {"type": "File", "path": "/data"}})
        );
        let object = Mapping::parse(&json!({"": {"type": "File", "path": "/data"}})).unwrap();
        assert_eq!(object, mapping);
        // Type names are matched without regard to case, and normalised.
        let lower = Mapping::parse(&json!({"": {"type": "file", "path": "/data"}})).unwrap();
        assert_eq!(lower, mapping);
    }

    #[test]
    fn every_s3_key_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let ca_path = dir.path().to_str().unwrap().to_string();
        let ca_file = ca_file.to_str().unwrap().to_string();
        let mapping = Mapping::parse(&json!({"media": {
            "type": "S3",
            "path": "/users/%u/",
            "bucketName": "raw",
            "region": "eu-west-1",
            "accessKeyId": "AKID",
            "secretKey": "SK",
            "sessionToken": "TOKEN",
            "scheme": "http",
            "endpointOverride": "minio.local:9000",
            "proxyScheme": "https",
            "proxyHost": "proxy.local",
            "proxyPort": 3128,
            "proxyUserName": "puser",
            "proxyPassword": "ppass",
            "verifySSL": false,
            "caPath": ca_path,
            "caFile": ca_file,
            "forcePathStyle": false
        }}))
        .unwrap();
        let c = s3_of(&mapping, "media");
        assert_eq!(c.path, "users/%u");
        assert_eq!(c.bucket_name, "raw");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(c.secret_key.as_ref().map(Secret::expose), Some("SK"));
        assert_eq!(c.session_token.as_ref().map(Secret::expose), Some("TOKEN"));
        assert_eq!(c.scheme, Scheme::Http);
        assert_eq!(c.endpoint_override.as_deref(), Some("minio.local:9000"));
        assert_eq!(c.proxy_scheme, Scheme::Https);
        assert_eq!(c.proxy_host.as_deref(), Some("proxy.local"));
        assert_eq!(c.proxy_port, Some(3128));
        assert_eq!(c.proxy_user_name.as_deref(), Some("puser"));
        assert_eq!(c.proxy_password.as_ref().map(Secret::expose), Some("ppass"));
        assert!(!c.verify_ssl);
        assert_eq!(c.ca_path.as_deref(), Some(ca_path.as_str()));
        assert_eq!(c.ca_file.as_deref(), Some(ca_file.as_str()));
        assert_eq!(c.force_path_style, Some(false));
        assert!(!c.effective_force_path_style());

        // The stored form reads back to the same mapping; the redacted one hides the secrets.
        let stored = mapping.to_stored_json();
        assert_eq!(Mapping::parse(&stored).unwrap(), mapping);
        assert_eq!(Mapping::parse_stored(&stored).unwrap(), mapping);
        let redacted = mapping.to_redacted_json();
        assert_eq!(redacted["media"]["secretKey"], REDACTED);
        assert_eq!(redacted["media"]["sessionToken"], REDACTED);
        assert_eq!(redacted["media"]["proxyPassword"], REDACTED);
        assert_eq!(redacted["media"]["accessKeyId"], "AKID");
        assert_eq!(redacted["media"]["path"], "/users/%u");
        assert_eq!(redacted["media"]["proxyPort"], 3128);
        let text = redacted.to_string();
        for secret in ["\"SK\"", "TOKEN", "ppass"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let debug = format!("{mapping:?}");
        for secret in ["\"SK\"", "TOKEN", "ppass"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn defaults_and_lenient_values() {
        let mapping = Mapping::parse(&json!({"m": s3(json!({
            "proxyHost": "p", "proxyPort": "8080", "accessKeyId": "", "sessionToken": null,
            "endpointOverride": "https://s3.example.com", "region": null
        }))}))
        .unwrap();
        let c = s3_of(&mapping, "m");
        assert_eq!(c.proxy_port, Some(8080));
        assert_eq!(c.access_key_id, None);
        assert_eq!(c.session_token, None);
        assert_eq!(c.region, DEFAULT_REGION);
        assert!(c.effective_force_path_style());
    }

    #[test]
    fn error_mapping_not_an_object() {
        for bad in [json!("/data"), json!([]), json!(null)] {
            let err = Mapping::parse(&bad).unwrap_err();
            assert!(
                matches!(&err, StorageError::InvalidConfig { field, message }
                    if field == "mapping" && message.contains("{\"\": \"/data\"}")),
                "{err:?}"
            );
        }
        let err = Mapping::parse(&json!({})).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidConfig { ref field, ref message }
            if field == "mapping" && message.contains("empty"))
        );
    }

    #[test]
    fn error_sandbox_not_a_string_or_object() {
        let (field, message) = media_error(json!(42));
        assert_eq!(field, "media");
        assert!(
            message.contains("folder path") && message.contains("\"type\""),
            "{message}"
        );
    }

    #[test]
    fn error_unknown_type() {
        let (field, message) = media_error(json!({"type": "Azure", "path": "/x"}));
        assert_eq!(field, "media.type");
        assert!(
            message.contains("'Azure'") && message.contains("File, S3"),
            "{message}"
        );
    }

    #[test]
    fn error_missing_or_wrong_type() {
        let (field, message) = media_error(json!({"path": "/x"}));
        assert_eq!(field, "media.type");
        assert!(
            message.contains("missing") && message.contains("File, S3"),
            "{message}"
        );
        let (field, message) = media_error(json!({"type": 3}));
        assert_eq!(field, "media.type");
        assert!(message.contains("must be a string"), "{message}");
    }

    #[test]
    fn error_unknown_s3_key_lists_valid_keys() {
        let (field, message) = media_error(s3(json!({"bucket": "x"})));
        assert_eq!(field, "media.bucket");
        assert!(message.contains("unknown key 'bucket'"), "{message}");
        assert!(message.contains("did you mean 'bucketName'"), "{message}");
        for key in S3_KEYS {
            assert!(message.contains(key), "{key} missing from {message}");
        }
        let (field, message) = media_error(s3(json!({"verifySsl": false})));
        assert_eq!(field, "media.verifySsl");
        assert!(message.contains("did you mean 'verifySSL'"), "{message}");
    }

    #[test]
    fn error_unknown_file_key() {
        let (field, message) =
            media_error(json!({"type": "File", "path": "/x", "bucketName": "b"}));
        assert_eq!(field, "media.bucketName");
        assert!(message.contains("valid keys are type, path"), "{message}");
    }

    #[test]
    fn error_root_sandbox_field_has_no_prefix() {
        let err = Mapping::parse(&json!({"": {"type": "S3"}})).unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidConfig { field, .. } if field == "bucketName"),
            "{err:?}"
        );
    }

    #[test]
    fn error_missing_bucket_name() {
        let (field, message) = media_error(json!({"type": "S3", "path": "/"}));
        assert_eq!(field, "media.bucketName");
        assert!(message.contains("missing \"bucketName\""), "{message}");
        let (field, _) = media_error(json!({"type": "S3", "bucketName": ""}));
        assert_eq!(field, "media.bucketName");
    }

    #[test]
    fn error_bucket_name_wrong_type_or_shape() {
        let (field, message) = media_error(json!({"type": "S3", "bucketName": 7}));
        assert_eq!(field, "media.bucketName");
        assert!(
            message.contains("must be a string, not a number"),
            "{message}"
        );
        let (field, message) = media_error(json!({"type": "S3", "bucketName": "b/prefix"}));
        assert_eq!(field, "media.bucketName");
        assert!(message.contains("\"path\""), "{message}");
    }

    #[test]
    fn error_scheme() {
        let (field, message) = media_error(s3(json!({"scheme": "ftp"})));
        assert_eq!(field, "media.scheme");
        assert!(message.contains("\"http\" or \"https\""), "{message}");
    }

    #[test]
    fn error_proxy_scheme() {
        let (field, message) = media_error(s3(json!({"proxyHost": "p", "proxyScheme": "socks5"})));
        assert_eq!(field, "media.proxyScheme");
        assert!(message.contains("\"http\" or \"https\""), "{message}");
    }

    #[test]
    fn error_proxy_port() {
        for bad in [
            json!(0),
            json!(70000),
            json!(-1),
            json!(80.5),
            json!("abc"),
            json!(true),
        ] {
            let (field, message) = media_error(s3(json!({"proxyHost": "p", "proxyPort": bad})));
            assert_eq!(field, "media.proxyPort");
            assert!(message.contains("1 to 65535"), "{message}");
        }
    }

    #[test]
    fn error_proxy_port_without_host() {
        let (field, message) = media_error(s3(json!({"proxyPort": 8080})));
        assert_eq!(field, "media.proxyPort");
        assert!(message.contains("\"proxyHost\""), "{message}");
    }

    #[test]
    fn error_proxy_user_without_password() {
        let (field, message) = media_error(s3(json!({"proxyHost": "p", "proxyUserName": "u"})));
        assert_eq!(field, "media.proxyPassword");
        assert!(message.contains("give both or neither"), "{message}");
    }

    #[test]
    fn error_proxy_password_without_user() {
        let (field, message) =
            media_error(s3(json!({"proxyHost": "p", "proxyPassword": "TOPSECRET"})));
        assert_eq!(field, "media.proxyUserName");
        assert!(message.contains("give both or neither"), "{message}");
        assert!(!message.contains("TOPSECRET"));
    }

    #[test]
    fn error_ca_file_not_readable() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            dir.path().join("missing.pem"),
            dir.path().to_path_buf(), // a folder, not a file
        ] {
            let (field, message) = media_error(s3(json!({"caFile": bad.to_str().unwrap()})));
            assert_eq!(field, "media.caFile");
            assert!(message.contains("not a readable file"), "{message}");
        }
        // A stored mapping is read back even when the file went away.
        let stored = json!({"media": s3(json!({"caFile": "/nonexistent/ca.pem"}))});
        assert!(Mapping::parse_stored(&stored).is_ok());
    }

    #[test]
    fn error_ca_path_not_readable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.pem");
        std::fs::write(&file, "x").unwrap();
        for bad in [dir.path().join("missing"), file] {
            let (field, message) = media_error(s3(json!({"caPath": bad.to_str().unwrap()})));
            assert_eq!(field, "media.caPath");
            assert!(message.contains("not a readable folder"), "{message}");
        }
    }

    #[test]
    fn error_wrong_value_types() {
        let (field, message) = media_error(s3(json!({"verifySSL": "false"})));
        assert_eq!(field, "media.verifySSL");
        assert!(message.contains("must be a boolean"), "{message}");
        let (field, message) = media_error(s3(json!({"forcePathStyle": 1})));
        assert_eq!(field, "media.forcePathStyle");
        assert!(message.contains("must be a boolean"), "{message}");
        let (field, message) = media_error(s3(json!({"region": ["us-east-1"]})));
        assert_eq!(field, "media.region");
        assert!(
            message.contains("must be a string, not an array"),
            "{message}"
        );
        // A secret of the wrong type is never echoed.
        let (field, message) = media_error(s3(json!({"accessKeyId": "A", "secretKey": 123456789})));
        assert_eq!(field, "media.secretKey");
        assert!(!message.contains("123456789"), "{message}");
    }

    #[test]
    fn error_secret_key_without_access_key_id() {
        let (field, message) = media_error(s3(json!({"secretKey": "SECRETVALUE"})));
        assert_eq!(field, "media.secretKey");
        assert!(message.contains("\"accessKeyId\""), "{message}");
        assert!(!message.contains("SECRETVALUE"));
        let (field, _) = media_error(s3(json!({"sessionToken": "T"})));
        assert_eq!(field, "media.sessionToken");
        let (field, message) = media_error(s3(json!({"accessKeyId": "A"})));
        assert_eq!(field, "media.secretKey");
        assert!(message.contains("\"secretKey\""), "{message}");
    }

    #[test]
    fn error_endpoint_override() {
        let (field, message) = media_error(s3(json!({"endpointOverride": "ftp://x"})));
        assert_eq!(field, "media.endpointOverride");
        assert!(message.contains("host[:port]"), "{message}");
    }

    #[test]
    fn error_file_path_missing_relative_or_wrong_type() {
        let (field, message) = media_error(json!({"type": "File"}));
        assert_eq!(field, "media.path");
        assert!(message.contains("missing \"path\""), "{message}");
        let (field, message) = media_error(json!("data/x"));
        assert_eq!(field, "media.path");
        assert!(message.contains("not absolute"), "{message}");
        let (field, message) = media_error(json!({"type": "File", "path": 5}));
        assert_eq!(field, "media.path");
        assert!(message.contains("must be a string"), "{message}");
    }

    #[test]
    fn error_s3_path_with_dot_segments() {
        let (field, message) = media_error(s3(json!({"path": "/a/../b"})));
        assert_eq!(field, "media.path");
        assert!(message.contains("'..'"), "{message}");
    }

    #[test]
    fn error_bad_placeholders() {
        let (field, message) = media_error(json!("/home/%x"));
        assert_eq!(field, "media.path");
        assert!(
            message.contains("'%x'") && message.contains("%%"),
            "{message}"
        );
        let (field, message) = media_error(s3(json!({"path": "/p/100%"})));
        assert_eq!(field, "media.path");
        assert!(message.contains("lone '%'"), "{message}");
    }

    #[test]
    fn virtual_names() {
        for bad in ["a/b", ".", "..", "/media", "a\nb"] {
            let err = Mapping::parse(&json!({ bad: "/data" })).unwrap_err();
            assert!(
                matches!(&err, StorageError::InvalidConfig { field, message }
                    if field == bad && message.contains("one folder name")),
                "{bad:?}: {err:?}"
            );
        }
        let mixed =
            Mapping::parse(&json!({"": "/data", "media": "/media", "other": "/o"})).unwrap();
        assert_eq!(mixed.roots.len(), 3);
    }

    #[test]
    fn placeholders_expand() {
        let mapping = Mapping::parse(&json!({
            "home": "/home/%u",
            "dom": "/data/%d/%u/100%%",
            "full": {"type": "File", "path": "/f/%f"},
            "s3": s3(json!({"path": "/users/%d/%u/"})),
        }))
        .unwrap();
        assert!(mapping.uses_placeholders());
        let alice = UserIdentity::from_login("alice@example.com");
        assert_eq!(
            alice,
            UserIdentity {
                name: "alice".into(),
                domain: "example.com".into(),
                full_name: "alice@example.com".into()
            }
        );
        let expanded = mapping.expand(&alice);
        assert_eq!(expanded.roots["home"].path(), "/home/alice");
        assert_eq!(expanded.roots["dom"].path(), "/data/example.com/alice/100%");
        assert_eq!(expanded.roots["full"].path(), "/f/alice@example.com");
        assert_eq!(expanded.roots["s3"].path(), "users/example.com/alice");
        assert!(!expanded.uses_placeholders());

        // No domain: %d is empty and the S3 prefix has no empty segment.
        let bob = UserIdentity::from_login("bob");
        assert_eq!((bob.name.as_str(), bob.domain.as_str()), ("bob", ""));
        let expanded = mapping.expand(&bob);
        assert_eq!(expanded.roots["s3"].path(), "users/bob");
        assert_eq!(expanded.roots["full"].path(), "/f/bob");

        let windows = UserIdentity::from_login("CORP\\carol");
        assert_eq!(
            (windows.name.as_str(), windows.domain.as_str()),
            ("carol", "CORP")
        );
        assert!(!Mapping::parse(&json!({"": "/data"}))
            .unwrap()
            .uses_placeholders());
        assert!(!Mapping::parse(&json!({"": "/data/100%%"}))
            .unwrap()
            .uses_placeholders());
    }

    #[test]
    fn unsafe_identities_are_refused() {
        for login in ["../evil", "a/b@x", "..", ".", "ev\nil", "@example.com"] {
            let user = UserIdentity::from_login(login);
            assert!(
                matches!(
                    user.check_path_safe(),
                    Err(StorageError::PermissionDenied(_))
                ),
                "{login:?}"
            );
        }
        assert!(UserIdentity::from_login("alice@example.com")
            .check_path_safe()
            .is_ok());
    }

    #[test]
    fn redacted_secrets_are_restored_from_the_stored_mapping() {
        let stored = Mapping::parse(&json!({"m": s3(json!({
            "accessKeyId": "A", "secretKey": "REAL", "proxyHost": "p",
            "proxyUserName": "u", "proxyPassword": "PP"
        }))}))
        .unwrap();
        let mut edited = Mapping::parse(&stored.to_redacted_json()).unwrap();
        edited.restore_secrets(Some(&stored)).unwrap();
        assert_eq!(edited, stored);
        let mut fresh = Mapping::parse(&stored.to_redacted_json()).unwrap();
        let err = fresh.restore_secrets(None).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidConfig { ref field, .. } if field == "m.secretKey")
        );
    }

    #[test]
    fn secrets_never_in_debug() {
        let mut c = S3Config::new("b");
        c.secret_key = Some(Secret("s3cr3t-key".into()));
        c.session_token = Some(Secret("s3ss10n".into()));
        c.proxy_password = Some(Secret("pr0xy".into()));
        let debug = format!("{c:?} {:?}", SandboxConfig::S3(Box::new(c.clone())));
        for secret in ["s3cr3t-key", "s3ss10n", "pr0xy"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
