//! Turning SDK failures into [`StorageError::Backend`] messages that name the cause and the
//! fix: unknown key, wrong secret, expired or invalid session token, missing bucket, wrong
//! region, untrusted certificate, proxy refusal, unreachable endpoint. Each message keeps the
//! S3 error code and text (or the transport error) in parentheses.

use crate::client::Target;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use slipstream_storage::StorageError;
use std::error::Error;

/// What an S3 error response said, as far as it can be read.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServiceFailure {
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
    /// From the `x-amz-bucket-region` header, or a `<Region>` element in the body.
    pub bucket_region: Option<String>,
}

impl ServiceFailure {
    fn from_response(
        raw: &HttpResponse,
        code: Option<&str>,
        message: Option<&str>,
    ) -> ServiceFailure {
        let body = raw
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let bucket_region = raw
            .headers()
            .get("x-amz-bucket-region")
            .map(str::to_string)
            .or_else(|| xml_element(&body, "Region"))
            .filter(|r| !r.is_empty());
        ServiceFailure {
            status: raw.status().as_u16(),
            code: code
                .map(str::to_string)
                .or_else(|| xml_element(&body, "Code")),
            message: message
                .map(str::to_string)
                .or_else(|| xml_element(&body, "Message")),
            bucket_region,
        }
    }

    /// `S3 Code: text` (or the HTTP status when the answer had no error document).
    pub(crate) fn detail(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(text)) => format!("S3 {code}: {text}"),
            (Some(code), None) => format!("S3 {code}, HTTP {}", self.status),
            (None, Some(text)) => format!("HTTP {}: {text}", self.status),
            (None, None) => format!("HTTP {}", self.status),
        }
    }
}

/// The text of the first `<name>...</name>` in a small XML document.
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_string())
}

/// The S3 status of a failed call, when the service answered (for `NotFound` handling).
pub(crate) fn service_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    match err {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        SdkError::ResponseError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}

/// What the service answered, when it answered at all.
pub(crate) fn failure_of<E>(err: &SdkError<E, HttpResponse>) -> Option<ServiceFailure>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(e) => Some(ServiceFailure::from_response(
            e.raw(),
            e.err().code(),
            e.err().message(),
        )),
        SdkError::ResponseError(e) => Some(ServiceFailure::from_response(e.raw(), None, None)),
        _ => None,
    }
}

/// True when the session token has expired (`ExpiredToken`, `TokenRefreshRequired`).
pub(crate) fn is_expired_token(failure: &ServiceFailure) -> bool {
    matches!(
        failure.code.as_deref(),
        Some("ExpiredToken" | "TokenRefreshRequired")
    )
}

/// True for failures worth another attempt: no answer in time, a broken connection, a 5xx,
/// throttling (429, SlowDown) and S3's RequestTimeout.
pub(crate) fn is_retryable<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            failure_of(err).is_some_and(|f| {
                f.status >= 500
                    || f.status == 429
                    || matches!(
                        f.code.as_deref(),
                        Some("SlowDown" | "RequestTimeout" | "InternalError")
                    )
            })
        }
        _ => false,
    }
}

/// The full message for a failed call.
pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>, target: &Target) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
{
    if !matches!(err, SdkError::ServiceError(_)) && t_is_ambient(target) {
        let text = chain_text(err);
        if text.contains("loading credentials") || text.contains("no credentials") {
            return format!(
                "no accessKeyId/secretKey are set and the server has no AWS credentials of its \
                 own: set accessKeyId and secretKey ({text})"
            );
        }
    }
    match err {
        SdkError::ServiceError(e) => {
            let failure = ServiceFailure::from_response(e.raw(), e.err().code(), e.err().message());
            service_message(&failure, target)
        }
        SdkError::ResponseError(e) => {
            let failure = ServiceFailure::from_response(e.raw(), None, None);
            service_message(&failure, target)
        }
        SdkError::TimeoutError(_) => format!(
            "no answer from {} in time: check that the endpoint is up and reachable{} (timeout)",
            target.endpoint_label,
            via_proxy(target)
        ),
        SdkError::DispatchFailure(e) => {
            let timeout = e.is_timeout();
            transport_message(err, timeout, target)
        }
        other => format!("S3 request failed: {}", chain_text(other)),
    }
}

/// True when the sandbox uses the server's own credentials (no keys in the mapping).
fn t_is_ambient(target: &Target) -> bool {
    target.access_key_id.as_deref().is_none_or(str::is_empty)
}

