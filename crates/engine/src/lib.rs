//! Transfer engine: manifests, destinations, transfers and their queue, checkpoints, and the
//! UDP data path that moves the bytes between two servers.
//!
//! The server hands every `send.*` and `recv.*` API call to [`Engine::call`] after it has
//! authenticated the caller; the engine never sees HTTP. Layout:
//! - [`datapath`]: one UDP socket (`--recv-port`) carrying many transfers; the sending and
//!   receiving drivers of [`slipstream_proto`] over storage readers and sinks.
//! - the control plane (manifests, destinations, transfers, the receiving side's negotiation):
//!   the other modules.

pub mod datapath;
mod db;
mod destination;
mod error;
mod manifest;
mod negotiation;
mod params;
mod recv;
mod remote;
mod send;

pub use error::EngineError;

use datapath::DataEndpoint;
use params::Params;
use serde_json::{Map, Value};
use slipstream_storage::{StorageResult, VirtualFs};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Gives the engine a user's view of storage (the server's sandbox resolution).
pub trait SandboxProvider: Send + Sync {
    fn view(&self, user: &str) -> StorageResult<VirtualFs>;
}

/// The authenticated caller of an API method.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub superuser: bool,
    pub address: IpAddr,
}

/// What the engine needs from the server.
#[derive(Clone)]
pub struct EngineConfig {
    /// The server's state dir; the engine keeps its own database and checkpoints there.
    pub state_dir: PathBuf,
    /// Where the UDP data socket binds (`--api-host`-independent: 0.0.0.0:`--recv-port`).
    pub recv_bind: SocketAddr,
    /// The receiver's floor for senders' cipher levels (`--min-cipher`).
    pub min_cipher: u8,
    /// Server-wide limits in kbit/s (`--incoming-rate-limit`, `--outgoing-rate-limit`).
    pub incoming_rate_limit_kbps: Option<u64>,
    pub outgoing_rate_limit_kbps: Option<u64>,
    /// This server's id (changes on each launch) and its API certificate fingerprint.
    pub server_id: String,
    pub certificate_fingerprint: String,
    /// Users' sandboxes.
    pub sandboxes: Arc<dyn SandboxProvider>,
    /// Per-transfer S3 upload and download cache shares, bytes (`--max-file-cache-*`).
    pub file_cache_upload_size: u64,
    pub file_cache_download_size: u64,
    pub file_cache_size: u64,
    /// A reception whose sender has been idle this long is expired (`--reception-expiry-hours`;
    /// `None`: never).
    pub reception_expiry: Option<std::time::Duration>,
}

/// Every `send.*` and `recv.*` method: name and params in positional order (api.md §2, plus
/// the receiving side's methods that a sending server calls).
pub const METHODS: &[(&str, &[&str])] = &[
    ("send.createManifest", &["mappings", "symlinks"]),
    ("send.getManifest", &["manifestId"]),
    ("send.getManifests", &[]),
    ("send.getManifestFiles", &["manifestId", "offset", "limit"]),
    ("send.deleteManifest", &["manifestId"]),
    (
        "send.createDestination",
        &[
            "destinationAddress",
            "user",
            "password",
            "token",
            "sendRateMax",
            "fingerprint",
        ],
    ),
    ("send.getDestination", &["destinationId"]),
    ("send.getDestinations", &[]),
    ("send.deleteDestination", &["destinationId"]),
    (
        "send.createTransfer",
        &[
            "destinationId",
            "manifestId",
            "destinationPath",
            "overwriteMode",
            "priority",
            "checkpointFrequencySeconds",
            "minCipher",
            "sendRate",
        ],
    ),
    ("send.getTransfer", &["transferId"]),
    ("send.getTransfers", &["status"]),
    ("send.suspendTransfer", &["transferId"]),
    ("send.resumeTransfer", &["transferId"]),
    ("send.cancelTransfer", &["transferId"]),
    ("send.failTransfer", &["transferId", "message"]),
    ("send.deleteTransfer", &["transferId"]),
    ("send.setSendRate", &["transferId", "kbps"]),
    ("recv.getTransfers", &[]),
    ("recv.getSources", &[]),
    // Our extensions: what a sending server calls on the receiving one (docs/engine.md).
    (
        "recv.openTransfer",
        &[
            "transferId",
            "sourceTransferId",
            "sourcePort",
            "destinationPath",
            "overwriteMode",
            "minCipher",
            "checkpointFrequencySeconds",
            "files",
        ],
    ),
    ("recv.finishTransfer", &["transferId", "digests"]),
    ("recv.cancelTransfer", &["transferId", "message"]),
];

