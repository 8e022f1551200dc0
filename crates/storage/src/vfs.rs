//! A user's view of storage: the virtual roots of their sandbox mapping, each backed by a
//! [`Backend`], and the safe resolution of the paths users send.
//!
//! The shape of the user's root follows the mapping (see `README.md` in this crate):
//! - no mapping: the whole file system, `/`, as one File sandbox;
//! - `{"": X}`: `X` is the root;
//! - `{"a": X, "b": Y}`: `/` is a virtual folder listing `a` and `b`; `/a/...` lies in `X`.
//!   Nothing can be created, moved or removed at `/` itself;
//! - `{"": X, "a": Y}`: `X` is the root and `a` is mounted in it (it hides an entry of `X`
//!   with the same name).
//!
//! User paths are parsed by [`RelPath::parse`], which refuses `..`, NUL and control
//! characters: nothing a user sends can climb out of a sandbox. Backends confine the rest (the
//! File backend refuses symbolic links that lead outside).

use crate::backend::{Backend, Entry, EntryKind, Usage};
use crate::config::{expand_placeholders, has_placeholders, Mapping, SandboxConfig, UserIdentity};
use crate::error::{StorageError, StorageResult};
use crate::file::FileBackend;
use crate::path::RelPath;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Makes the backend of one sandbox. The server supplies one that dispatches File sandboxes
/// to [`FileBackend`] and S3 sandboxes to the `slipstream-s3` crate. Opening is synchronous
/// and cheap: a backend connects lazily, on its first operation.
pub trait BackendOpener: Send + Sync {
    /// The backend for `config` (placeholders already expanded).
    fn open(&self, config: &SandboxConfig) -> StorageResult<Arc<dyn Backend>>;
}

/// An opener for File sandboxes only (tests, and the File half of the server's opener).
/// An S3 sandbox gives an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileOnlyOpener;

impl BackendOpener for FileOnlyOpener {
    fn open(&self, config: &SandboxConfig) -> StorageResult<Arc<dyn Backend>> {
        match config {
            SandboxConfig::File(file) => Ok(Arc::new(FileBackend::new(PathBuf::from(&file.path)))),
            SandboxConfig::S3(_) => Err(StorageError::config(
                "type",
                "S3 sandboxes are not available in this context (File only)",
            )),
        }
    }
}

/// One of the user's roots, as `lsRoots` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootInfo {
    /// The virtual name (`media`), or `/` when the user has a single root.
    pub name: String,
    /// Always a folder.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// `File` or `S3`.
    pub sandbox_type: String,
    /// The path to pass to `ls` to browse this root (`/media`, or `/`). Our addition.
    pub path: String,
}

/// One page of a folder, in the API's `ls` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    /// The listed path, normalised (`/media/clips`).
    pub path: String,
    pub entries: Vec<Entry>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One sandbox as mounted in the user's view.
#[derive(Debug, Clone)]
struct Root {
    /// The virtual name; empty for the `""` sandbox.
    name: String,
    sandbox_type: &'static str,
    backend: Arc<dyn Backend>,
}

impl Root {
    /// Puts the sandbox name in front of a backend's message, whose paths are relative to
    /// the sandbox (the `""` sandbox's paths are the user's paths already).
    fn context(&self, err: StorageError) -> StorageError {
        if self.name.is_empty() {
            return err;
        }
        let name = &self.name;
        match err {
            StorageError::InvalidConfig { field, message } => StorageError::InvalidConfig {
                field,
                message: format!("in '/{name}': {message}"),
            },
            StorageError::PermissionDenied(m) => {
                StorageError::PermissionDenied(format!("in '/{name}': {m}"))
            }
            StorageError::NotFound(m) => StorageError::NotFound(format!("in '/{name}': {m}")),
            StorageError::Conflict(m) => StorageError::Conflict(format!("in '/{name}': {m}")),
            StorageError::Backend(m) => StorageError::Backend(format!("in '/{name}': {m}")),
        }
    }
}

