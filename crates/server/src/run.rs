//! Starting and stopping the server: state, TLS identity, the API listener, logging, and clean
//! shutdown on SIGTERM or Ctrl-C.

use crate::api::{Context, ServerFacts};
use crate::auth::Authenticator;
use crate::config::{LogFormat, ServerArgs};
use crate::requests::Requests;
use crate::sandboxes::Sandboxes;
use crate::state::Store;
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Sets up logging to stderr as text or JSON lines; `RUST_LOG` refines the level (default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How often stale multipart uploads are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(3600);

/// At start and every hour: aborts the multipart uploads older than `age` that no live sink
/// owns, in every S3 sandbox of the stored mappings. Failures are logged, never fatal.
async fn reap_stale_uploads(sandboxes: Arc<Sandboxes>, age: Duration) {
    let mut ticks = tokio::time::interval(REAP_INTERVAL);
    loop {
        ticks.tick().await;
        let backends = match sandboxes.all_s3_backends() {
            Ok(backends) => backends,
            Err(error) => {
                tracing::warn!(%error, "stale S3 uploads: cannot read the mappings");
                continue;
            }
        };
        for (user, root, backend) in backends {
            match backend.reap_stale_uploads(age, false).await {
                Ok(reaped) if reaped.is_empty() => {}
                Ok(reaped) => tracing::info!(
                    %user, %root, bucket = backend.bucket(), count = reaped.len(),
                    "aborted stale S3 multipart uploads"
                ),
                Err(error) => tracing::warn!(
                    %user, %root, %error, "stale S3 uploads: cannot clean up"
                ),
            }
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let state_dir = args.state_dir();
    let store = Arc::new(Store::open(&state_dir)?);
    let host_name = host_name();
    let identity = match (&args.api_cert, &args.api_key) {
        (Some(cert), Some(key)) => crate::tls::load(cert, key)?,
        _ => crate::tls::load_or_create_self_signed(&state_dir, &host_name)?,
    };
    let tls_config = crate::tls::server_config(&identity)?;

    let address = format!("{}:{}", args.api_host, args.api_port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address} (--api-host/--api-port): {e}"))?;
    let local: SocketAddr = listener.local_addr()?;

    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let (cache_total, cache_upload, cache_download) = args.file_cache_limits();
    let facts = ServerFacts {
        version: env!("CARGO_PKG_VERSION"),
        server_name: host_name.clone(),
        host_name,
        server_id: hex::encode(id),
        api_port: local.port(),
        recv_port: args.recv_port,
        min_cipher: args.min_cipher,
        certificate_fingerprint: identity.fingerprint.clone(),
        sandbox_dir: args.sandbox_dir.clone(),
        file_cache_max: cache_total,
        file_cache_max_upload: cache_upload,
        file_cache_max_download: cache_download,
    };
    let auth = Authenticator::new(
        store.clone(),
        &args.superusers,
        Duration::from_secs(args.api_token_lifetime),
    );
    if args.sandbox_dir.is_none() && store.mappings()?.is_empty() {
        tracing::warn!(
            "warning: no sandbox is configured, so users can reach the whole filesystem; \
             set --sandbox-dir or a mapping with server.setSandboxMapping"
        );
    }
    let file_cache =
        slipstream_storage::cache::FileCache::new(cache_total, cache_upload, cache_download);
    let sandboxes = Arc::new(Sandboxes::with_file_cache(
        store.clone(),
        args.sandbox_dir.clone(),
        file_cache.clone(),
    ));
    let reaper = tokio::spawn(reap_stale_uploads(
        sandboxes.clone(),
        Duration::from_secs(args.stale_upload_age),
    ));
    let engine = slipstream_engine::Engine::start(slipstream_engine::EngineConfig {
        state_dir: state_dir.clone(),
        recv_bind: SocketAddr::from(([0, 0, 0, 0], args.recv_port)),
        min_cipher: args.min_cipher,
        incoming_rate_limit_kbps: args.incoming_rate_limit,
        outgoing_rate_limit_kbps: args.outgoing_rate_limit,
        server_id: facts.server_id.clone(),
        certificate_fingerprint: identity.fingerprint.clone(),
        sandboxes: sandboxes.clone(),
        file_cache_upload_size: cache_upload,
        file_cache_download_size: cache_download,
        file_cache_size: cache_total,
        reception_expiry: args.reception_expiry(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("transfer engine: {e}"))?;
    let context = Arc::new(Context {
        facts,
        sandboxes,
        engine: engine.clone(),
        store,
        auth,
        file_cache,
        requests: Requests::default(),
    });

    tracing::info!(
        api = %format!("https://{local}/rpc"),
        fingerprint = %identity.fingerprint,
        state_dir = %state_dir.display(),
        "slipstream server listening"
    );
    let (stop_sender, stop_receiver) = watch::channel(false);
    let server = tokio::spawn(crate::http::serve(
        listener,
        tls_config,
        context,
        args.max_request_size,
        stop_receiver,
    ));
    shutdown_signal().await;
    let _ = stop_sender.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    reaper.abort();
    engine.shutdown().await;
    tracing::info!("slipstream server stopped");
    Ok(())
}
