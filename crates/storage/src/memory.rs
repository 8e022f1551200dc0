//! An in-memory [`Backend`] with the File backend's semantics, for tests that should not touch
//! disk (the VirtualFs tests here, and other crates' tests).

use crate::backend::{Backend, Entry, EntryKind, Page, Usage};
use crate::error::{StorageError, StorageResult};
use crate::path::RelPath;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
struct Node {
    kind: EntryKind,
    size: u64,
    modification_time: i64,
    executable: bool,
}

/// A tree of files (sizes only, no contents) and folders kept in memory. The root always exists.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    /// Every entry but the root, by its path (`a/b/c`).
    nodes: Mutex<BTreeMap<String, Node>>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl MemoryBackend {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn nodes(&self) -> MutexGuard<'_, BTreeMap<String, Node>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert or remove loop that keeps it a valid tree), so a poisoned lock is usable.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a file of `size` bytes at `path`, creating missing parent folders.
    pub fn add_file(&self, path: &str, size: u64, executable: bool) -> StorageResult<()> {
        let path = RelPath::parse(path)?;
        if path.is_root() {
            return Err(StorageError::Conflict("the root is a folder".into()));
        }
        let mut nodes = self.nodes();
        make_dirs(&mut nodes, &path.parent())?;
        if let Some(Node {
            kind: EntryKind::Directory,
            ..
        }) = nodes.get(path.as_str())
        {
            return Err(StorageError::Conflict(format!("'{path}' is a folder")));
        }
        nodes.insert(
            path.as_str().to_string(),
            Node {
                kind: EntryKind::File,
                size,
                modification_time: now_micros(),
                executable,
            },
        );
        Ok(())
    }
}

fn entry(name: &str, node: &Node) -> Entry {
    Entry {
        name: name.to_string(),
        kind: node.kind,
        size: node.size,
        modification_time: Some(node.modification_time),
        executable: node.executable,
        symlink: false,
        node: None,
    }
}

fn is_dir(nodes: &BTreeMap<String, Node>, path: &RelPath) -> bool {
    path.is_root()
        || matches!(
            nodes.get(path.as_str()),
            Some(Node {
                kind: EntryKind::Directory,
                ..
            })
        )
}

fn exists(nodes: &BTreeMap<String, Node>, path: &RelPath) -> bool {
    path.is_root() || nodes.contains_key(path.as_str())
}

/// The keys strictly below `path`.
fn descendants<'a>(
    nodes: &'a BTreeMap<String, Node>,
    path: &RelPath,
) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
    let prefix = if path.is_root() {
        String::new()
    } else {
        format!("{}/", path.as_str())
    };
    nodes
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
}

