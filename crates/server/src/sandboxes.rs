//! Which sandbox a user gets (their own mapping, else the global one, else `--sandbox-dir`,
//! else the whole file system) and the backends behind it, cached so that S3 clients are built
//! once per sandbox configuration rather than once per call.

use crate::state::Store;
use slipstream_storage::config::{FileConfig, Mapping, SandboxConfig, UserIdentity};
use slipstream_storage::file::FileBackend;
use slipstream_storage::vfs::{BackendOpener, VirtualFs};
use slipstream_storage::{Backend, StorageError, StorageResult};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Cached backends beyond this count are dropped (a new configuration rebuilds its client).
const MAX_CACHED_BACKENDS: usize = 512;

/// Opens File sandboxes on local disk and S3 sandboxes through `slipstream-s3`, reusing a
/// backend for an identical configuration.
#[derive(Default)]
pub struct ServerOpener {
    cache: Mutex<HashMap<String, Arc<dyn Backend>>>,
}

/// A cache key that tells configurations apart by every setting, secrets included (it never
/// leaves memory).
fn cache_key(config: &SandboxConfig) -> String {
    let single = Mapping {
        roots: [(String::new(), config.clone())].into_iter().collect(),
    };
    single.to_stored_json().to_string()
}

impl BackendOpener for ServerOpener {
    fn open(&self, config: &SandboxConfig) -> StorageResult<Arc<dyn Backend>> {
        let key = cache_key(config);
        // The map holds only finished backends; a panic elsewhere cannot leave it half-written.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(backend) = cache.get(&key) {
            return Ok(backend.clone());
        }
        let backend: Arc<dyn Backend> = match config {
            SandboxConfig::File(file) => Arc::new(FileBackend::new(PathBuf::from(&file.path))),
            SandboxConfig::S3(s3) => Arc::new(slipstream_s3::S3Backend::new(s3)?),
        };
        if cache.len() >= MAX_CACHED_BACKENDS {
            cache.clear();
        }
        cache.insert(key, backend.clone());
        Ok(backend)
    }
}

/// Resolves users to their sandboxes.
pub struct Sandboxes {
    store: Arc<Store>,
    sandbox_dir: Option<String>,
    opener: ServerOpener,
}

impl Sandboxes {
    pub fn new(store: Arc<Store>, sandbox_dir: Option<String>) -> Self {
        Sandboxes {
            store,
            sandbox_dir,
            opener: ServerOpener::default(),
        }
    }

    /// The mapping that applies to `user`: theirs, else the global one (""), else the system
    /// sandbox from `--sandbox-dir`; `None` means no sandbox at all.
    pub fn effective_mapping(&self, user: &str) -> StorageResult<Option<Mapping>> {
        let stored = |name: &str| -> StorageResult<Option<Mapping>> {
            let text = self
                .store
                .mapping(name)
                .map_err(|e| StorageError::Backend(format!("state database: {e}")))?;
            match text {
                None => Ok(None),
                Some(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                        StorageError::Backend(format!("stored mapping of '{name}' is corrupt: {e}"))
                    })?;
                    Mapping::parse_stored(&value).map(Some)
                }
            }
        };
        if !user.is_empty() {
            if let Some(mapping) = stored(user)? {
                return Ok(Some(mapping));
            }
        }
        if let Some(mapping) = stored("")? {
            return Ok(Some(mapping));
        }
        Ok(self.sandbox_dir.as_ref().map(|dir| Mapping {
            roots: [(
                String::new(),
                SandboxConfig::File(FileConfig { path: dir.clone() }),
            )]
            .into_iter()
            .collect(),
        }))
    }

    /// The user's view of storage.
    pub fn view(&self, user: &str) -> StorageResult<VirtualFs> {
        let mapping = self.effective_mapping(user)?;
        VirtualFs::new(
            mapping.as_ref(),
            &UserIdentity::from_login(user),
            &self.opener,
        )
    }
}

impl slipstream_engine::SandboxProvider for Sandboxes {
    fn view(&self, user: &str) -> StorageResult<VirtualFs> {
        Sandboxes::view(self, user)
    }
}