/// The transfer engine of one server.
pub struct Engine {
    config: EngineConfig,
    db: db::Db,
    /// The UDP data socket; `None` when it could not be bound (transfers then fail with a
    /// message saying so, the rest of the API works).
    endpoint: Option<Arc<DataEndpoint>>,
    sending: send::queue::Sending,
    receiving: recv::live::Receiving,
    /// When this engine started, µs since the epoch (receptions' idle time counts from it at
    /// the earliest).
    started_us: i64,
}

/// Raises this process's open-file limit to its hard limit: transfers keep descriptors for
/// the files they read and receive (receiving sinks are bounded by a quarter of this limit, see
/// [`datapath::open_sink_limit_for_this_process`]).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Binds the data socket. A failure (or a data path that cannot start) is logged, not fatal.
async fn bind_endpoint(config: &EngineConfig) -> Option<Arc<DataEndpoint>> {
    let (address, out, inc) = (
        config.recv_bind,
        config.outgoing_rate_limit_kbps,
        config.incoming_rate_limit_kbps,
    );
    match tokio::spawn(DataEndpoint::bind(address, out, inc)).await {
        Ok(Ok(endpoint)) => Some(endpoint),
        Ok(Err(error)) => {
            tracing::error!(%address, %error,
                "cannot bind the UDP data socket (--recv-port); transfers are unavailable");
            None
        }
        Err(error) => {
            tracing::error!(%address, %error, "the UDP data path failed to start; transfers are unavailable");
            None
        }
    }
}

impl Engine {
    /// Opens the engine's state, binds the data socket and resumes unfinished transfers.
    pub async fn start(config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        raise_open_file_limit();
        let db = db::Db::open(&config.state_dir)?;
        let endpoint = bind_endpoint(&config).await;
        let engine = Arc::new(Engine {
            config,
            db,
            endpoint,
            sending: Default::default(),
            receiving: Default::default(),
            started_us: params::now_us(),
        });
        manifest::recover(&engine)?;
        send::queue::recover(&engine)?;
        recv::expiry::spawn(&engine);
        Ok(engine)
    }

    /// This server's UDP port (the data socket's, else `--recv-port`).
    fn recv_port(&self) -> u16 {
        self.endpoint
            .as_ref()
            .map(|e| e.local_addr().port())
            .unwrap_or(self.config.recv_bind.port())
    }

    /// Runs one API method for an authenticated caller; `params` are by name (the server has
    /// already turned positional params into named ones and refused unknown names).
    pub async fn call(
        self: &Arc<Self>,
        method: &str,
        params: Map<String, Value>,
        caller: &Caller,
    ) -> Result<Value, EngineError> {
        let p = Params(params);
        match method {
            "send.createManifest" => manifest::create(self, &p, caller).await,
            "send.getManifest" => manifest::get(self, &p, caller),
            "send.getManifests" => manifest::list(self, caller),
            "send.getManifestFiles" => manifest::get_files(self, &p, caller),
            "send.deleteManifest" => manifest::delete(self, &p, caller),
            "send.createDestination" => destination::create(self, &p, caller).await,
            "send.getDestination" => destination::get(self, &p, caller),
            "send.getDestinations" => destination::list(self, caller),
            "send.deleteDestination" => destination::delete(self, &p, caller),
            "send.createTransfer" => send::create(self, &p, caller),
            "send.getTransfer" => send::get(self, &p, caller),
            "send.getTransfers" => send::list(self, &p, caller),
            "send.suspendTransfer" => send::suspend(self, &p, caller),
            "send.resumeTransfer" => send::resume(self, &p, caller),
            "send.cancelTransfer" => send::cancel(self, &p, caller),
            "send.failTransfer" => send::fail(self, &p, caller),
            "send.deleteTransfer" => send::delete(self, &p, caller).await,
            "send.setSendRate" => send::set_send_rate(self, &p, caller),
            "recv.getTransfers" => recv::list(self, caller),
            "recv.getSources" => recv::sources(self, caller),
            "recv.openTransfer" => recv::open::open(self, &p, caller).await,
            "recv.finishTransfer" => recv::finish(self, &p, caller).await,
            "recv.cancelTransfer" => recv::cancel(self, &p, caller).await,
            _ => Err(EngineError::new(
                -32601,
                format!("unknown method '{method}'"),
            )),
        }
    }

    /// Stops sending and receiving. Running transfers pause and keep their status: the next
    /// start resumes them from the receiver's checkpoints.
    pub async fn shutdown(&self) {
        let live = {
            let mut running = self.sending.lock();
            running.stopping = true;
            running.by_transfer.values().cloned().collect::<Vec<_>>()
        };
        for transfer in &live {
            transfer
                .desired
                .send_replace(send::queue::Desired::Shutdown);
        }
        // Give the runners a moment to pause their data path.
        for _ in 0..50 {
            if self.sending.lock().by_transfer.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
