//! Expands a manifest's mappings (`{destPath: srcPath}`) over the owner's VirtualFs: folders
//! recursively (page by page), empty folders as `isEmptyDir` entries, the executable bit and
//! modification time carried.
//!
//! Symbolic links: the File backend follows links that stay inside the sandbox and never
//! follows links that leave it (those entries are refused). VirtualFs does not tell links from
//! their targets, so `symlinks: "ignore"` behaves like `"follow"` for links inside the
//! sandbox (documented in docs/engine.md).

use crate::error::EngineError;
use slipstream_storage::{EntryKind, RelPath, StorageError, VirtualFs};
use std::collections::HashSet;

/// Listing page size while scanning.
const PAGE: usize = 1000;

/// One regular file or empty folder of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// The user's virtual path of the source.
    pub src_path: String,
    /// Relative destination path (`a/b.txt`), below the transfer's destinationPath.
    pub dest_path: String,
    pub size: u64,
    pub is_empty_dir: bool,
    pub executable: bool,
    /// µs since the epoch.
    pub mtime: Option<i64>,
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// What `src` is: `Some((size, executable, mtime))` for a file, `None` for a folder.
async fn source_kind(
    vfs: &VirtualFs,
    src: &str,
) -> Result<Option<(u64, bool, Option<i64>)>, EngineError> {
    if RelPath::parse(src)?.is_root() {
        return Ok(None);
    }
    let (backend, rel) = vfs.resolve(src)?;
    match backend.stat(&rel).await? {
        None => Err(EngineError::not_found(format!(
            "source '{src}' does not exist: check the srcPath of the mapping"
        ))),
        Some(entry) if entry.kind == EntryKind::File => Ok(Some((
            entry.size,
            entry.executable,
            entry.modification_time,
        ))),
        Some(_) => Ok(None),
    }
}

/// Expands `mappings` (destination path → source path). Destination paths must be distinct.
pub async fn scan(
    vfs: &VirtualFs,
    mappings: &[(String, String)],
) -> Result<Vec<ManifestFile>, EngineError> {
    let mut files = Vec::new();
    for (dest, src) in mappings {
        let dest = RelPath::parse(dest)
            .map_err(|e| EngineError::invalid_param("mappings", e.to_string()))?;
        match source_kind(vfs, src).await? {
            Some((size, executable, mtime)) => {
                if dest.is_root() {
                    return Err(EngineError::invalid_param(
                        "mappings",
                        format!("the file '{src}' needs a destination path (the key is empty)"),
                    ));
                }
                files.push(ManifestFile {
                    src_path: src.clone(),
                    dest_path: dest.as_str().to_string(),
                    size,
                    is_empty_dir: false,
                    executable,
                    mtime,
                });
            }
            None => walk(vfs, src, dest.as_str(), &mut files).await?,
        }
    }
    let mut seen = HashSet::new();
    for file in &files {
        if !seen.insert(file.dest_path.as_str()) {
            return Err(EngineError::invalid_param(
                "mappings",
                format!(
                    "two sources map to the destination '{}': give each a distinct destPath",
                    file.dest_path
                ),
            ));
        }
    }
    Ok(files)
}

/// Adds everything below the folder `src` (sorted by name, depth first) as `dest/...`.
async fn walk(
    vfs: &VirtualFs,
    src: &str,
    dest: &str,
    files: &mut Vec<ManifestFile>,
) -> Result<(), EngineError> {
    // Folders still to list, last one next.
    let mut stack = vec![(src.to_string(), dest.to_string())];
    while let Some((folder, folder_dest)) = stack.pop() {
        let mut cursor: Option<String> = None;
        let mut subfolders = Vec::new();
        let mut empty = true;
        loop {
            let page = vfs
                .ls(&folder, PAGE, cursor.as_deref())
                .await
                .map_err(|e| match e {
                    StorageError::NotFound(m) => EngineError::not_found(format!(
                        "source folder '{folder}' cannot be listed: {m}"
                    )),
                    other => other.into(),
                })?;
            for entry in page.entries {
                if entry.name == "." || entry.name == ".." {
                    continue;
                }
                empty = false;
                let src_path = join(&folder, &entry.name);
                let dest_path = join(&folder_dest, &entry.name);
                match entry.kind {
                    EntryKind::Directory => subfolders.push((src_path, dest_path)),
                    EntryKind::File => files.push(ManifestFile {
                        src_path,
                        dest_path,
                        size: entry.size,
                        is_empty_dir: false,
                        executable: entry.executable,
                        mtime: entry.modification_time,
                    }),
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        if empty && !folder_dest.is_empty() {
            files.push(ManifestFile {
                src_path: folder.clone(),
                dest_path: folder_dest.clone(),
                size: 0,
                is_empty_dir: true,
                executable: false,
                mtime: None,
            });
        }
        stack.extend(subfolders.into_iter().rev());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipstream_storage::{FileOnlyOpener, Mapping, UserIdentity};

    #[tokio::test]
    async fn folders_expand_with_empty_folders_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join("src/empty")).unwrap();
        std::fs::write(root.join("src/a.txt"), b"hello").unwrap();
        std::fs::write(root.join("src/sub/b.bin"), vec![1u8; 3000]).unwrap();
        std::fs::write(root.join("src/sub/deeper/run.sh"), b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("src/sub/deeper/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let mapping = Mapping::parse(&serde_json::json!({"": root.to_str().unwrap()})).unwrap();
        let vfs = VirtualFs::new(
            Some(&mapping),
            &UserIdentity::from_login("u"),
            &FileOnlyOpener,
        )
        .unwrap();
        let files = scan(
            &vfs,
            &[
                ("out".into(), "/src".into()),
                ("single.txt".into(), "/src/a.txt".into()),
            ],
        )
        .await
        .unwrap();
        let dests: Vec<&str> = files.iter().map(|f| f.dest_path.as_str()).collect();
        assert_eq!(
            dests,
            [
                "out/a.txt",
                "out/empty",
                "out/sub/b.bin",
                "out/sub/deeper/run.sh",
                "single.txt"
            ]
        );
        assert!(files[1].is_empty_dir);
        assert_eq!(files[2].size, 3000);
        assert!(files[3].executable && !files[0].executable);
        assert!(files[0].mtime.is_some());

        let missing = scan(&vfs, &[("x".into(), "/nope".into())])
            .await
            .unwrap_err();
        assert_eq!(missing.code, -32004);
        assert!(missing.message.contains("/nope"));
        let dup = scan(
            &vfs,
            &[
                ("a".into(), "/src/a.txt".into()),
                ("b".into(), "/src".into()),
            ],
        )
        .await;
        assert!(dup.is_ok());
        let escape = scan(&vfs, &[("../x".into(), "/src/a.txt".into())])
            .await
            .unwrap_err();
        assert_eq!(escape.code, -32602);
        let escape = scan(&vfs, &[("x".into(), "/../etc".into())])
            .await
            .unwrap_err();
        assert_eq!(escape.code, -32003);
    }
}
