//! Destinations: `send.createDestination` (logs in to the receiving server at once and pins its
//! certificate), `getDestination(s)`, `deleteDestination`. The password (or token) is kept for
//! later logins and is never returned or logged.

use crate::error::EngineError;
use crate::params::{now_us, Params};
use crate::remote::{self, Address, Credentials, Remote};
use crate::{Caller, Engine};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

/// A destination row (with its secret; never serialised as is).
#[derive(Clone)]
pub struct DestinationRow {
    pub id: i64,
    pub owner: String,
    pub address: String,
    pub host: String,
    pub api_port: u16,
    pub user: String,
    password: Option<String>,
    token: Option<String>,
    pub send_rate_max: Option<u64>,
    pub fingerprint: String,
    pub destination_ip: Option<String>,
    pub destination_port: Option<u16>,
    pub last_error: Option<i64>,
    pub last_error_message: Option<String>,
}

impl DestinationRow {
    pub fn api_address(&self) -> Address {
        Address {
            host: self.host.clone(),
            port: self.api_port,
        }
    }

    pub fn credentials(&self) -> Credentials {
        match (&self.password, &self.token) {
            (Some(password), _) => Credentials::Password {
                user: self.user.clone(),
                password: password.clone(),
            },
            (None, Some(token)) => Credentials::Token(token.clone()),
            (None, None) => Credentials::Token(String::new()),
        }
    }

    /// A client for the receiving server, logged in as the destination user.
    pub fn remote(&self) -> Remote {
        Remote::new(&self.api_address(), &self.fingerprint, self.credentials())
    }

    fn to_json(&self, engine: &Engine) -> Result<Value, EngineError> {
        let queued: i64 = engine.db.conn().query_row(
            "SELECT COUNT(*) FROM transfers WHERE destination_id = ?1
             AND status IN ('pending', 'inProgress')",
            [self.id],
            |r| r.get(0),
        )?;
        let (state, rtt) = engine.sending.connection_state(self.id);
        Ok(json!({
            "destinationId": self.id.to_string(),
            "destinationAddress": self.address,
            "user": self.user,
            "destinationIP": self.destination_ip,
            "destinationPort": self.destination_port,
            "encryptedConnectionState": state,
            "sendRateMax": self.send_rate_max,
            "numTransfersQueued": queued,
            "lastError": self.last_error,
            "lastErrorMessage": self.last_error_message,
            "roundTripTimeMs": rtt,
            "owner": self.owner,
            "fingerprint": self.fingerprint,
        }))
    }
}

/// The destination `id`, whoever owns it.
pub fn load(engine: &Engine, id: i64) -> Result<Option<DestinationRow>, EngineError> {
    Ok(engine
        .db
        .conn()
        .query_row(
            "SELECT id, owner, address, host, api_port, user, password, token, send_rate_max,
                    fingerprint, destination_ip, destination_port, last_error, last_error_message
             FROM destinations WHERE id = ?1",
            [id],
            |r| {
                Ok(DestinationRow {
                    id: r.get(0)?,
                    owner: r.get(1)?,
                    address: r.get(2)?,
                    host: r.get(3)?,
                    api_port: r.get(4)?,
                    user: r.get(5)?,
                    password: r.get(6)?,
                    token: r.get(7)?,
                    send_rate_max: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                    fingerprint: r.get(9)?,
                    destination_ip: r.get(10)?,
                    destination_port: r.get(11)?,
                    last_error: r.get(12)?,
                    last_error_message: r.get(13)?,
                })
            },
        )
        .optional()?)
}

/// The destination `id` if `caller` may see it; else -32004.
pub fn visible(engine: &Engine, id: i64, caller: &Caller) -> Result<DestinationRow, EngineError> {
    match load(engine, id)? {
        Some(row) if row.owner == caller.user || caller.superuser => Ok(row),
        _ => Err(EngineError::not_found(format!(
            "destination '{id}' does not exist (or is not yours): see send.getDestinations"
        ))),
    }
}

/// Records the last error of a destination (shown as lastError / lastErrorMessage).
pub fn record_error(engine: &Engine, id: i64, code: i64, message: &str) {
    let result = engine.db.conn().execute(
        "UPDATE destinations SET last_error = ?2, last_error_message = ?3 WHERE id = ?1",
        params![id, code, message],
    );
    if let Err(error) = result {
        tracing::warn!(destination = id, %error, "cannot record a destination error");
    }
}

/// `send.createDestination(destinationAddress, user, password, token, sendRateMax, fingerprint)`.
pub async fn create(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let address_text = p.string("destinationAddress")?;
    let address = Address::parse(&address_text)?;
    let user = p.string("user")?;
    let password = p.opt_string("password")?;
    let token = p.opt_string("token")?;
    let credentials = match (&password, &token) {
        (Some(password), _) => Credentials::Password {
            user: user.clone(),
            password: password.clone(),
        },
        (None, Some(token)) => Credentials::Token(token.clone()),
        (None, None) => {
            return Err(EngineError::invalid_param(
                "password",
                "pass the destination user's password (or a token from its server.auth)",
            ))
        }
    };
    let send_rate_max = p.opt_u64("sendRateMax")?;
    let fingerprint = match p.opt_string("fingerprint")? {
        None => None,
        Some(text) => Some(
            slipstream_client::normalize_fingerprint(&text).ok_or_else(|| {
                EngineError::invalid_param(
                "fingerprint",
                "fingerprint must be the 64 hex digits of the receiver's certificateFingerprint \
                 (colons allowed)",
            )
            })?,
        ),
    };
    let facts = remote::login(&address, fingerprint.as_deref(), &credentials).await?;
    let ip = tokio::net::lookup_host((address.host.as_str(), address.port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|a| a.ip().to_string());
    let id = {
        let conn = engine.db.conn();
        conn.execute(
            "INSERT INTO destinations (owner, address, host, api_port, user, password, token,
                 send_rate_max, fingerprint, destination_ip, destination_port, created_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                caller.user,
                address_text,
                address.host,
                address.port,
                user,
                password,
                token,
                send_rate_max.map(|v| v as i64),
                facts.fingerprint,
                ip,
                facts.recv_port,
                now_us()
            ],
        )?;
        conn.last_insert_rowid()
    };
    tracing::info!(destination = id, address = %address_text, user = %user, "destination created");
    visible(engine, id, caller)?.to_json(engine)
}

/// `send.getDestination(destinationId)`.
pub fn get(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    visible(engine, p.id("destinationId")?, caller)?.to_json(engine)
}

/// `send.getDestinations()`: the caller's (a superuser: all).
pub fn list(engine: &Engine, caller: &Caller) -> Result<Value, EngineError> {
    let ids = engine.db.visible_ids(
        crate::db::OwnedTable::Destinations,
        &caller.user,
        caller.superuser,
    )?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(row) = load(engine, id)? {
            out.push(row.to_json(engine)?);
        }
    }
    Ok(Value::Array(out))
}

/// `send.deleteDestination(destinationId)`: refused while unfinished transfers use it.
pub fn delete(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("destinationId")?, caller)?;
    let conn = engine.db.conn();
    let busy: i64 = conn.query_row(
        "SELECT COUNT(*) FROM transfers WHERE destination_id = ?1
         AND status IN ('pending', 'inProgress', 'suspended')",
        [row.id],
        |r| r.get(0),
    )?;
    if busy > 0 {
        return Err(EngineError::conflict(format!(
            "destination '{}' has {busy} unfinished transfer(s): cancel or delete them first",
            row.id
        )));
    }
    conn.execute("DELETE FROM destinations WHERE id = ?1", [row.id])?;
    Ok(Value::Null)
}