fn make_dirs(nodes: &mut BTreeMap<String, Node>, path: &RelPath) -> StorageResult<()> {
    let mut current = RelPath::root();
    for segment in path.segments().map(str::to_string).collect::<Vec<_>>() {
        current = current.join(&segment)?;
        match nodes.get(current.as_str()) {
            Some(Node {
                kind: EntryKind::Directory,
                ..
            }) => {}
            Some(_) => {
                return Err(StorageError::Conflict(format!(
                    "'{current}' is a file, so no folder can be made there"
                )))
            }
            None => {
                nodes.insert(
                    current.as_str().to_string(),
                    Node {
                        kind: EntryKind::Directory,
                        size: 0,
                        modification_time: now_micros(),
                        executable: false,
                    },
                );
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for MemoryBackend {
    fn type_name(&self) -> &'static str {
        "Memory"
    }

    async fn stat(&self, path: &RelPath) -> StorageResult<Option<Entry>> {
        if path.is_root() {
            return Ok(Some(Entry {
                name: String::new(),
                kind: EntryKind::Directory,
                size: 0,
                modification_time: None,
                executable: false,
                symlink: false,
                node: None,
            }));
        }
        Ok(self
            .nodes()
            .get(path.as_str())
            .map(|node| entry(path.name(), node)))
    }

    async fn list(&self, dir: &RelPath, limit: usize, cursor: Option<&str>) -> StorageResult<Page> {
        let nodes = self.nodes();
        if !exists(&nodes, dir) {
            return Err(StorageError::NotFound(format!("'{dir}' does not exist")));
        }
        if !is_dir(&nodes, dir) {
            return Err(StorageError::Conflict(format!(
                "'{dir}' is a file, not a folder"
            )));
        }
        let skip = if dir.is_root() {
            0
        } else {
            dir.as_str().len() + 1
        };
        let mut children = descendants(&nodes, dir)
            .filter(|(k, _)| !k[skip..].contains('/'))
            .map(|(k, node)| (&k[skip..], node))
            .filter(|(name, _)| cursor.is_none_or(|c| *name > c));
        let entries: Vec<Entry> = children
            .by_ref()
            .take(limit.max(1))
            .map(|(name, node)| entry(name, node))
            .collect();
        let more = children.next().is_some();
        let next_cursor = if more {
            entries.last().map(|e| e.name.clone())
        } else {
            None
        };
        Ok(Page {
            entries,
            next_cursor,
        })
    }

    async fn usage(&self, path: &RelPath) -> StorageResult<Usage> {
        let nodes = self.nodes();
        if !exists(&nodes, path) {
            return Err(StorageError::NotFound(format!("'{path}' does not exist")));
        }
        if !is_dir(&nodes, path) {
            let size = nodes.get(path.as_str()).map_or(0, |n| n.size);
            return Ok(Usage {
                total_size: size,
                total_files: 1,
                total_directories: 0,
            });
        }
        let mut usage = Usage::default();
        for (_, node) in descendants(&nodes, path) {
            match node.kind {
                EntryKind::File => {
                    usage.total_files += 1;
                    usage.total_size += node.size;
                }
                EntryKind::Directory => usage.total_directories += 1,
            }
        }
        Ok(usage)
    }

    async fn mkdir(&self, path: &RelPath) -> StorageResult<()> {
        make_dirs(&mut self.nodes(), path)
    }

    async fn create_file(&self, path: &RelPath) -> StorageResult<()> {
        let mut nodes = self.nodes();
        if path.is_root() || nodes.contains_key(path.as_str()) {
            return Err(StorageError::Conflict(format!("'{path}' already exists")));
        }
        if !is_dir(&nodes, &path.parent()) {
            return Err(StorageError::NotFound(format!(
                "the folder '{}' does not exist: create it first",
                path.parent()
            )));
        }
        nodes.insert(
            path.as_str().to_string(),
            Node {
                kind: EntryKind::File,
                size: 0,
                modification_time: now_micros(),
                executable: false,
            },
        );
        Ok(())
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> StorageResult<()> {
        let mut nodes = self.nodes();
        if from.is_root() {
            return Err(StorageError::PermissionDenied(
                "the sandbox root cannot be moved".into(),
            ));
        }
        if !exists(&nodes, from) {
            return Err(StorageError::NotFound(format!("'{from}' does not exist")));
        }
        if exists(&nodes, to) {
            return Err(StorageError::Conflict(format!("'{to}' already exists")));
        }
        if !is_dir(&nodes, &to.parent()) {
            return Err(StorageError::NotFound(format!(
                "the folder '{}' does not exist: create it first",
                to.parent()
            )));
        }
        if to.starts_with(from) {
            return Err(StorageError::Conflict(format!(
                "cannot move '{from}' into itself ('{to}')"
            )));
        }
        let moved: Vec<String> = descendants(&nodes, from).map(|(k, _)| k.clone()).collect();
        if let Some(node) = nodes.remove(from.as_str()) {
            nodes.insert(to.as_str().to_string(), node);
        }
        for key in moved {
            if let Some(node) = nodes.remove(&key) {
                let new_key = format!("{}{}", to.as_str(), &key[from.as_str().len()..]);
                nodes.insert(new_key, node);
            }
        }
        Ok(())
    }

    async fn remove(&self, path: &RelPath, recursive: bool) -> StorageResult<()> {
        let mut nodes = self.nodes();
        if path.is_root() {
            return Err(StorageError::PermissionDenied(
                "the sandbox root cannot be removed".into(),
            ));
        }
        if !exists(&nodes, path) {
            return Err(StorageError::NotFound(format!("'{path}' does not exist")));
        }
        let below: Vec<String> = descendants(&nodes, path).map(|(k, _)| k.clone()).collect();
        if !below.is_empty() && !recursive {
            return Err(StorageError::Conflict(format!(
                "the folder '{path}' is not empty: remove it with recursive=true"
            )));
        }
        for key in below {
            nodes.remove(&key);
        }
        nodes.remove(path.as_str());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn tree_operations() {
        let m = MemoryBackend::new();
        m.mkdir(&p("a/b")).await.unwrap();
        m.add_file("a/x", 5, true).unwrap();
        m.add_file("a/b/y", 7, false).unwrap();
        m.add_file("a-1", 1, false).unwrap();
        let page = m.list(&p("a"), 10, None).await.unwrap();
        let names: Vec<_> = page.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b", "x"]);
        assert!(page.entries[1].executable);
        let root: Vec<_> = m.list(&RelPath::root(), 10, None).await.unwrap().entries;
        assert_eq!(root.len(), 2);
        let usage = m.usage(&p("a")).await.unwrap();
        assert_eq!(
            (usage.total_size, usage.total_files, usage.total_directories),
            (12, 2, 1)
        );
        assert!(matches!(
            m.remove(&p("a"), false).await,
            Err(StorageError::Conflict(_))
        ));
        m.rename(&p("a"), &p("c")).await.unwrap();
        assert!(m.stat(&p("c/b/y")).await.unwrap().is_some());
        assert!(matches!(
            m.rename(&p("c"), &p("c/b/z")).await,
            Err(StorageError::Conflict(_))
        ));
        assert!(matches!(
            m.create_file(&p("nope/f")).await,
            Err(StorageError::NotFound(_))
        ));
        m.remove(&p("c"), true).await.unwrap();
        assert!(m.stat(&p("c/b")).await.unwrap().is_none());
        assert!(matches!(
            m.remove(&RelPath::root(), true).await,
            Err(StorageError::PermissionDenied(_))
        ));
    }

    #[tokio::test]
    async fn paging() {
        let m = MemoryBackend::new();
        for i in 0..25 {
            m.add_file(&format!("d/f{i:03}"), 1, false).unwrap();
        }
        let mut cursor = None;
        let mut seen = Vec::new();
        loop {
            let page = m.list(&p("d"), 10, cursor.as_deref()).await.unwrap();
            assert!(page.entries.len() <= 10);
            seen.extend(page.entries.into_iter().map(|e| e.name));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }
}
