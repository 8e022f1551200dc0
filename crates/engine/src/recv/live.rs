//! Receptions in progress on this server: their data path handles, and a watcher per
//! reception that persists each checkpoint as it comes (only the files whose checkpoint
//! changed), records when the sender was last heard, and notices a sender that cancelled or
//! went silent.

use crate::datapath::{DataError, ReceiveHandle};
use crate::recv::store;
use crate::Engine;
use slipstream_storage::data::SinkCheckpoint;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often the counters of a reception are saved.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// One running reception.
pub struct LiveReception {
    pub reception_id: i64,
    pub handle: ReceiveHandle,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LiveReception {
    /// Stops persisting checkpoints (before finishing or aborting).
    pub fn stop_watching(&self) {
        if let Ok(mut watcher) = self.watcher.lock() {
            if let Some(task) = watcher.take() {
                task.abort();
            }
        }
    }
}

#[derive(Default)]
pub struct Registry {
    pub live: HashMap<i64, Arc<LiveReception>>,
    /// Receptions whose files are being verified and published.
    pub finishing: HashSet<i64>,
}

/// The receptions of this server.
#[derive(Default)]
pub struct Receiving {
    inner: Mutex<Registry>,
    /// Serialises `recv.openTransfer` calls (opening resolves files and reopens sinks).
    pub open_lock: tokio::sync::Mutex<()>,
}

impl Receiving {
    pub fn lock(&self) -> MutexGuard<'_, Registry> {
        // The maps are updated in single statements; a poisoned lock holds consistent maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the live reception out (whoever takes it finishes or aborts it).
    pub fn take(&self, id: i64) -> Option<Arc<LiveReception>> {
        self.lock().live.remove(&id)
    }

    pub fn get(&self, id: i64) -> Option<Arc<LiveReception>> {
        self.lock().live.get(&id).cloned()
    }

    pub fn is_finishing(&self, id: i64) -> bool {
        self.lock().finishing.contains(&id)
    }

    /// Takes the live reception out, unless its files are being verified and published: in
    /// one step, so that `recv.finishTransfer` cannot start on a reception being discarded.
    pub fn take_unless_finishing(&self, id: i64) -> Result<Option<Arc<LiveReception>>, Finishing> {
        let mut registry = self.lock();
        if registry.finishing.contains(&id) {
            return Err(Finishing);
        }
        Ok(registry.live.remove(&id))
    }
}

/// The reception's files are being verified and published (`recv.finishTransfer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finishing;

/// Registers a started reception and starts its watcher.
pub fn register(engine: &Arc<Engine>, reception_id: i64, handle: ReceiveHandle) {
    let live = Arc::new(LiveReception {
        reception_id,
        handle,
        watcher: Mutex::new(None),
    });
    let task = tokio::spawn(watch(engine.clone(), live.clone()));
    if let Ok(mut watcher) = live.watcher.lock() {
        *watcher = Some(task);
    }
    engine.receiving.lock().live.insert(reception_id, live);
}

async fn watch(engine: Arc<Engine>, live: Arc<LiveReception>) {
    let id = live.reception_id;
    let mut checkpoints = live.handle.checkpoints();
    let stopped = live.handle.stopped();
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    // What was saved of each file: a closed sink's checkpoint is the same Arc every time.
    let mut saved: HashMap<usize, Arc<SinkCheckpoint>> = HashMap::new();
    let mut heard = (0u64, 0u64);
    loop {
        tokio::select! {
            changed = checkpoints.changed() => {
                if changed.is_err() {
                    // The data path dropped its side: nothing more will come.
                    std::future::pending::<()>().await;
                }
                let checkpoint = checkpoints.borrow_and_update().clone();
                let Some(checkpoint) = checkpoint else { continue };
                let fresh: Vec<&(usize, Arc<SinkCheckpoint>)> = checkpoint
                    .files
                    .iter()
                    .filter(|(index, file)| !saved.get(index).is_some_and(|s| Arc::ptr_eq(s, file)))
                    .collect();
                let files = fresh.iter().map(|(index, file)| (*index, file.as_ref()));
                match store::save_checkpoint(&engine, id, files) {
                    Ok(()) => {
                        for (index, file) in fresh {
                            saved.insert(*index, file.clone());
                        }
                    }
                    Err(error) => {
                        tracing::error!(reception = id, %error, "cannot save a checkpoint");
                    }
                }
            }
            reason = &mut stopped => {
                on_stopped(&engine, &live, reason).await;
                return;
            }
            _ = tick.tick() => {
                let progress = live.handle.progress();
                let port = progress.peer.map(|p| p.port());
                // Anything from the sender (data, retransmissions, probes) keeps it active.
                let now_heard = (progress.bytes_received, progress.packets_received);
                let active = now_heard != heard;
                heard = now_heard;
                if let Err(error) =
                    store::set_progress(&engine, id, progress.bytes_received, port, active)
                {
                    tracing::warn!(reception = id, %error, "cannot save reception counters");
                }
            }
        }
    }
}

/// Closes a session that is no longer the reception's (the watcher stopped): its open sinks are
/// checkpointed and closed, their files stay, and the last checkpoint is saved, so the next
/// session resumes from it.
pub async fn close_and_save(engine: &Engine, live: &LiveReception) {
    let id = live.reception_id;
    let Some(checkpoint) = live.handle.close().await else {
        return;
    };
    let files = checkpoint
        .files
        .iter()
        .map(|(index, file)| (*index, file.as_ref()));
    if let Err(error) = store::save_checkpoint(engine, id, files) {
        tracing::error!(reception = id, %error, "cannot save the last checkpoint of a session");
    }
}

/// The sender closed the session or went silent. Either way the reception keeps what it has
/// durably and waits for the sender: the data path also closes a session when the sender gives
/// up on a silent receiver, so only an explicit `recv.cancelTransfer` discards the files.
async fn on_stopped(engine: &Arc<Engine>, live: &Arc<LiveReception>, reason: DataError) {
    let id = live.reception_id;
    // Serialised with openTransfer, cancel and expiry, which replace or discard sessions.
    let _guard = engine.receiving.open_lock.lock().await;
    // Only the current session of this reception is ours to end.
    let ours = {
        let mut registry = engine.receiving.lock();
        match registry.live.get(&id) {
            Some(current) if Arc::ptr_eq(current, live) => {
                registry.live.remove(&id);
                true
            }
            _ => false,
        }
    };
    if !ours {
        return;
    }
    close_and_save(engine, live).await;
    let progress = live.handle.progress();
    let _ = store::set_progress(engine, id, progress.bytes_received, None, false);
    tracing::info!(reception = id, reason = %reason,
        "the sender stopped this session; the reception waits for it to resume or cancel");
}
