//! Expands a manifest's mappings (`{destPath: srcPath}`) over the owner's VirtualFs: folders
//! recursively (page by page), empty folders as `isEmptyDir` entries, the executable bit and
//! modification time carried.
//!
//! Symbolic links (only File sandboxes have them; the backend flags them in its entries):
//! - links that leave the sandbox, dangle or loop are never entries of the backend, so they
//!   are never in a manifest, whatever `symlinks` says (a mapping that names one as its source
//!   is "does not exist");
//! - [`Symlinks::Follow`]: a link inside the sandbox stands for its target: a link to a file is
//!   that file, a link to a folder is walked like a folder. A folder reached again below itself
//!   (a link to one of its own parent folders) is not walked again: everything below it is in
//!   the manifest already, and walking it would never end; the link is left out as if absent
//!   (with a warning in the log);
//! - [`Symlinks::Ignore`]: links are left out as if absent (a folder holding only links is an
//!   empty folder). A mapping whose source itself is a link is refused (-32602), as the caller
//!   named something this setting says to leave out; links in the source's parent folders are
//!   resolved as usual.

use crate::error::EngineError;
use slipstream_storage::{EntryKind, NodeId, RelPath, StorageError, VirtualFs};
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

/// `createManifest`'s `symlinks`: what the scan does with symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Links inside the sandbox stand for their targets (the default).
    Follow,
    /// Links are left out.
    Ignore,
}

impl Symlinks {
    /// `"follow"` or `"ignore"`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Symlinks> {
        match text {
            "follow" => Some(Symlinks::Follow),
            "ignore" => Some(Symlinks::Ignore),
            _ => None,
        }
    }
}

/// What a mapping's source is.
enum Source {
    File {
        size: u64,
        executable: bool,
        mtime: Option<i64>,
    },
    /// A folder; `node` is its identity when the backend has one.
    Folder { node: Option<NodeId> },
}

/// What the source `src` of the mapping to `dest` is.
async fn source_kind(
    vfs: &VirtualFs,
    dest: &str,
    src: &str,
    symlinks: Symlinks,
) -> Result<Source, EngineError> {
    if RelPath::parse(src)?.is_root() {
        // The root of a sandbox is never a link. `/` of a user with several named sandboxes
        // belongs to no backend (and has no identity): it only lists them.
        let node = match vfs.resolve(src) {
            Ok((backend, rel)) => backend.stat(&rel).await?.and_then(|entry| entry.node),
            Err(_) => None,
        };
        return Ok(Source::Folder { node });
    }
    let (backend, rel) = vfs.resolve(src)?;
    let Some(entry) = backend.stat(&rel).await? else {
        return Err(EngineError::not_found(format!(
            "source '{src}' does not exist: check the srcPath of the mapping"
        )));
    };
    if entry.symlink && symlinks == Symlinks::Ignore {
        return Err(EngineError::invalid_param(
            "mappings",
            format!(
                "the source '{src}' of the mapping '{dest}' is a symbolic link and symlinks is \
                 \"ignore\": name the link's target instead, or pass symlinks \"follow\""
            ),
        ));
    }
    Ok(match entry.kind {
        EntryKind::File => Source::File {
            size: entry.size,
            executable: entry.executable,
            mtime: entry.modification_time,
        },
        EntryKind::Directory => Source::Folder { node: entry.node },
    })
}

