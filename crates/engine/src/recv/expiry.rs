//! Expiry of abandoned receptions, and pruning of old finished ones: a periodic sweep of the
//! receiving server.
//!
//! A reception still `receiving` whose sender has not been heard from (no `openTransfer`, no
//! datagram) for `--reception-expiry-hours` is expired: its partial files are discarded (no
//! partfile, in-place file or multipart upload left, see [`super::discard`]) and it ends in
//! `error` with "expired: the sender did not come back within N h". A sender that comes back
//! later gets that error from `recv.openTransfer` and its transfer fails: sending the files
//! again takes a new transfer. Idle time counts from this server's start at the earliest, as a
//! sender cannot come back while the receiver is down.
//!
//! Finished receptions (`complete` or `error`) are forgotten [`RETENTION`] after they ended.

use super::store;
use crate::Engine;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long finished receptions stay in `recv.getTransfers`.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The start of an expired reception's error message (`recv.openTransfer` recognises it).
const EXPIRED: &str = "expired:";
/// The sweep runs at most this often ...
const MIN_SWEEP: Duration = Duration::from_secs(1);
/// ... and at least this often.
const MAX_SWEEP: Duration = Duration::from_secs(60);

/// `72 h`, or `90 s` for an expiry that is not a whole number of hours.
fn shown(expiry: Duration) -> String {
    let seconds = expiry.as_secs();
    if seconds % 3600 == 0 {
        format!("{} h", seconds / 3600)
    } else {
        format!("{seconds} s")
    }
}

/// The error message an expired reception ends with.
fn message(expiry: Duration) -> String {
    format!(
        "{EXPIRED} the sender did not come back within {}",
        shown(expiry)
    )
}

/// True for the error message of an expired reception.
pub fn is_expired(message: Option<&str>) -> bool {
    message.is_some_and(|m| m.starts_with(EXPIRED))
}

/// Starts the sweep. It holds the engine weakly and ends when the engine is gone.
pub fn spawn(engine: &Arc<Engine>) {
    let period = engine
        .config
        .reception_expiry
        .map(|expiry| (expiry / 10).clamp(MIN_SWEEP, MAX_SWEEP))
        .unwrap_or(MAX_SWEEP);
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(engine) = Weak::upgrade(&weak) else {
                return;
            };
            sweep(&engine).await;
        }
    });
}

/// One pass: expires idle receptions, prunes old finished ones. Errors are logged.
async fn sweep(engine: &Arc<Engine>) {
    let now = crate::params::now_us();
    if let Some(expiry) = engine.config.reception_expiry {
        let cutoff = now.saturating_sub(i64::try_from(expiry.as_micros()).unwrap_or(i64::MAX));
        match store::idle(engine, cutoff, engine.started_us) {
            Ok(rows) => {
                for row in rows {
                    expire(engine, row.id, cutoff, expiry).await;
                }
            }
            Err(error) => tracing::warn!(%error, "reception expiry: cannot list receptions"),
        }
    }
    let before = now.saturating_sub(RETENTION.as_micros() as i64);
    match store::prune(engine, before) {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "forgot finished receptions older than 30 days"),
        Err(error) => tracing::warn!(%error, "cannot prune finished receptions"),
    }
}

/// Expires reception `id` if it is still idle once no `openTransfer` can run beside it.
async fn expire(engine: &Arc<Engine>, id: i64, cutoff: i64, expiry: Duration) {
    let _guard = engine.receiving.open_lock.lock().await;
    // The sender may have come back (or finished) since the reception was listed.
    let row = match store::by_id(engine, id) {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(reception = id, %error, "reception expiry: cannot read it");
            return;
        }
    };
    if row.status != "receiving" || row.active_us.max(engine.started_us) >= cutoff {
        return;
    }
    let message = message(expiry);
    if super::discard(engine, &row).await.is_err() {
        // Its files are being published: the sender came back after all.
        return;
    }
    if let Err(error) = store::end(engine, id, "error", Some(&message)) {
        tracing::error!(reception = id, %error, "cannot record an expired reception");
        return;
    }
    tracing::info!(reception = id, owner = %row.owner, %message,
        "incoming transfer expired; its partial files were removed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_expiry() {
        let hours = message(Duration::from_secs(72 * 3600));
        assert_eq!(hours, "expired: the sender did not come back within 72 h");
        assert!(is_expired(Some(&hours)));
        assert_eq!(
            message(Duration::from_secs(5)),
            "expired: the sender did not come back within 5 s"
        );
        assert!(!is_expired(Some("cancelled by the sender")));
        assert!(!is_expired(None));
    }
}
