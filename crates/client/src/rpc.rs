//! One JSON-RPC 2.0 call over HTTPS: connect, check the certificate, POST `/rpc`, decode. A
//! client (and its clones) keeps its last connection for a few seconds and reuses it, so a
//! sequence of calls (a transfer's login and openTransfer) pays the TCP and TLS handshakes once:
//! three round trips per call on a 100 ms path otherwise.

use crate::tls::{client_config, remember_first_use, FingerprintVerifier, Trust};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How the client proves who it is.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials (only `server.getServerInfo` answers).
    #[default]
    None,
    /// HTTP Basic with a user name and password.
    Basic { user: String, password: String },
    /// A token from `server.auth`.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ********)"),
            Auth::Bearer(_) => f.write_str("Bearer(********)"),
        }
    }
}

/// An error object the server returned.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    /// The HTTP status of the response (401 for failed logins, 429 when throttled).
    pub http_status: u16,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a JSON-RPC error.
    #[error("{}", .0.message)]
    Rpc(RpcError),
    /// The server could not be reached.
    #[error("cannot connect to {server}: {message}")]
    Connect { server: String, message: String },
    /// TLS failed, e.g. the certificate does not match the pinned fingerprint.
    #[error("TLS with {server} failed: {message}")]
    Tls { server: String, message: String },
    /// The answer was not a JSON-RPC response.
    #[error("bad response from {server}: {message}")]
    Protocol { server: String, message: String },
    /// No answer in time.
    #[error("no answer from {server} within {seconds} s")]
    Timeout { server: String, seconds: u64 },
}

impl ClientError {
    /// The JSON-RPC error, if that is what this is.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            ClientError::Rpc(e) => Some(e),
            _ => None,
        }
    }
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    host: String,
    port: u16,
    trust: Trust,
    auth: Auth,
    timeout: Duration,
    next_id: Arc<AtomicU64>,
    /// The certificate fingerprint the server presented on the last successful handshake.
    seen_fingerprint: Arc<Mutex<Option<String>>>,
    /// The last connection and when its last call ended, for the next call to reuse. A call
    /// takes it out, so concurrent calls each get their own connection.
    idle: Arc<Mutex<Option<IdleConnection>>>,
}

/// An HTTP/1 connection that finished a call.
#[derive(Debug)]
struct IdleConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A connection idle longer than this is not reused (servers close idle connections, and a
/// request sent just as one does would fail).
const REUSE_IDLE: Duration = Duration::from_secs(5);

impl ApiClient {
    /// A client for `host:port` that checks the server certificate with `trust`.
    pub fn new(host: impl Into<String>, port: u16, trust: Trust) -> Self {
        ApiClient {
            host: host.into(),
            port,
            trust,
            auth: Auth::None,
            timeout: Duration::from_secs(600),
            next_id: Arc::new(AtomicU64::new(1)),
            seen_fingerprint: Arc::new(Mutex::new(None)),
            idle: Arc::new(Mutex::new(None)),
        }
    }

    /// The same client with other credentials.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The same client with another time limit per call (default 10 minutes, as
    /// `getRequestResult` waits for the request).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The certificate fingerprint (lowercase hex SHA-256) the server presented on the last
    /// successful TLS handshake of this client or its clones; `None` before any. Lets a caller
    /// that trusted a server on first use (or with `Trust::Insecure`) pin it afterwards.
    pub fn server_fingerprint(&self) -> Option<String> {
        self.seen_fingerprint
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or(None)
    }

    /// `host:port`, as used in messages and in the known-servers store.
    pub fn server(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Calls `method` with `params` (an object for named params, an array for positional ones,
    /// or `Value::Null` for none) and returns the result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            request["params"] = params;
        }
        let body = serde_json::to_vec(&request).map_err(|e| self.protocol(e.to_string()))?;
        let (status, response) = self.post(body).await?;
        let response: Value = serde_json::from_slice(&response)
            .map_err(|e| self.protocol(format!("HTTP {status}, body is not JSON: {e}")))?;
        if let Some(error) = response.get("error") {
            return Err(ClientError::Rpc(RpcError {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
                data: error.get("data").cloned(),
                http_status: status,
            }));
        }
        match response.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(self.protocol("response has neither result nor error".into())),
        }
    }

    /// Sends a raw body to `/rpc` and returns the HTTP status and body (for tests of malformed
    /// requests).
    pub async fn post(&self, body: Vec<u8>) -> Result<(u16, Vec<u8>), ClientError> {
        let server = self.server();
        let seconds = self.timeout.as_secs();
        tokio::time::timeout(self.timeout, self.post_inner(body))
            .await
            .map_err(|_| ClientError::Timeout { server, seconds })?
    }

    async fn post_inner(&self, body: Vec<u8>) -> Result<(u16, Vec<u8>), ClientError> {
        let server = self.server();
        let reusable = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.take())
            .filter(|idle| idle.since.elapsed() < REUSE_IDLE && !idle.sender.is_closed());
        let mut sender = match reusable {
            Some(mut idle) => match idle.sender.ready().await {
                Ok(()) => idle.sender,
                Err(_) => self.connect(&server).await?,
            },
            None => self.connect(&server).await?,
        };
        let mut request = hyper::Request::post("/rpc")
            .header(hyper::header::HOST, server.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        match &self.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request = request.header(hyper::header::AUTHORIZATION, format!("Basic {encoded}"));
            }
            Auth::Bearer(token) => {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            *idle = Some(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
        Ok((status, bytes.to_vec()))
    }

    /// A new connection: TCP, TLS with the certificate check, HTTP/1 handshake.
    async fn connect(
        &self,
        server: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let server = server.to_string();
        let expected = match &self.trust {
            Trust::Insecure => None,
            Trust::Fingerprint(f) => Some(f.clone()),
            Trust::FirstUse(store) => store.get(&server),
        };
        let verifier = FingerprintVerifier::new(expected);
        let connector = TlsConnector::from(Arc::new(client_config(verifier.clone())));

        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| ClientError::Connect {
            server: server.clone(),
            message: "timed out after 10 s".into(),
        })?
        .map_err(|e| ClientError::Connect {
            server: server.clone(),
            message: e.to_string(),
        })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.trim_matches(|c| c == '[' || c == ']'))
            .map_err(|e| ClientError::Connect {
                server: server.clone(),
                message: format!("bad host name: {e}"),
            })?
            .to_owned();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.tls_error(e.to_string()))?;
        remember_first_use(&self.trust, &server, &verifier);
        if let (Ok(mut seen), Some(fingerprint)) = (self.seen_fingerprint.lock(), verifier.seen()) {
            *seen = Some(fingerprint);
        }

        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            server: self.server(),
            message,
        }
    }

    fn tls_error(&self, message: String) -> ClientError {
        let hint = match &self.trust {
            Trust::FirstUse(store) if message.contains("does not match") => format!(
                ": the server's certificate changed since it was first trusted; if that is \
                 expected, remove its entry from {} or pass --fingerprint",
                store.path().display()
            ),
            Trust::Fingerprint(_) if message.contains("does not match") => {
                ": check --fingerprint against the server's getServerInfo".to_string()
            }
            _ => String::new(),
        };
        ClientError::Tls {
            server: self.server(),
            message: format!("{message}{hint}"),
        }
    }
}