/// Where a user path leads.
enum Place<'a> {
    /// `/` when it only lists named sandboxes.
    VirtualRoot,
    /// Inside a sandbox.
    In { root: &'a Root, rel: RelPath },
    /// Below `/`, under a name that is none of the user's sandboxes.
    Missing { name: String },
}

/// A user's sandboxes, addressed by the paths the API receives.
#[derive(Debug, Clone)]
pub struct VirtualFs {
    /// The `""` sandbox (the whole file system when there is no mapping).
    base: Option<Root>,
    /// The named sandboxes.
    mounts: BTreeMap<String, Root>,
}

/// Opaque cursor for the merged listing of a root that has both a `""` sandbox and named ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct MergedCursor {
    /// The backend's cursor for the page in progress.
    backend: Option<String>,
    /// How many entries of that page were already returned.
    skip: usize,
    /// How many mounted names were already returned.
    mounts: usize,
    /// The backend page size, fixed for the whole listing so that `skip` stays meaningful.
    page: usize,
}

impl MergedCursor {
    fn encode(&self) -> String {
        let json = serde_json::json!([self.backend, self.skip, self.mounts, self.page]);
        let text = json.to_string();
        let mut out = String::with_capacity(2 + text.len() * 2);
        out.push_str("m:");
        for byte in text.bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    fn decode(cursor: &str) -> StorageResult<MergedCursor> {
        let bad = || {
            StorageError::config(
                "cursor",
                "cursor is not one this server returned for this folder: pass the nextCursor \
                 of the previous ls of the same path, or null to start over",
            )
        };
        let hex = cursor.strip_prefix("m:").ok_or_else(bad)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
            .collect::<StorageResult<Vec<u8>>>()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let (backend, skip, mounts, page) = serde_json::from_value(value).map_err(|_| bad())?;
        Ok(MergedCursor {
            backend,
            skip,
            mounts,
            page,
        })
    }
}

fn directory_entry(name: &str) -> Entry {
    Entry {
        name: name.to_string(),
        kind: EntryKind::Directory,
        size: 0,
        modification_time: None,
        executable: false,
    }
}

/// Creates, owner-only, the folders of a File sandbox path from its first placeholder on,
/// when missing. The part before the first placeholder must exist already.
fn ensure_user_folder(template: &str, user: &UserIdentity) -> StorageResult<()> {
    let segments: Vec<&str> = template.split('/').collect();
    let Some(first) = segments.iter().position(|s| has_placeholders(s)) else {
        return Ok(());
    };
    let mut path = PathBuf::from("/");
    for segment in &segments[..first] {
        path.push(expand_placeholders(segment, user));
    }
    if !path.is_dir() {
        return Err(StorageError::Backend(format!(
            "the sandbox base folder '{}' does not exist: the administrator must create it",
            path.display()
        )));
    }
    for segment in &segments[first..] {
        let segment = expand_placeholders(segment, user);
        if segment.is_empty() {
            continue;
        }
        path.push(segment);
        if path.is_dir() {
            continue;
        }
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&path) {
            Ok(()) => tracing::info!(folder = %path.display(), "created a user's sandbox folder"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => {
                return Err(StorageError::Backend(format!(
                    "cannot create the sandbox folder '{}': {e}",
                    path.display()
                )))
            }
        }
    }
    Ok(())
}

impl VirtualFs {
    /// The view of `user` through `mapping` (`None`: no sandbox at all, the whole file system).
    ///
    /// Expands the path placeholders for `user` (refusing identities that cannot stand in a
    /// path) and creates a missing File sandbox folder named through a placeholder, owner-only
    /// (this does a few blocking `stat` calls). Backends are made by `opener`.
    pub fn new(
        mapping: Option<&Mapping>,
        user: &UserIdentity,
        opener: &dyn BackendOpener,
    ) -> StorageResult<VirtualFs> {
        let Some(mapping) = mapping else {
            let config = SandboxConfig::File(crate::config::FileConfig { path: "/".into() });
            return Ok(VirtualFs {
                base: Some(Root {
                    name: String::new(),
                    sandbox_type: "File",
                    backend: opener.open(&config)?,
                }),
                mounts: BTreeMap::new(),
            });
        };
        if mapping.roots.is_empty() {
            return Err(StorageError::config(
                "mapping",
                "the sandbox mapping is empty: it must name at least one sandbox",
            ));
        }
        if mapping.uses_placeholders() {
            user.check_path_safe()?;
        }
        let expanded = mapping.expand(user);
        let mut base = None;
        let mut mounts = BTreeMap::new();
        for (name, config) in &expanded.roots {
            if let Some(SandboxConfig::File(template)) = mapping.roots.get(name) {
                if has_placeholders(&template.path) {
                    ensure_user_folder(&template.path, user)?;
                }
            }
            let root = Root {
                name: name.clone(),
                sandbox_type: config.type_name(),
                backend: opener.open(config)?,
            };
            if name.is_empty() {
                base = Some(root);
            } else {
                mounts.insert(name.clone(), root);
            }
        }
        Ok(VirtualFs { base, mounts })
    }