/// A " through proxy X" suffix.
fn via_proxy(target: &Target) -> String {
    match &target.proxy {
        Some(p) => format!(" (through proxy {p})"),
        None => String::new(),
    }
}

/// Messages for answers from the service (or from a forward proxy).
pub(crate) fn service_message(f: &ServiceFailure, t: &Target) -> String {
    let detail = f.detail();
    let bucket = &t.bucket;
    let key = t.access_key_id.as_deref().unwrap_or("(server credentials)");
    // 407 is the standard answer; some proxies (tinyproxy) answer 401 to wrong credentials.
    // S3 itself never answers 401 without an error code.
    if f.status == 407 || (f.status == 401 && f.code.is_none() && t.proxy.is_some()) {
        return proxy_credentials_message(f.status, t, &detail);
    }
    let code = f.code.as_deref().unwrap_or("");
    match code {
        "InvalidAccessKeyId" if t.has_session_token => format!(
            "the session token is invalid or does not belong to access key '{key}': \
             get fresh temporary credentials and set accessKeyId, secretKey and sessionToken together ({detail})"
        ),
        "InvalidAccessKeyId" => format!(
            "access key '{key}' is not known to {}: check accessKeyId ({detail})",
            t.endpoint_label
        ),
        "SignatureDoesNotMatch" => format!(
            "the secret key does not match access key '{key}': check secretKey ({detail})"
        ),
        "ExpiredToken" | "TokenRefreshRequired" => format!(
            "the session token has expired: get fresh temporary credentials and set \
             accessKeyId, secretKey and sessionToken ({detail})"
        ),
        "InvalidToken" | "InvalidSecurity" => format!(
            "the session token is invalid: check sessionToken (it must be the one issued with \
             accessKeyId and secretKey) ({detail})"
        ),
        "NoSuchBucket" => format!(
            "bucket '{bucket}' does not exist at {}; create it first (or fix bucketName) ({detail})",
            t.endpoint_label
        ),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException"
        | "Redirect" | "TemporaryRedirect" => region_message(f, t, &detail),
        _ if matches!(f.status, 301 | 307) => region_message(f, t, &detail),
        "AccessDenied" | "AllAccessDisabled" => format!(
            "access denied to bucket '{bucket}' for key '{key}': grant it s3:ListBucket, \
             s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket and prefix ({detail})"
        ),
        "InvalidBucketName" => {
            format!("bucketName '{bucket}' is not a valid bucket name ({detail})")
        }
        _ if f.status == 403 && f.code.is_none() => format!(
            "access to bucket '{bucket}' was refused (403) for key '{key}': check accessKeyId, \
             secretKey, sessionToken and the key's permissions ({detail})"
        ),
        _ if f.status == 404 && f.code.is_none() => format!(
            "bucket '{bucket}' was not found at {}; create it first (or fix bucketName) ({detail})",
            t.endpoint_label
        ),
        _ => format!("S3 error from {} ({detail})", t.endpoint_label),
    }
}

/// The proxy turned the credentials down (`status` 407, or 401 from some proxies).
pub(crate) fn proxy_credentials_message(status: u16, t: &Target, detail: &str) -> String {
    format!(
        "proxy refused the credentials ({status}): check proxyUserName/proxyPassword ({} answered {detail})",
        t.proxy.as_deref().unwrap_or("the proxy")
    )
}

/// Wrong region: name the right one when the answer tells it.
fn region_message(f: &ServiceFailure, t: &Target, detail: &str) -> String {
    match &f.bucket_region {
        Some(region) if *region != t.region => format!(
            "bucket '{}' is in region {region}, not {}: set region ({detail})",
            t.bucket, t.region
        ),
        _ => format!(
            "bucket '{}' is not served by {} for region {}: set region to the bucket's region, \
             or endpointOverride to its endpoint ({detail})",
            t.bucket, t.endpoint_label, t.region
        ),
    }
}