/// Expands `mappings` (destination path → source path). Destination paths must be distinct.
pub async fn scan(
    vfs: &VirtualFs,
    mappings: &[(String, String)],
    symlinks: Symlinks,
) -> Result<Vec<ManifestFile>, EngineError> {
    let mut files = Vec::new();
    for (dest, src) in mappings {
        let dest_path = RelPath::parse(dest)
            .map_err(|e| EngineError::invalid_param("mappings", e.to_string()))?;
        match source_kind(vfs, dest, src, symlinks).await? {
            Source::File {
                size,
                executable,
                mtime,
            } => {
                if dest_path.is_root() {
                    return Err(EngineError::invalid_param(
                        "mappings",
                        format!("the file '{src}' needs a destination path (the key is empty)"),
                    ));
                }
                files.push(ManifestFile {
                    src_path: src.clone(),
                    dest_path: dest_path.as_str().to_string(),
                    size,
                    is_empty_dir: false,
                    executable,
                    mtime,
                });
            }
            Source::Folder { node } => {
                let folder = Folder {
                    src: src.clone(),
                    dest: dest_path.as_str().to_string(),
                    ancestors: node.into_iter().collect(),
                };
                walk(vfs, folder, symlinks, &mut files).await?
            }
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

/// A folder still to list.
struct Folder {
    /// The user's path of the folder.
    src: String,
    /// Its destination path.
    dest: String,
    /// The identities of the folder and of the folders walked to reach it (those known).
    ancestors: Vec<NodeId>,
}

/// Adds everything below `start` (sorted by name, depth first) as `start.dest/...`.
async fn walk(
    vfs: &VirtualFs,
    start: Folder,
    symlinks: Symlinks,
    files: &mut Vec<ManifestFile>,
) -> Result<(), EngineError> {
    // Folders still to list, last one next.
    let mut stack = vec![start];
    while let Some(Folder {
        src: folder,
        dest: folder_dest,
        ancestors,
    }) = stack.pop()
    {
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
                if entry.symlink && symlinks == Symlinks::Ignore {
                    continue;
                }
                let src_path = join(&folder, &entry.name);
                let dest_path = join(&folder_dest, &entry.name);
                match entry.kind {
                    EntryKind::Directory => {
                        let mut below = ancestors.clone();
                        if let Some(node) = entry.node {
                            if ancestors.contains(&node) {
                                tracing::warn!(
                                    path = %src_path,
                                    "manifest scan: not following a link to one of its own \
                                     parent folders (it would repeat them forever)"
                                );
                                continue;
                            }
                            below.push(node);
                        }
                        subfolders.push(Folder {
                            src: src_path,
                            dest: dest_path,
                            ancestors: below,
                        });
                    }
                    EntryKind::File => files.push(ManifestFile {
                        src_path,
                        dest_path,
                        size: entry.size,
                        is_empty_dir: false,
                        executable: entry.executable,
                        mtime: entry.modification_time,
                    }),
                }
                empty = false;
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
            Symlinks::Follow,
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

        let missing = scan(&vfs, &[("x".into(), "/nope".into())], Symlinks::Follow)
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
            Symlinks::Follow,
        )
        .await;
        assert!(dup.is_ok());
        let escape = scan(
            &vfs,
            &[("../x".into(), "/src/a.txt".into())],
            Symlinks::Follow,
        )
        .await
        .unwrap_err();
        assert_eq!(escape.code, -32602);
        let escape = scan(&vfs, &[("x".into(), "/../etc".into())], Symlinks::Follow)
            .await
            .unwrap_err();
        assert_eq!(escape.code, -32003);
    }

    /// The sandbox of `root` as a user's whole view.
    fn file_view(root: &std::path::Path) -> VirtualFs {
        let mapping = Mapping::parse(&serde_json::json!({"": root.to_str().unwrap()})).unwrap();
        VirtualFs::new(
            Some(&mapping),
            &UserIdentity::from_login("u"),
            &FileOnlyOpener,
        )
        .unwrap()
    }

    fn dests(files: &[ManifestFile]) -> Vec<&str> {
        files.iter().map(|f| f.dest_path.as_str()).collect()
    }

    #[tokio::test]
    async fn symlinks_are_followed_or_left_out() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandbox");
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        std::fs::create_dir_all(root.join("data/deep")).unwrap();
        std::fs::create_dir(root.join("src/only_links")).unwrap();
        std::fs::write(dir.path().join("outside.txt"), b"secret").unwrap();
        std::fs::write(root.join("src/a.txt"), b"hello").unwrap();
        std::fs::write(root.join("src/sub/b.txt"), b"bb").unwrap();
        std::fs::write(root.join("data/deep/d.txt"), b"ddd").unwrap();
        symlink("a.txt", root.join("src/link_file")).unwrap();
        symlink("../data", root.join("src/link_dir")).unwrap();
        symlink("nowhere", root.join("src/dangling")).unwrap();
        symlink("../../outside.txt", root.join("src/escaping")).unwrap();
        symlink("../a.txt", root.join("src/only_links/l")).unwrap();
        let vfs = file_view(&root);
        let openat2 = vfs.ls("/src/link_dir", 10, None).await.is_ok();

        let follow = scan(&vfs, &[("out".into(), "/src".into())], Symlinks::Follow)
            .await
            .unwrap();
        let ignore = scan(&vfs, &[("out".into(), "/src".into())], Symlinks::Ignore)
            .await
            .unwrap();
        assert_eq!(
            dests(&ignore),
            ["out/a.txt", "out/only_links", "out/sub/b.txt"]
        );
        assert!(ignore[1].is_empty_dir);
        if openat2 {
            assert_eq!(
                dests(&follow),
                [
                    "out/a.txt",
                    "out/link_file",
                    "out/link_dir/deep/d.txt",
                    "out/only_links/l",
                    "out/sub/b.txt"
                ]
            );
            assert_eq!(follow[2].src_path, "/src/link_dir/deep/d.txt");
            assert_eq!((follow[1].size, follow[3].size), (5, 5));
        } else {
            // Without openat2 the File backend refuses every link: "follow" has none to follow.
            assert_eq!(dests(&follow), dests(&ignore));
        }

        // A link named as the source: followed, or refused with "ignore".
        if openat2 {
            let one = scan(
                &vfs,
                &[("x".into(), "/src/link_file".into())],
                Symlinks::Follow,
            )
            .await
            .unwrap();
            assert_eq!((dests(&one), one[0].size), (vec!["x"], 5));
            let folder = scan(
                &vfs,
                &[("x".into(), "/src/link_dir".into())],
                Symlinks::Follow,
            )
            .await
            .unwrap();
            assert_eq!(dests(&folder), ["x/deep/d.txt"]);
            for src in ["/src/link_file", "/src/link_dir"] {
                let refused = scan(&vfs, &[("x".into(), src.into())], Symlinks::Ignore)
                    .await
                    .unwrap_err();
                assert_eq!(refused.code, -32602, "{}", refused.message);
                assert!(
                    refused.message.contains(src)
                        && refused.message.contains("'x'")
                        && refused.message.contains("\"ignore\""),
                    "{}",
                    refused.message
                );
            }
            // Links on the way to the source are resolved as usual.
            let through = scan(
                &vfs,
                &[("x".into(), "/src/link_dir/deep".into())],
                Symlinks::Ignore,
            )
            .await
            .unwrap();
            assert_eq!(dests(&through), ["x/d.txt"]);
        }
        // Links that leave the sandbox or dangle do not exist, in both modes.
        for symlinks in [Symlinks::Follow, Symlinks::Ignore] {
            for src in ["/src/escaping", "/src/dangling"] {
                let missing = scan(&vfs, &[("x".into(), src.into())], symlinks)
                    .await
                    .unwrap_err();
                assert_eq!(missing.code, -32004, "{}", missing.message);
            }
        }
    }

    #[tokio::test]
    async fn links_to_parent_folders_do_not_loop() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("top/mid")).unwrap();
        std::fs::write(root.join("top/mid/f"), b"f").unwrap();
        // Two links to ancestors in one folder: without a guard, 2^40 paths before the
        // kernel's link limit stops the descent.
        symlink("..", root.join("top/mid/up")).unwrap();
        symlink("../..", root.join("top/mid/up2")).unwrap();
        symlink(".", root.join("top/mid/self")).unwrap();
        // A link to a folder that is not an ancestor is followed once; its own link back to
        // an ancestor is not.
        std::fs::create_dir(root.join("other")).unwrap();
        std::fs::write(root.join("other/o"), b"o").unwrap();
        symlink("../top", root.join("other/back")).unwrap();
        symlink("../other", root.join("top/side")).unwrap();
        let vfs = file_view(root);
        let scanned = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            scan(&vfs, &[("".into(), "/".into())], Symlinks::Follow),
        )
        .await
        .expect("the scan ends");
        let files = scanned.unwrap();
        if vfs.ls("/top/side", 10, None).await.is_err() {
            return; // no openat2: links are never followed at all
        }
        assert_eq!(
            dests(&files),
            ["other/o", "other/back/mid/f", "top/mid/f", "top/side/o"]
        );
        // From a folder below the root too: the source folder's own identity counts.
        let files = scan(&vfs, &[("t".into(), "/top".into())], Symlinks::Follow)
            .await
            .unwrap();
        assert_eq!(dests(&files), ["t/mid/f", "t/mid/up2/other/o", "t/side/o"]);
    }
}
