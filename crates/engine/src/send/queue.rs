//! The sending queue: one queue per destination, ordered by priority (lower first) then
//! request time; one transfer runs per destination at a time. Also the live state of running
//! transfers (what the API reads and how it steers them).

use crate::datapath::Progress;
use crate::error::EngineError;
use crate::send::store::Counters;
use crate::Engine;
use rusqlite::params;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What the API wants a running transfer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Run,
    Suspend,
    Cancel,
    Fail(String),
    /// The server is stopping: pause, keep the status, resume at the next start.
    Shutdown,
}

/// Where a running transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Negotiating,
    Sending,
    Finishing,
}

/// The latest counters of a data run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The run's own counters.
    pub progress: Progress,
    /// The transfer's counters with this run included so far.
    pub counters: Counters,
}

/// The live state of one running transfer.
pub struct LiveSend {
    pub destination_id: i64,
    pub desired: watch::Sender<Desired>,
    pub rate: watch::Sender<Option<u64>>,
    pub progress: Mutex<Option<Snapshot>>,
    pub phase: Mutex<Phase>,
}

impl LiveSend {
    /// The latest counters while a data run is going on.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.progress.lock().map(|p| p.clone()).unwrap_or(None)
    }

    /// Replaces the counters of the data run (`None`: no run is going on).
    pub fn set_snapshot(&self, snapshot: Option<Snapshot>) {
        if let Ok(mut p) = self.progress.lock() {
            *p = snapshot;
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().map(|p| *p).unwrap_or(Phase::Negotiating)
    }

    pub fn set_phase(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }
}

/// The running transfers, by transfer id and by destination.
#[derive(Default)]
pub struct Sending {
    inner: Mutex<Running>,
}

/// Guarded together so that starting a transfer and changing a queued one's status never
/// race.
#[derive(Default)]
pub struct Running {
    pub by_transfer: HashMap<i64, Arc<LiveSend>>,
    pub by_destination: HashMap<i64, i64>,
    pub stopping: bool,
}

impl Sending {
    pub fn lock(&self) -> MutexGuard<'_, Running> {
        // The maps are updated in single statements; a poisoned lock holds consistent maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live state of a running transfer.
    pub fn live(&self, id: i64) -> Option<Arc<LiveSend>> {
        self.lock().by_transfer.get(&id).cloned()
    }

    /// `encryptedConnectionState` and `roundTripTimeMs` of a destination.
    pub fn connection_state(&self, destination_id: i64) -> (&'static str, Option<f64>) {
        let running = self.lock();
        let Some(live) = running
            .by_destination
            .get(&destination_id)
            .and_then(|id| running.by_transfer.get(id))
        else {
            return ("disconnected", None);
        };
        let rtt = live.snapshot().map(|s| s.progress.round_trip_time_ms);
        match live.phase() {
            Phase::Negotiating => ("negotiating", rtt),
            _ => ("connected", rtt),
        }
    }
}

/// Starts the next queued transfer of `destination_id` unless one is running.
pub fn kick(engine: &Arc<Engine>, destination_id: i64) {
    if let Err(error) = try_kick(engine, destination_id) {
        tracing::error!(destination = destination_id, %error, "cannot start a queued transfer");
    }
}

fn try_kick(engine: &Arc<Engine>, destination_id: i64) -> Result<(), EngineError> {
    let mut running = engine.sending.lock();
    if running.stopping || running.by_destination.contains_key(&destination_id) {
        return Ok(());
    }
    let next: Option<i64> = {
        let conn = engine.db.conn();
        let mut statement = conn.prepare_cached(
            "SELECT id FROM transfers WHERE destination_id = ?1 AND status = 'pending'
             ORDER BY priority, request_us, id LIMIT 1",
        )?;
        let mut rows = statement.query_map([destination_id], |r| r.get(0))?;
        rows.next().transpose()?
    };
    let Some(id) = next else {
        return Ok(());
    };
    engine.db.conn().execute(
        "UPDATE transfers SET status = 'inProgress', start_us = COALESCE(start_us, ?2)
         WHERE id = ?1",
        params![id, crate::params::now_us()],
    )?;
    let send_rate = crate::send::store::load(engine, id)?.and_then(|row| row.send_rate);
    let live = Arc::new(LiveSend {
        destination_id,
        desired: watch::channel(Desired::Run).0,
        rate: watch::channel(send_rate).0,
        progress: Mutex::new(None),
        phase: Mutex::new(Phase::Negotiating),
    });
    running.by_transfer.insert(id, live.clone());
    running.by_destination.insert(destination_id, id);
    let engine = engine.clone();
    tokio::spawn(async move {
        crate::send::runner::run(engine, id, live).await;
    });
    Ok(())
}

/// Called by a runner when it stops: frees the destination and starts the next transfer.
pub fn finished(engine: &Arc<Engine>, id: i64, destination_id: i64) {
    {
        let mut running = engine.sending.lock();
        running.by_transfer.remove(&id);
        if running.by_destination.get(&destination_id) == Some(&id) {
            running.by_destination.remove(&destination_id);
        }
    }
    kick(engine, destination_id);
}

/// At start: transfers that were running when the server stopped are queued again (they
/// resume where the receiver's checkpoints say), and every destination's queue is started.
pub fn recover(engine: &Arc<Engine>) -> Result<(), EngineError> {
    let destinations: Vec<i64> = {
        let conn = engine.db.conn();
        conn.execute(
            "UPDATE transfers SET status = 'pending' WHERE status = 'inProgress'",
            [],
        )?;
        let mut statement =
            conn.prepare("SELECT DISTINCT destination_id FROM transfers WHERE status = 'pending'")?;
        let rows = statement.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for destination in destinations {
        kick(engine, destination);
    }
    Ok(())
}