    /// The user's roots, for `lsRoots`: one entry named `/` when the user has a `""` sandbox
    /// (named sandboxes mounted in it appear in its listing), else one entry per named sandbox.
    pub fn roots(&self) -> Vec<RootInfo> {
        if let Some(base) = &self.base {
            return vec![RootInfo {
                name: "/".into(),
                kind: EntryKind::Directory,
                sandbox_type: base.sandbox_type.into(),
                path: "/".into(),
            }];
        }
        self.mounts
            .values()
            .map(|root| RootInfo {
                name: root.name.clone(),
                kind: EntryKind::Directory,
                sandbox_type: root.sandbox_type.into(),
                path: format!("/{}", root.name),
            })
            .collect()
    }

    fn names(&self) -> String {
        self.mounts
            .keys()
            .map(|k| format!("'/{k}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn locate(&self, path: &RelPath) -> Place<'_> {
        if let Some(first) = path.segments().next() {
            if let Some(root) = self.mounts.get(first) {
                let rest: Vec<&str> = path.segments().skip(1).collect();
                // The segments of a RelPath are valid, so re-joining them cannot fail.
                let rel = RelPath::parse(&rest.join("/")).unwrap_or_default();
                return Place::In { root, rel };
            }
        }
        match &self.base {
            Some(root) => Place::In {
                root,
                rel: path.clone(),
            },
            None if path.is_root() => Place::VirtualRoot,
            None => Place::Missing {
                name: path.segments().next().unwrap_or_default().to_string(),
            },
        }
    }

    fn missing(&self, name: &str) -> StorageError {
        StorageError::NotFound(format!(
            "'/{name}' does not exist: your sandboxes are {}",
            self.names()
        ))
    }

    fn no_create_at_root(&self, path: &RelPath) -> StorageError {
        StorageError::PermissionDenied(format!(
            "cannot create '{path}': '/' only lists your sandboxes ({}); create things inside one \
             of them",
            self.names()
        ))
    }

    /// The backend and sandbox-relative path for a user path, for the transfer engine.
    /// `/` of a user with several named sandboxes is no place to read or write: an error.
    pub fn resolve(&self, path: &str) -> StorageResult<(Arc<dyn Backend>, RelPath)> {
        let path = RelPath::parse(path)?;
        match self.locate(&path) {
            Place::In { root, rel } => Ok((root.backend.clone(), rel)),
            Place::VirtualRoot => Err(StorageError::PermissionDenied(format!(
                "'/' only lists your sandboxes ({}): use a path inside one of them",
                self.names()
            ))),
            Place::Missing { name } => Err(self.missing(&name)),
        }
    }

    /// One page of the folder `path` (a file gives a page holding just that file).
    /// `limit` 0 counts as 1; `cursor` is the `next_cursor` of the previous page.
    pub async fn ls(
        &self,
        path: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StorageResult<Listing> {
        let limit = limit.max(1);
        let path = RelPath::parse(path)?;
        let shown = path.to_string();
        let (root, rel) = match self.locate(&path) {
            Place::VirtualRoot => {
                let mut names = self
                    .mounts
                    .keys()
                    .filter(|name| cursor.is_none_or(|c| name.as_str() > c));
                let entries: Vec<Entry> = names
                    .by_ref()
                    .take(limit)
                    .map(|n| directory_entry(n))
                    .collect();
                let more = names.next().is_some();
                return Ok(Listing {
                    path: shown,
                    next_cursor: if more {
                        entries.last().map(|e| e.name.clone())
                    } else {
                        None
                    },
                    entries,
                });
            }
            Place::Missing { name } => return Err(self.missing(&name)),
            Place::In { root, rel } => (root, rel),
        };
        if rel.is_root() && root.name.is_empty() && !self.mounts.is_empty() {
            return self.ls_merged(root, shown, limit, cursor).await;
        }
        match root.backend.list(&rel, limit, cursor).await {
            Ok(page) => Ok(Listing {
                path: shown,
                entries: page.entries,
                next_cursor: page.next_cursor,
            }),
            Err(err @ (StorageError::NotFound(_) | StorageError::Conflict(_))) => {
                match root.backend.stat(&rel).await.map_err(|e| root.context(e))? {
                    Some(entry) if entry.kind == EntryKind::File => Ok(Listing {
                        path: shown,
                        entries: if cursor.is_none() {
                            vec![entry]
                        } else {
                            Vec::new()
                        },
                        next_cursor: None,
                    }),
                    _ => Err(root.context(err)),
                }
            }
            Err(err) => Err(root.context(err)),
        }
    }

    /// The `""` sandbox's root with the named sandboxes merged in by name.
    async fn ls_merged(
        &self,
        base: &Root,
        shown: String,
        limit: usize,
        cursor: Option<&str>,
    ) -> StorageResult<Listing> {
        let mut state = match cursor {
            Some(c) => MergedCursor::decode(c)?,
            None => MergedCursor {
                page: limit,
                ..MergedCursor::default()
            },
        };
        let page_size = state.page.max(1);
        let mounts: Vec<&String> = self.mounts.keys().collect();
        let mut entries = Vec::new();
        loop {
            let page = base
                .backend
                .list(&RelPath::root(), page_size, state.backend.as_deref())
                .await?;
            let mut i = state.skip;
            while entries.len() < limit {
                let next_entry = page.entries.get(i);
                let next_mount = mounts.get(state.mounts);
                match (next_entry, next_mount) {
                    (Some(entry), Some(mount)) if mount.as_str() < entry.name.as_str() => {
                        entries.push(directory_entry(mount));
                        state.mounts += 1;
                    }
                    (Some(entry), _) => {
                        // A mounted sandbox hides the entry of the same name.
                        if !self.mounts.contains_key(&entry.name) {
                            entries.push(entry.clone());
                        }
                        i += 1;
                    }
                    (None, Some(mount)) if page.next_cursor.is_none() => {
                        entries.push(directory_entry(mount));
                        state.mounts += 1;
                    }
                    (None, _) => break,
                }
            }
            let page_done = i >= page.entries.len();
            if page_done && page.next_cursor.is_some() {
                state.backend = page.next_cursor;
                state.skip = 0;
                if entries.len() < limit {
                    continue;
                }
                return Ok(Listing {
                    path: shown,
                    entries,
                    next_cursor: Some(state.encode()),
                });
            }
            state.skip = i;
            let finished = page_done && state.mounts >= mounts.len();
            return Ok(Listing {
                path: shown,
                entries,
                next_cursor: (!finished).then(|| state.encode()),
            });
        }
    }

    /// Totals below `path`. At a virtual root: the sum over all sandboxes, each sandbox's
    /// root counting as one folder.
    pub async fn du(&self, path: &str) -> StorageResult<Usage> {
        let path = RelPath::parse(path)?;
        let (root, rel) = match self.locate(&path) {
            Place::VirtualRoot => return self.mounts_usage().await,
            Place::Missing { name } => return Err(self.missing(&name)),
            Place::In { root, rel } => (root, rel),
        };
        let mut usage = root
            .backend
            .usage(&rel)
            .await
            .map_err(|e| root.context(e))?;
        if rel.is_root() && root.name.is_empty() {
            usage.add(self.mounts_usage().await?);
        }
        Ok(usage)
    }

    async fn mounts_usage(&self) -> StorageResult<Usage> {
        let mut total = Usage::default();
        for root in self.mounts.values() {
            let usage = root
                .backend
                .usage(&RelPath::root())
                .await
                .map_err(|e| root.context(e))?;
            total.add(usage);
            total.total_directories += 1;
        }
        Ok(total)
    }

    /// Creates the folder `path` and its missing parents.
    pub async fn mkdir(&self, path: &str) -> StorageResult<()> {
        let path = RelPath::parse(path)?;
        match self.locate(&path) {
            Place::VirtualRoot => Ok(()),
            Place::Missing { .. } => Err(self.no_create_at_root(&path)),
            Place::In { root, rel } => root.backend.mkdir(&rel).await.map_err(|e| root.context(e)),
        }
    }

    /// Creates an empty file; its folder must exist.
    pub async fn mk_file(&self, path: &str) -> StorageResult<()> {
        let path = RelPath::parse(path)?;
        match self.locate(&path) {
            Place::VirtualRoot => Err(StorageError::Conflict("'/' already exists".into())),
            Place::Missing { name } if path.segments().nth(1).is_some() => Err(self.missing(&name)),
            Place::Missing { .. } => Err(self.no_create_at_root(&path)),
            Place::In { root, rel } => root
                .backend
                .create_file(&rel)
                .await
                .map_err(|e| root.context(e)),
        }
    }

    /// Moves `src` to `dst` (which must not exist, and whose folder must) within one sandbox.
    pub async fn mv(&self, src: &str, dst: &str) -> StorageResult<()> {
        let src = RelPath::parse(src)?;
        let dst = RelPath::parse(dst)?;
        let (from_root, from) = match self.locate(&src) {
            Place::VirtualRoot => {
                return Err(StorageError::PermissionDenied("'/' cannot be moved".into()))
            }
            Place::Missing { name } => return Err(self.missing(&name)),
            Place::In { root, rel } if rel.is_root() && !root.name.is_empty() => {
                return Err(StorageError::PermissionDenied(format!(
                    "'{src}' is one of your sandboxes: it cannot be moved or renamed"
                )))
            }
            Place::In { root, rel } => (root, rel),
        };
        let (to_root, to) = match self.locate(&dst) {
            Place::VirtualRoot => return Err(StorageError::Conflict("'/' already exists".into())),
            Place::Missing { name } if dst.segments().nth(1).is_some() => {
                return Err(self.missing(&name))
            }
            Place::Missing { .. } => return Err(self.no_create_at_root(&dst)),
            Place::In { root, rel } if rel.is_root() && !root.name.is_empty() => {
                return Err(StorageError::Conflict(format!("'{dst}' already exists")))
            }
            Place::In { root, rel } => (root, rel),
        };
        if from_root.name != to_root.name {
            return Err(StorageError::PermissionDenied(format!(
                "cannot move '{src}' to '{dst}': moves between two sandboxes are not supported; \
                 transfer the files and remove the originals instead"
            )));
        }
        from_root
            .backend
            .rename(&from, &to)
            .await
            .map_err(|e| from_root.context(e))
    }

    /// Removes a file, or a folder (only when empty unless `recursive`). Sandbox roots stay.
    pub async fn rm(&self, path: &str, recursive: bool) -> StorageResult<()> {
        let path = RelPath::parse(path)?;
        match self.locate(&path) {
            Place::VirtualRoot => Err(StorageError::PermissionDenied(
                "'/' cannot be removed".into(),
            )),
            Place::Missing { name } => Err(self.missing(&name)),
            Place::In { rel, .. } if rel.is_root() => Err(StorageError::PermissionDenied(format!(
                "'{path}' is the root of a sandbox: it cannot be removed"
            ))),
            Place::In { root, rel } => root
                .backend
                .remove(&rel, recursive)
                .await
                .map_err(|e| root.context(e)),
        }
    }
}
