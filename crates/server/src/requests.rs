//! Asynchronous API requests (`lsAsync` and friends): each runs in the background under a
//! request id; `getRequestStatus` reports on it and `getRequestResult` waits for it. Finished
//! requests are forgotten after [`REQUEST_RETENTION`].

use crate::rpc::RpcError;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a finished request's result is kept.
pub const REQUEST_RETENTION: Duration = Duration::from_secs(3600);

type Outcome = Option<Result<Value, RpcError>>;

struct Entry {
    owner: String,
    outcome: watch::Receiver<Outcome>,
    finished_at: Option<Instant>,
}

/// The registry of background requests.
#[derive(Default)]
pub struct Requests {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Requests {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `work` for `owner` in the background and returns its request id.
    pub fn spawn<F>(&self, owner: &str, work: F) -> u64
    where
        F: Future<Output = Result<Value, RpcError>> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (sender, receiver) = watch::channel(None);
        {
            let mut entries = self.entries();
            let now = Instant::now();
            entries.retain(|_, e| {
                e.finished_at
                    .map(|t| now.duration_since(t) < REQUEST_RETENTION)
                    .unwrap_or(true)
            });
            entries.insert(
                id,
                Entry {
                    owner: owner.to_string(),
                    outcome: receiver,
                    finished_at: None,
                },
            );
        }
        tokio::spawn(async move {
            let outcome = work.await;
            let _ = sender.send(Some(outcome));
        });
        id
    }

    fn receiver(&self, id: u64, user: &str) -> Result<watch::Receiver<Outcome>, RpcError> {
        let mut entries = self.entries();
        match entries.get_mut(&id) {
            Some(entry) if entry.owner == user => {
                if entry.finished_at.is_none() && entry.outcome.borrow().is_some() {
                    entry.finished_at = Some(Instant::now());
                }
                Ok(entry.outcome.clone())
            }
            _ => Err(RpcError::not_found(format!(
                "no request {id}: it never existed, belongs to another user, or expired"
            ))),
        }
    }

    /// `{requestId, processing, status, errorMessage}`.
    pub fn status(&self, id: u64, user: &str) -> Result<Value, RpcError> {
        let receiver = self.receiver(id, user)?;
        let outcome = receiver.borrow();
        let (processing, status, message) = match &*outcome {
            None => (true, "pending", String::new()),
            Some(Ok(_)) => (false, "complete", String::new()),
            Some(Err(error)) => (false, "error", error.message.clone()),
        };
        Ok(json!({
            "requestId": id,
            "processing": processing,
            "status": status,
            "errorMessage": message,
        }))
    }

    /// Waits for the request and returns its result (or its error).
    pub async fn result(&self, id: u64, user: &str) -> Result<Value, RpcError> {
        let mut receiver = self.receiver(id, user)?;
        let outcome = receiver
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RpcError::internal("request task ended without a result"))?
            .clone();
        self.receiver(id, user)?;
        outcome.unwrap_or_else(|| Err(RpcError::internal("request has no result")))
    }
}