/// Messages for failures below HTTP: TLS, proxy tunnel, TCP, DNS, timeouts.
fn transport_message(err: &(dyn Error + 'static), timeout: bool, t: &Target) -> String {
    let text = chain_text(err);
    let endpoint = &t.endpoint_label;
    if let Some(tls) = chain(err).find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return tls_message(tls, t, &text);
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("proxy authorization required") {
        return proxy_credentials_message(407, t, &format!("CONNECT to {endpoint} with 407"));
    }
    if lower.contains("tunnel error: unsuccessful") {
        return format!(
            "proxy {} refused to open a tunnel to {endpoint}: check proxyUserName/proxyPassword \
             and that the proxy allows CONNECT to this host and port ({text})",
            t.proxy.as_deref().unwrap_or("")
        );
    }
    let io_kind = chain(err)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let place = match &t.proxy {
        Some(p) => format!("proxy {p} (for {endpoint})"),
        None => endpoint.to_string(),
    };
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused)
        || lower.contains("connection refused")
    {
        return format!(
            "endpoint unreachable: {place} refused the connection: check endpointOverride, scheme{} and that the server is running ({text})",
            if t.proxy.is_some() { ", proxyHost, proxyPort" } else { "" }
        );
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return format!(
            "endpoint unreachable: the host of {place} cannot be resolved: check endpointOverride{} ({text})",
            if t.proxy.is_some() { " and proxyHost" } else { "" }
        );
    }
    if timeout
        || io_kind == Some(std::io::ErrorKind::TimedOut)
        || lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("not established within")
    {
        return format!(
            "endpoint unreachable: no connection to {place} within the time limit: check the address, port and firewall ({text})"
        );
    }
    format!("cannot reach {place}: {text}")
}

fn tls_message(tls: &rustls::Error, t: &Target, text: &str) -> String {
    use rustls::CertificateError as C;
    let endpoint = &t.endpoint_label;
    match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)
        | rustls::Error::InvalidCertificate(C::Other(_)) => format!(
            "TLS: certificate not trusted: set caFile/caPath, or verifySSL false ({endpoint}: {tls})"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "TLS: the certificate of {endpoint} is not valid for that host name: use the name in \
             the certificate in endpointOverride, or verifySSL false ({tls})"
        ),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => format!(
            "TLS: the certificate of {endpoint} is expired or not yet valid: renew it, or verifySSL false ({tls})"
        ),
        rustls::Error::InvalidCertificate(_) => format!(
            "TLS: certificate of {endpoint} rejected: set caFile/caPath, or verifySSL false ({tls})"
        ),
        _ => format!(
            "TLS handshake with {endpoint} failed: if the endpoint speaks plain HTTP, set scheme http \
             ({text})"
        ),
    }
}

/// Every error in the chain, also looking inside `io::Error` payloads (which `source()` skips).
fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
        None => e.source(),
    })
}

/// The chain's messages joined with ": ", repeats dropped.
pub(crate) fn chain_text(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err) {
        let s = e.to_string();
        if s.is_empty() || parts.last().is_some_and(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

/// A [`StorageError::Backend`] for `what` ("listing '/a'") failing with `err`.
pub(crate) fn backend_error<E>(
    what: &str,
    err: &SdkError<E, HttpResponse>,
    t: &Target,
) -> StorageError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    StorageError::Backend(format!("{what}: {}", describe(err, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            bucket: "raw".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            endpoint_label: "http://127.0.0.1:9".into(),
            access_key_id: Some("AKID".into()),
            has_session_token: false,
            proxy: None,
            force_path_style: true,
        }
    }

    fn failure(status: u16, code: &str) -> ServiceFailure {
        ServiceFailure {
            status,
            code: Some(code.into()),
            message: Some("text".into()),
            bucket_region: None,
        }
    }

    #[test]
    fn region_is_named() {
        let mut f = failure(301, "PermanentRedirect");
        f.bucket_region = Some("eu-west-1".into());
        let m = service_message(&f, &target());
        assert!(
            m.starts_with("bucket 'raw' is in region eu-west-1, not us-east-1: set region"),
            "{m}"
        );
        assert!(m.contains("S3 PermanentRedirect: text"), "{m}");
    }

    #[test]
    fn invalid_key_with_token_blames_the_token() {
        let mut t = target();
        let f = failure(403, "InvalidAccessKeyId");
        assert!(service_message(&f, &t).contains("check accessKeyId"));
        t.has_session_token = true;
        assert!(service_message(&f, &t).contains("session token is invalid"));
    }

    #[test]
    fn xml_elements_are_read() {
        let body = "<Error><Code>AuthorizationHeaderMalformed</Code><Message>m</Message><Region>ap-south-1</Region></Error>";
        assert_eq!(xml_element(body, "Region").as_deref(), Some("ap-south-1"));
        assert_eq!(xml_element(body, "Nope"), None);
    }
}
