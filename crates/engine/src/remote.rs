//! Calls to a receiving server's HTTPS API as the destination user: certificate pinned to the
//! destination's fingerprint, logged in once with `server.auth` (the token is reused and
//! renewed when the receiver no longer accepts it), errors classified as temporary (retry
//! later: the receiver is restarting) or final.

use crate::error::EngineError;
use serde_json::{json, Value};
use slipstream_client::{ApiClient, Auth, ClientError, Trust};
use std::sync::Mutex;
use std::time::Duration;

/// Time limit of a login or a short call.
pub const SHORT_CALL: Duration = Duration::from_secs(15);
/// Time limit of `recv.finishTransfer` (the receiver verifies every file before answering).
pub const LONG_CALL: Duration = Duration::from_secs(600);

/// The receiving server's address as a destination names it: `host[:apiPort]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port` (default port 8886).
    pub fn parse(text: &str) -> Result<Address, EngineError> {
        let bad = || {
            EngineError::invalid_param(
                "destinationAddress",
                format!("destinationAddress '{text}' is not host[:apiPort] (e.g. recv01:8886)"),
            )
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(port) => (host.to_string(), port.parse().map_err(|_| bad())?),
                None if after.is_empty() => (host.to_string(), 8886),
                None => return Err(bad()),
            }
        } else if text.matches(':').count() > 1 {
            (text.to_string(), 8886)
        } else if let Some((host, port)) = text.split_once(':') {
            (host.to_string(), port.parse().map_err(|_| bad())?)
        } else {
            (text.to_string(), 8886)
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Address { host, port })
    }
}

/// How the sending server proves who it is to the receiving server.
#[derive(Clone)]
pub enum Credentials {
    Password { user: String, password: String },
    Token(String),
}

/// True when the call may succeed later (the receiver is down or restarting, or asked for a
/// retry).
pub fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. }
        | ClientError::Timeout { .. }
        | ClientError::Protocol { .. } => true,
        ClientError::Rpc(rpc) => {
            rpc.http_status == 429
                || rpc
                    .data
                    .as_ref()
                    .and_then(|d| d.get("retryable"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
        }
        ClientError::Tls { .. } => false,
    }
}

/// A logged-in connection policy to one receiving server.
pub struct Remote {
    client: ApiClient,
    credentials: Credentials,
    /// The token from `server.auth` (password credentials).
    session: Mutex<Option<String>>,
}

impl Remote {
    /// A remote pinned to `fingerprint`.
    pub fn new(address: &Address, fingerprint: &str, credentials: Credentials) -> Remote {
        Remote {
            client: ApiClient::new(
                address.host.clone(),
                address.port,
                Trust::Fingerprint(fingerprint.to_string()),
            ),
            credentials,
            session: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<String> {
        self.session.lock().map(|s| s.clone()).unwrap_or(None)
    }

    fn store(&self, token: Option<String>) {
        if let Ok(mut session) = self.session.lock() {
            *session = token;
        }
    }

    /// Logs in (password credentials) and returns the token to use.
    async fn token(&self) -> Result<String, ClientError> {
        match &self.credentials {
            Credentials::Token(token) => Ok(token.clone()),
            Credentials::Password { user, password } => {
                if let Some(token) = self.cached() {
                    return Ok(token);
                }
                let answer = self
                    .client
                    .clone()
                    .with_timeout(SHORT_CALL)
                    .call("server.auth", json!({"user": user, "password": password}))
                    .await?;
                let token = answer
                    .get("token")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ClientError::Protocol {
                        server: self.client.server(),
                        message: "server.auth returned no token".into(),
                    })?;
                self.store(Some(token.clone()));
                Ok(token)
            }
        }
    }

    /// Calls `method` with named `params`, logging in first and once more if the receiver
    /// forgot the token.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let result = self
                .client
                .clone()
                .with_auth(Auth::Bearer(token))
                .with_timeout(timeout)
                .call(method, params.clone())
                .await;
            match result {
                Err(ClientError::Rpc(rpc))
                    if rpc.code == -32001
                        && attempt == 0
                        && matches!(self.credentials, Credentials::Password { .. }) =>
                {
                    self.store(None);
                }
                other => return other,
            }
        }
        Err(ClientError::Protocol {
            server: self.client.server(),
            message: "login refused twice".into(),
        })
    }
}

/// What `createDestination` learns when it logs in.
pub struct LoginFacts {
    pub fingerprint: String,
    pub recv_port: u16,
}

/// Connects to `address` (pinned to `fingerprint`, or trusting its certificate on first use
/// when `None`), reads its server info and logs in with `credentials`. A wrong user or password
/// is -32001 "destination login failed: ..."; an unreachable server is -32010.
pub async fn login(
    address: &Address,
    fingerprint: Option<&str>,
    credentials: &Credentials,
) -> Result<LoginFacts, EngineError> {
    let trust = match fingerprint {
        Some(f) => Trust::Fingerprint(f.to_string()),
        None => Trust::Insecure,
    };
    let client = ApiClient::new(address.host.clone(), address.port, trust).with_timeout(SHORT_CALL);
    let shown = client.server();
    let reach = |e: ClientError| match e {
        ClientError::Tls { .. } => EngineError::auth(format!("destination login failed: {e}")),
        ClientError::Rpc(rpc) => EngineError::auth(format!(
            "destination login failed: {} (check user and password for {shown})",
            rpc.message
        )),
        other => EngineError::storage(format!(
            "destination {shown} is unreachable: {other} (check destinationAddress and that \
             the receiving server runs)"
        )),
    };
    let info = client
        .call("server.getServerInfo", Value::Null)
        .await
        .map_err(reach)?;
    let seen = client.server_fingerprint().ok_or_else(|| {
        EngineError::auth(format!(
            "destination login failed: {shown} presented no certificate"
        ))
    })?;
    let recv_port = info
        .get("recvPort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            EngineError::storage(format!(
                "destination {shown} did not report its recvPort: is it a slipstream server?"
            ))
        })?;
    let pinned = ApiClient::new(
        address.host.clone(),
        address.port,
        Trust::Fingerprint(seen.clone()),
    )
    .with_timeout(SHORT_CALL);
    match credentials {
        Credentials::Password { user, password } => {
            pinned
                .call("server.auth", json!({"user": user, "password": password}))
                .await
                .map_err(reach)?;
        }
        Credentials::Token(token) => {
            pinned
                .with_auth(Auth::Bearer(token.clone()))
                .call("server.superuser", Value::Null)
                .await
                .map_err(reach)?;
        }
    }
    Ok(LoginFacts {
        fingerprint: seen,
        recv_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = |t: &str| Address::parse(t).map(|a| (a.host, a.port));
        assert_eq!(a("recv").unwrap(), ("recv".into(), 8886));
        assert_eq!(a("recv:9000").unwrap(), ("recv".into(), 9000));
        assert_eq!(a("[::1]:9000").unwrap(), ("::1".into(), 9000));
        assert_eq!(a("[::1]").unwrap(), ("::1".into(), 8886));
        assert_eq!(a("::1").unwrap(), ("::1".into(), 8886));
        for bad in ["", "h:x", "h:0", ":80", "[::1"] {
            assert_eq!(a(bad).unwrap_err().code, -32602, "{bad}");
        }
    }
}
