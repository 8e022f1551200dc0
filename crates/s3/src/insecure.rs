//! The HTTP client for `verifySSL: false`: rustls with a verifier that accepts any server
//! certificate (handshake signatures are still checked), plus the same proxy behaviour as the
//! SDK's connector (forward proxy for http, CONNECT tunnel for https, basic auth).
//!
//! The SDK's own connector has no hook for a custom verifier, hence this small client.

use crate::client::CONNECT_TIMEOUT;
use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http::{header, HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use slipstream_storage::{StorageError, StorageResult};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Accepts every server certificate; checks handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client configuration that trusts any certificate (HTTP/1.1 only).
fn insecure_tls_config() -> StorageResult<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::Backend(format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the `verifySSL: false` client. `proxy` is `scheme://host:port`; `auth` its user and
/// password.
pub(crate) fn http_client(
    proxy: Option<&str>,
    auth: Option<(String, String)>,
) -> StorageResult<SharedHttpClient> {
    let tls = insecure_tls_config()?;
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = HttpsConnector::from((tcp, tls.clone()));
    let proxy = match proxy {
        None => None,
        Some(url) => {
            let uri: Uri = url.parse().map_err(|e| {
                StorageError::config("proxyHost", format!("proxy '{url}' is not usable: {e}"))
            })?;
            let auth = match auth {
                None => None,
                Some((user, password)) => Some(basic_auth(&user, &password)?),
            };
            Some(ProxyTarget { uri, auth })
        }
    };
    let connector = Connect {
        https,
        tls,
        proxy: proxy.clone(),
    };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    Ok(SharedHttpClient::new(InsecureClient { client, proxy }))
}

/// `Basic base64(user:password)`, marked sensitive so that hyper never logs it.
fn basic_auth(user: &str, password: &str) -> StorageResult<HeaderValue> {
    let mut value = HeaderValue::try_from(format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    ))
    .map_err(|_| {
        StorageError::config(
            "proxyUserName",
            "proxyUserName/proxyPassword contain characters that cannot be sent",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Standard base64 with padding.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The proxy every request goes through.
#[derive(Clone)]
struct ProxyTarget {
    uri: Uri,
    auth: Option<HeaderValue>,
}

/// A connection: direct (or to a forward proxy), or TLS inside a CONNECT tunnel. Boxed:
/// TLS sessions are large.
enum Stream {
    Direct {
        io: Box<MaybeHttpsStream<TokioIo<TcpStream>>>,
        forward_proxy: bool,
    },
    Tunneled(Box<TunneledIo>),
}

type TunneledIo =
    TokioIo<tokio_rustls::client::TlsStream<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>>;

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            // A forward proxy must be sent absolute-form request targets.
            Stream::Direct { io, forward_proxy } => io.connected().proxy(*forward_proxy),
            Stream::Tunneled(_) => Connected::new(),
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Direct { io, .. } => Pin::new(io.as_mut()).poll_read(cx, buf),
            Stream::Tunneled(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Direct { io, .. } => Pin::new(io.as_mut()).poll_write(cx, buf),
            Stream::Tunneled(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Direct { io, .. } => Pin::new(io.as_mut()).poll_flush(cx),
            Stream::Tunneled(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Direct { io, .. } => Pin::new(io.as_mut()).poll_shutdown(cx),
            Stream::Tunneled(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connector: picks direct, forward-proxy or tunnel per destination.
#[derive(Clone)]
struct Connect {
    https: HttpsConnector<TcpConnector>,
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<ProxyTarget>,
}

impl tower_service::Service<Uri> for Connect {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut https = self.https.clone();
        let tls = self.tls.clone();
        let proxy = self.proxy.clone();
        let connect = async move {
            match proxy {
                None => Ok(Stream::Direct {
                    io: Box::new(https.call(dst).await?),
                    forward_proxy: false,
                }),
                Some(proxy) if dst.scheme() != Some(&http::uri::Scheme::HTTPS) => {
                    Ok(Stream::Direct {
                        io: Box::new(https.call(proxy.uri.clone()).await?),
                        forward_proxy: true,
                    })
                }
                Some(proxy) => {
                    let mut tunnel = Tunnel::new(proxy.uri.clone(), https);
                    if let Some(auth) = proxy.auth {
                        tunnel = tunnel.with_auth(auth);
                    }
                    let tunneled = tunnel.call(dst.clone()).await?;
                    let host = dst.host().ok_or("no host in the request URI")?;
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_string())?;
                    let tls = tokio_rustls::TlsConnector::from(tls)
                        .connect(name, TokioIo::new(tunneled))
                        .await?;
                    Ok(Stream::Tunneled(Box::new(TokioIo::new(tls))))
                }
            }
        };
        Box::pin(async move {
            // The TCP connect has its own bound; this one covers proxy and TLS handshakes.
            match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await {
                Ok(result) => result,
                Err(_) => Err(BoxError::from(format!(
                    "connection not established within {} s",
                    (CONNECT_TIMEOUT * 2).as_secs()
                ))),
            }
        })
    }
}

/// The SDK-facing side: converts requests and responses, adds proxy credentials to requests
/// that go to a forward proxy.
#[derive(Clone)]
struct InsecureClient {
    client: hyper_util::client::legacy::Client<Connect, SdkBody>,
    proxy: Option<ProxyTarget>,
}

impl std::fmt::Debug for InsecureClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No proxy credentials here, ever.
        f.debug_struct("InsecureClient")
            .field("proxied", &self.proxy.is_some())
            .finish()
    }
}

impl HttpClient for InsecureClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for InsecureClient {
    fn call(&self, request: aws_smithy_runtime_api::http::Request) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        if let Some(ProxyTarget {
            auth: Some(auth), ..
        }) = &self.proxy
        {
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
                request
                    .headers_mut()
                    .insert(header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        let response = self.client.request(request);
        HttpConnectorFuture::new(async move {
            match response.await {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

/// Sorts client errors the way the SDK's own connector does, so that retries behave alike:
/// connect failures, closed or half-read connections (a proxy that closed a pooled
/// connection) and I/O errors are transient I/O errors.
fn classify(e: hyper_util::client::legacy::Error) -> ConnectorError {
    let mut transient = e.is_connect();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return ConnectorError::timeout(e.into());
            }
            transient |= h.is_closed() || h.is_canceled() || h.is_incomplete_message();
        }
        transient |= err.is::<io::Error>();
        source = err.source();
    }
    if transient {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn proxy_credentials_are_not_in_debug_output() {
        let client = http_client(
            Some("http://127.0.0.1:3128"),
            Some(("u".into(), "hunter2".into())),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
