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

/// The most entries one `ls` page returns, whatever `limit` asks for (the rest follows through
/// `nextCursor`). Bounds the memory one request can make the server use.
pub const MAX_LIST_LIMIT: usize = 100_000;

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
        symlink: false,
        node: None,
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
    /// `limit` is clamped to `1..=`[`MAX_LIST_LIMIT`]; `cursor` is the `next_cursor` of the
    /// previous page of the same path.
    pub async fn ls(
        &self,
        path: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> StorageResult<Listing> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
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
        let page_size = state.page.clamp(1, MAX_LIST_LIMIT);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use serde_json::json;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    /// Opens a prepared Memory backend per sandbox path.
    struct MemoryOpener(HashMap<String, Arc<MemoryBackend>>);

    impl BackendOpener for MemoryOpener {
        fn open(&self, config: &SandboxConfig) -> StorageResult<Arc<dyn Backend>> {
            self.0
                .get(config.path())
                .map(|b| b.clone() as Arc<dyn Backend>)
                .ok_or_else(|| StorageError::Backend(format!("no test backend {}", config.path())))
        }
    }

    fn memories(paths: &[&str]) -> (MemoryOpener, Vec<Arc<MemoryBackend>>) {
        let backends: Vec<_> = paths
            .iter()
            .map(|_| Arc::new(MemoryBackend::new()))
            .collect();
        let map = paths
            .iter()
            .zip(&backends)
            .map(|(p, b)| (p.to_string(), b.clone()))
            .collect();
        (MemoryOpener(map), backends)
    }

    fn alice() -> UserIdentity {
        UserIdentity::from_login("alice")
    }

    fn names(listing: &Listing) -> Vec<&str> {
        listing.entries.iter().map(|e| e.name.as_str()).collect()
    }

    async fn all_names(vfs: &VirtualFs, path: &str, limit: usize) -> Vec<String> {
        let mut cursor: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let page = vfs.ls(path, limit, cursor.as_deref()).await.unwrap();
            assert!(page.entries.len() <= limit);
            out.extend(page.entries.into_iter().map(|e| e.name));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    fn multi() -> (VirtualFs, Vec<Arc<MemoryBackend>>) {
        let mapping = Mapping::parse(&json!({"media": "/m", "home": "/h", "zeta": "/z"})).unwrap();
        let (opener, backends) = memories(&["/m", "/h", "/z"]);
        let vfs = VirtualFs::new(Some(&mapping), &alice(), &opener).unwrap();
        (vfs, backends)
    }

    #[tokio::test]
    async fn several_roots_make_a_virtual_root() {
        let (vfs, backends) = multi();
        backends[0].add_file("clips/a.mov", 100, false).unwrap();
        backends[1].add_file("notes.txt", 5, false).unwrap();

        let roots = vfs.roots();
        assert_eq!(
            serde_json::to_value(&roots).unwrap(),
            json!([
                {"name": "home", "type": "directory", "sandboxType": "File", "path": "/home"},
                {"name": "media", "type": "directory", "sandboxType": "File", "path": "/media"},
                {"name": "zeta", "type": "directory", "sandboxType": "File", "path": "/zeta"},
            ])
        );
        let root = vfs.ls("/", 1000, None).await.unwrap();
        assert_eq!(names(&root), ["home", "media", "zeta"]);
        assert!(root.entries.iter().all(|e| e.kind == EntryKind::Directory));
        assert_eq!(all_names(&vfs, "/", 1).await, ["home", "media", "zeta"]);
        assert_eq!(all_names(&vfs, "", 2).await, ["home", "media", "zeta"]);

        let media = vfs.ls("/media", 1000, None).await.unwrap();
        assert_eq!(media.path, "/media");
        assert_eq!(names(&media), ["clips"]);
        let clips = vfs.ls("/media/clips/", 1000, None).await.unwrap();
        assert_eq!(clips.path, "/media/clips");
        assert_eq!(
            serde_json::to_value(&clips).unwrap()["entries"][0]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["executable", "modificationTime", "name", "size", "type"]
        );
        // ls of a file: a page with just that file.
        let file = vfs.ls("/media/clips/a.mov", 10, None).await.unwrap();
        assert_eq!(names(&file), ["a.mov"]);
        assert_eq!(file.entries[0].size, 100);

        let usage = vfs.du("/").await.unwrap();
        assert_eq!(
            (usage.total_size, usage.total_files, usage.total_directories),
            (105, 2, 4)
        );
        assert_eq!(vfs.du("/media").await.unwrap().total_directories, 1);

        assert!(matches!(
            vfs.ls("/nosuch", 10, None).await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            vfs.du("/nosuch").await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            vfs.ls("/media/nosuch", 10, None).await,
            Err(StorageError::NotFound(m)) if m.contains("/media")
        ));
    }

    #[tokio::test]
    async fn nothing_is_created_or_removed_at_a_virtual_root() {
        let (vfs, backends) = multi();
        backends[0].add_file("f", 1, false).unwrap();
        let denied = |r: StorageResult<()>| matches!(r, Err(StorageError::PermissionDenied(_)));
        let not_found = |r: StorageResult<()>| matches!(r, Err(StorageError::NotFound(_)));
        let conflict = |r: StorageResult<()>| matches!(r, Err(StorageError::Conflict(_)));

        assert!(denied(vfs.mkdir("/newtop").await));
        assert!(denied(vfs.mkdir("/newtop/below").await));
        assert!(denied(vfs.mk_file("/newfile").await));
        assert!(not_found(vfs.mk_file("/nosuch/file").await));
        assert!(conflict(vfs.mk_file("/").await));
        assert!(conflict(vfs.mk_file("/media").await));
        vfs.mkdir("/").await.unwrap();
        vfs.mkdir("/media").await.unwrap();
        vfs.mkdir("/media/a/b").await.unwrap();
        vfs.mk_file("/media/a/b/c").await.unwrap();
        assert!(not_found(vfs.mk_file("/media/x/y").await));
        assert!(conflict(vfs.mk_file("/media/a/b/c").await));

        assert!(denied(vfs.rm("/", true).await));
        assert!(denied(vfs.rm("/media", true).await));
        assert!(not_found(vfs.rm("/nosuch", true).await));
        assert!(not_found(vfs.rm("/media/nosuch", true).await));

        assert!(denied(vfs.mv("/media", "/films").await));
        assert!(denied(vfs.mv("/", "/films").await));
        assert!(denied(vfs.mv("/media/f", "/f").await));
        assert!(not_found(vfs.mv("/nosuch/f", "/media/g").await));
        assert!(not_found(vfs.mv("/media/nosuch", "/media/g").await));
        assert!(not_found(vfs.mv("/media/f", "/nosuch/g").await));
        assert!(conflict(vfs.mv("/media/f", "/home").await));
        assert!(conflict(vfs.mv("/media/f", "/").await));
        let across = vfs.mv("/media/f", "/home/f").await.unwrap_err();
        assert!(
            matches!(&across, StorageError::PermissionDenied(m) if m.contains("between two sandboxes")),
            "{across:?}"
        );
        vfs.mv("/media/f", "/media/a/g").await.unwrap();
        assert!(backends[0]
            .stat(&RelPath::parse("a/g").unwrap())
            .await
            .unwrap()
            .is_some());
        assert!(conflict(vfs.rm("/media/a", false).await));
        vfs.rm("/media/a", true).await.unwrap();

        let (backend, rel) = vfs.resolve("/home/x/y").unwrap();
        assert_eq!(backend.type_name(), "Memory");
        assert_eq!(rel.as_str(), "x/y");
        assert!(matches!(
            vfs.resolve("/"),
            Err(StorageError::PermissionDenied(_))
        ));
        assert!(matches!(
            vfs.resolve("/nosuch/x"),
            Err(StorageError::NotFound(_))
        ));
        let (_, rel) = vfs.resolve("/zeta").unwrap();
        assert!(rel.is_root());
    }

    #[tokio::test]
    async fn a_single_root_is_the_users_root() {
        let mapping = Mapping::parse(&json!({"": "/only"})).unwrap();
        let (opener, backends) = memories(&["/only"]);
        let vfs = VirtualFs::new(Some(&mapping), &alice(), &opener).unwrap();
        assert_eq!(
            serde_json::to_value(vfs.roots()).unwrap(),
            json!([{"name": "/", "type": "directory", "sandboxType": "File", "path": "/"}])
        );
        vfs.mkdir("/top").await.unwrap();
        vfs.mk_file("/file").await.unwrap();
        backends[0].add_file("top/x", 3, false).unwrap();
        let listing = vfs.ls("/", 10, None).await.unwrap();
        assert_eq!(listing.path, "/");
        assert_eq!(names(&listing), ["file", "top"]);
        let usage = vfs.du("/").await.unwrap();
        assert_eq!((usage.total_files, usage.total_directories), (2, 1));
        vfs.mv("/file", "/top/file").await.unwrap();
        assert!(matches!(
            vfs.rm("/", true).await,
            Err(StorageError::PermissionDenied(_))
        ));
        assert!(matches!(
            vfs.ls("/missing", 10, None).await,
            Err(StorageError::NotFound(m)) if m == "'/missing' does not exist"
        ));
        let (_, rel) = vfs.resolve("/").unwrap();
        assert!(rel.is_root());
    }

    #[tokio::test]
    async fn a_root_with_mounts_merges_them_in_order() {
        let mapping = Mapping::parse(&json!({"": "/base", "m": "/m", "d": "/d"})).unwrap();
        let (opener, backends) = memories(&["/base", "/m", "/d"]);
        let vfs = VirtualFs::new(Some(&mapping), &alice(), &opener).unwrap();
        for name in ["a", "c", "e", "m", "n", "z"] {
            backends[0].add_file(name, 1, false).unwrap();
        }
        backends[1].add_file("inside-m", 10, false).unwrap();
        assert_eq!(vfs.roots().len(), 1);
        let expected = ["a", "c", "d", "e", "m", "n", "z"];
        let full = vfs.ls("/", 1000, None).await.unwrap();
        assert_eq!(names(&full), expected);
        assert_eq!(full.next_cursor, None);
        // "m" is the mounted sandbox, not the base's file of that name.
        assert_eq!(full.entries[4].kind, EntryKind::Directory);
        for limit in 1..=8 {
            assert_eq!(all_names(&vfs, "/", limit).await, expected, "limit {limit}");
        }
        assert_eq!(names(&vfs.ls("/m", 10, None).await.unwrap()), ["inside-m"]);
        let usage = vfs.du("/").await.unwrap();
        assert_eq!((usage.total_files, usage.total_directories), (7, 2));
        assert!(matches!(
            vfs.ls("/", 10, Some("garbage")).await,
            Err(StorageError::InvalidConfig { field, .. }) if field == "cursor"
        ));
        assert!(matches!(
            vfs.mv("/a", "/m/a").await,
            Err(StorageError::PermissionDenied(_))
        ));
        assert!(matches!(
            vfs.rm("/m", true).await,
            Err(StorageError::PermissionDenied(_))
        ));
        vfs.mkdir("/newdir").await.unwrap();
    }

    #[tokio::test]
    async fn user_paths_cannot_leave_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("outside.txt"), b"x").unwrap();
        let mapping = Mapping::parse(&json!({"": root.to_str().unwrap()})).unwrap();
        let vfs = VirtualFs::new(Some(&mapping), &alice(), &FileOnlyOpener).unwrap();
        for bad in [
            "/..",
            "../outside.txt",
            "/a/../../outside.txt",
            "/./../",
            "/a\0b",
            "/\u{1}x",
        ] {
            assert!(
                matches!(
                    vfs.ls(bad, 10, None).await,
                    Err(StorageError::PermissionDenied(_))
                ),
                "{bad:?}"
            );
            assert!(
                matches!(
                    vfs.rm(bad, true).await,
                    Err(StorageError::PermissionDenied(_))
                ),
                "{bad:?}"
            );
            assert!(matches!(
                vfs.resolve(bad),
                Err(StorageError::PermissionDenied(_))
            ));
        }
        // Absolute-looking tricks stay inside: they name folders of the sandbox.
        for inside in [
            "//etc",
            "///etc/passwd",
            "/%2e%2e/etc",
            "/..%2f..%2fetc",
            "\\..\\etc",
        ] {
            assert!(
                matches!(
                    vfs.ls(inside, 10, None).await,
                    Err(StorageError::NotFound(_))
                ),
                "{inside:?}"
            );
        }
        vfs.mkdir("//etc").await.unwrap();
        assert!(root.join("etc").is_dir());
        assert!(matches!(
            vfs.mv("/etc", "/../etc2").await,
            Err(StorageError::PermissionDenied(_))
        ));
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        assert!(matches!(
            vfs.ls("/link", 10, None).await,
            Err(StorageError::PermissionDenied(_))
        ));
        assert!(matches!(
            vfs.mk_file("/link/evil").await,
            Err(StorageError::PermissionDenied(_))
        ));
        assert_eq!(names(&vfs.ls("/", 10, None).await.unwrap()), ["etc"]);
        // A huge limit is clamped, not allocated.
        assert_eq!(
            names(&vfs.ls("/", usize::MAX, None).await.unwrap()),
            ["etc"]
        );
        assert_eq!(names(&vfs.ls("/", 0, None).await.unwrap()), ["etc"]);
    }

    #[tokio::test]
    async fn no_mapping_is_the_whole_file_system() {
        let vfs = VirtualFs::new(None, &alice(), &FileOnlyOpener).unwrap();
        assert_eq!(
            serde_json::to_value(vfs.roots()).unwrap(),
            json!([{"name": "/", "type": "directory", "sandboxType": "File", "path": "/"}])
        );
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"abc").unwrap();
        let listing = vfs
            .ls(tmp.path().to_str().unwrap(), 10, None)
            .await
            .unwrap();
        assert_eq!(names(&listing), ["f"]);
        let file_path = format!("{}/f", tmp.path().to_str().unwrap());
        let file = vfs.ls(&file_path, 10, None).await.unwrap();
        assert_eq!(names(&file), ["f"]);
        assert_eq!(file.entries[0].size, 3);
        let shape = serde_json::to_value(&file).unwrap();
        assert_eq!(shape["path"], file_path);
        assert_eq!(shape["nextCursor"], serde_json::Value::Null);
        assert_eq!(shape["entries"][0]["type"], "file");
        assert!(shape["entries"][0]["modificationTime"].is_i64());
    }

    #[tokio::test]
    async fn placeholder_folders_are_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_str().unwrap();
        let mapping = Mapping::parse(&json!({
            "": format!("{base}/homes/%u"),
            "shared": format!("{base}/shared"),
        }))
        .unwrap();
        std::fs::create_dir(dir.path().join("homes")).unwrap();
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        let user = UserIdentity::from_login("alice@example.com");
        let vfs = VirtualFs::new(Some(&mapping), &user, &FileOnlyOpener).unwrap();
        let home = dir.path().join("homes/alice");
        assert!(home.is_dir());
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        vfs.mk_file("/hello").await.unwrap();
        assert!(home.join("hello").is_file());
        // A second login finds the folder and leaves it alone.
        VirtualFs::new(Some(&mapping), &user, &FileOnlyOpener).unwrap();
        assert!(home.join("hello").is_file());

        // Names that are no single folder name are refused before anything is created.
        let evil = UserIdentity::from_login("../../etc");
        assert!(matches!(
            VirtualFs::new(Some(&mapping), &evil, &FileOnlyOpener),
            Err(StorageError::PermissionDenied(_))
        ));

        // The part before the placeholder must exist: a typo does not create folders.
        let typo = Mapping::parse(&json!({"": format!("{base}/hmoes/%u")})).unwrap();
        assert!(matches!(
            VirtualFs::new(Some(&typo), &user, &FileOnlyOpener),
            Err(StorageError::Backend(m)) if m.contains("hmoes")
        ));
        assert!(!dir.path().join("hmoes").exists());
    }

    /// The server runs these futures on a multi-threaded runtime: they must be `Send`.
    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (vfs, _) = multi();
        assert_send(&vfs.ls("/", 10, None));
        assert_send(&vfs.du("/"));
        assert_send(&vfs.mkdir("/media/x"));
        assert_send(&vfs.mk_file("/media/x"));
        assert_send(&vfs.mv("/media/x", "/media/y"));
        assert_send(&vfs.rm("/media/x", true));
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<VirtualFs>();
    }

    #[test]
    fn file_only_opener_refuses_s3() {
        let mapping = Mapping::parse(&json!({"": {"type": "S3", "bucketName": "b"}})).unwrap();
        assert!(VirtualFs::new(Some(&mapping), &alice(), &FileOnlyOpener).is_err());
    }

    #[test]
    fn merged_cursor_round_trips() {
        let cursor = MergedCursor {
            backend: Some("token/with \"quotes\"".into()),
            skip: 3,
            mounts: 1,
            page: 1000,
        };
        assert_eq!(MergedCursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in ["", "m:", "m:zz", "m:7b", "x:00"] {
            assert!(MergedCursor::decode(bad).is_err(), "{bad}");
        }
    }
}
