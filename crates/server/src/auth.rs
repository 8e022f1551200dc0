//! Authentication of API calls: HTTP Basic against the user table, Bearer tokens issued by
//! `server.auth`, and throttling of failed logins per user and client address.

use crate::clock::now_us;
use crate::rpc::RpcError;
use crate::state::Store;
use crate::users::{decoy_hash, verify_password};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed logins allowed per user and address within [`THROTTLE_WINDOW`].
pub const MAX_FAILED_LOGINS: usize = 5;
/// The window failed logins are counted in.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub superuser: bool,
}

/// Checks credentials and issues tokens.
#[derive(Debug)]
pub struct Authenticator {
    store: Arc<Store>,
    superusers: HashSet<String>,
    token_lifetime: Duration,
    failures: Mutex<HashMap<(String, IpAddr), VecDeque<Instant>>>,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Authenticator {
    /// An authenticator over the user table; `superusers` are the names given by `--superuser`.
    pub fn new(store: Arc<Store>, superusers: &[String], token_lifetime: Duration) -> Self {
        Authenticator {
            store,
            superusers: superusers.iter().cloned().collect(),
            token_lifetime,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), VecDeque<Instant>>> {
        // The map holds only counters; after a panic elsewhere it is still consistent.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// If `user` at `address` is locked out, the seconds until they may try again.
    fn locked_for(&self, user: &str, address: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut failures = self.failures();
        let entry = failures.get_mut(&(user.to_string(), address))?;
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) >= THROTTLE_WINDOW)
        {
            entry.pop_front();
        }
        if entry.len() < MAX_FAILED_LOGINS {
            return None;
        }
        let oldest = *entry.front()?;
        let wait = THROTTLE_WINDOW.saturating_sub(now.duration_since(oldest));
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn record_failure(&self, user: &str, address: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures();
        if failures.len() > 100_000 {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < THROTTLE_WINDOW)
            });
        }
        let entry = failures.entry((user.to_string(), address)).or_default();
        entry.push_back(now);
        while entry.len() > MAX_FAILED_LOGINS {
            entry.pop_front();
        }
    }

    /// True if `user` is a superuser (flag in the user table or named by `--superuser`).
    pub fn is_superuser(&self, user: &str, flagged: bool) -> bool {
        flagged || self.superusers.contains(user)
    }

    /// Checks a user name and password from `address`.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<Session, RpcError> {
        if let Some(seconds) = self.locked_for(user, address) {
            return Err(RpcError::throttled(seconds));
        }
        let record = self.store.user(user).map_err(RpcError::internal)?;
        let hash = record
            .as_ref()
            .map(|r| r.password_hash.clone())
            .unwrap_or_else(|| decoy_hash().to_string());
        let candidate = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &candidate))
            .await
            .unwrap_or(false);
        match record {
            Some(record) if matches => Ok(Session {
                superuser: self.is_superuser(&record.name, record.superuser),
                user: record.name,
            }),
            _ => {
                self.record_failure(user, address);
                Err(RpcError::auth_failed("wrong user name or password"))
            }
        }
    }

    /// Issues a token for `session`: (token, expiry in µs since the epoch).
    pub fn issue_token(&self, session: &Session) -> Result<(String, i64), RpcError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let now = now_us();
        let expiry = now + self.token_lifetime.as_micros() as i64;
        let _ = self.store.delete_expired_tokens(now);
        self.store
            .insert_token(&token_hash(&token), &session.user, now, expiry)
            .map_err(RpcError::internal)?;
        Ok((token, expiry))
    }

    /// Checks a Bearer token.
    pub fn check_token(&self, token: &str) -> Result<Session, RpcError> {
        let Some((user, expiry)) = self
            .store
            .token(&token_hash(token))
            .map_err(RpcError::internal)?
        else {
            return Err(RpcError::auth_failed(
                "unknown token; get one with server.auth",
            ));
        };
        if expiry <= now_us() {
            return Err(RpcError::auth_failed(
                "token expired; get a new one with server.auth",
            ));
        }
        // The user may have been deleted since the token was issued.
        let record = self
            .store
            .user(&user)
            .map_err(RpcError::internal)?
            .ok_or_else(|| RpcError::auth_failed("the token's user no longer exists"))?;
        Ok(Session {
            superuser: self.is_superuser(&record.name, record.superuser),
            user: record.name,
        })
    }
}
