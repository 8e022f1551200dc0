//! Which sandbox a user gets (their own mapping, else the global one, else `--sandbox-dir`,
//! else the whole file system) and the backends behind it, cached so that S3 clients are built
//! once per sandbox configuration rather than once per call. S3 backends draw their transfer
//! memory from the server's one [`FileCache`].

use crate::state::Store;
use slipstream_s3::S3Backend;
use slipstream_storage::cache::FileCache;
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
    /// The memory S3 transfers use (upload parts, read-ahead).
    file_cache: FileCache,
}

impl ServerOpener {
    /// An opener whose S3 backends use `file_cache`.
    pub fn new(file_cache: FileCache) -> ServerOpener {
        ServerOpener {
            cache: Mutex::default(),
            file_cache,
        }
    }

    /// The file cache S3 backends use.
    pub fn file_cache(&self) -> &FileCache {
        &self.file_cache
    }

    /// An S3 backend for `config` with this opener's file cache (not cached).
    pub fn s3_backend(
        &self,
        config: &slipstream_storage::config::S3Config,
    ) -> StorageResult<S3Backend> {
        Ok(S3Backend::new(config)?.with_file_cache(self.file_cache.clone()))
    }
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
            SandboxConfig::S3(s3) => Arc::new(self.s3_backend(s3)?),
        };
        if cache.len() >= MAX_CACHED_BACKENDS {
            cache.clear();
        }
        cache.insert(key, backend.clone());
        Ok(backend)
    }
}

/// The roots of `mapping` without placeholders.
fn plain_roots(mapping: &Mapping) -> Mapping {
    Mapping {
        roots: mapping
            .roots
            .iter()
            .filter(|(_, c)| !c.uses_placeholders())
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
    }
}

/// Resolves users to their sandboxes.
pub struct Sandboxes {
    store: Arc<Store>,
    sandbox_dir: Option<String>,
    opener: ServerOpener,
}

impl Sandboxes {
    /// Sandboxes whose S3 transfers use a file cache with the default limits.
    pub fn new(store: Arc<Store>, sandbox_dir: Option<String>) -> Self {
        Sandboxes::with_file_cache(store, sandbox_dir, FileCache::default())
    }

    /// Sandboxes whose S3 transfers use `file_cache` (the server's, sized by the
    /// `--max-file-cache-*` flags).
    pub fn with_file_cache(
        store: Arc<Store>,
        sandbox_dir: Option<String>,
        file_cache: FileCache,
    ) -> Self {
        Sandboxes {
            store,
            sandbox_dir,
            opener: ServerOpener::new(file_cache),
        }
    }

    /// The file cache S3 transfers use.
    pub fn file_cache(&self) -> &FileCache {
        self.opener.file_cache()
    }

    /// The S3 sandboxes of `mapping` as `user` sees them (placeholders expanded), by root
    /// name. A mapping whose S3 path has placeholders gives nothing for `user` "" (the global
    /// mapping names no one).
    pub fn s3_backends(
        &self,
        mapping: &Mapping,
        user: &str,
    ) -> Vec<(String, StorageResult<S3Backend>)> {
        let expanded = if mapping.uses_placeholders() {
            if user.is_empty() {
                return mapping
                    .roots
                    .iter()
                    .filter(|(_, c)| matches!(c, SandboxConfig::S3(_)) && c.uses_placeholders())
                    .map(|(name, _)| {
                        (
                            name.clone(),
                            Err(StorageError::Backend(format!(
                                "root '{name}' of the global mapping has placeholders in its                                  path; name a user (--user) to resolve them"
                            ))),
                        )
                    })
                    .chain(self.s3_backends(&plain_roots(mapping), user))
                    .collect();
            }
            mapping.expand(&UserIdentity::from_login(user))
        } else {
            mapping.clone()
        };
        expanded
            .roots
            .iter()
            .filter_map(|(name, config)| match config {
                SandboxConfig::S3(s3) => Some((name.clone(), self.opener.s3_backend(s3))),
                SandboxConfig::File(_) => None,
            })
            .collect()
    }

    /// Every S3 sandbox of every stored mapping, each once, as `(user, root, backend)`.
    pub fn all_s3_backends(&self) -> StorageResult<Vec<(String, String, S3Backend)>> {
        let stored = self
            .store
            .mappings()
            .map_err(|e| StorageError::Backend(format!("state database: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        for (user, text) in stored {
            let mapping = serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| Mapping::parse_stored(&v).map_err(|e| e.to_string()));
            let mapping = match mapping {
                Ok(mapping) => mapping,
                Err(error) => {
                    tracing::warn!(%user, %error, "stored mapping is unreadable; skipped");
                    continue;
                }
            };
            for (root, backend) in self.s3_backends(&mapping, &user) {
                match backend {
                    Ok(backend) => {
                        let identity = format!("{backend:?}");
                        if seen.insert(identity) {
                            found.push((user.clone(), root, backend));
                        }
                    }
                    Err(error) => tracing::debug!(%user, %root, %error, "S3 sandbox skipped"),
                }
            }
        }
        Ok(found)
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
