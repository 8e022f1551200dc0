//! Where a reception's files land (`<destination user's sandbox>/<destinationPath>/<destPath>`,
//! resolved through their VirtualFs, so nothing can escape), and the checks made before any
//! byte is sent: overwrite conflicts (modes 0, 2, 3) and the S3 upload size limit.

use crate::error::EngineError;
use crate::negotiation::WireFile;
use slipstream_storage::data::{part_size, OverwriteMode};
use slipstream_storage::{Backend, EntryKind, RelPath, VirtualFs};
use std::sync::Arc;

/// S3's largest part.
const S3_MAX_PART: u64 = 5 << 30;
/// S3's largest object.
const S3_MAX_OBJECT: u64 = 5 << 40;

/// One file or empty folder of a reception, resolved.
#[derive(Clone)]
pub struct Target {
    pub backend: Arc<dyn Backend>,
    pub rel: RelPath,
    /// The user path, for messages.
    pub shown: String,
    pub file: WireFile,
}

/// Resolves every entry below `destination_path` in `vfs`. `..` anywhere is refused (-32003).
pub fn resolve_all(
    vfs: &VirtualFs,
    destination_path: &str,
    files: &[WireFile],
) -> Result<Vec<Target>, EngineError> {
    let base = RelPath::parse(destination_path)?;
    files
        .iter()
        .map(|file| {
            let rel = RelPath::parse(&file.dest_path)?;
            if rel.is_root() && !file.is_empty_dir {
                return Err(EngineError::invalid_param(
                    "files",
                    "a file of the list has an empty destPath",
                ));
            }
            let shown = match (base.is_root(), rel.is_root()) {
                (true, _) => format!("/{}", rel.as_str()),
                (false, true) => format!("/{}", base.as_str()),
                (false, false) => format!("/{}/{}", base.as_str(), rel.as_str()),
            };
            let (backend, rel) = vfs.resolve(&shown)?;
            Ok(Target {
                backend,
                rel,
                shown,
                file: file.clone(),
            })
        })
        .collect()
}

fn mode_name(mode: OverwriteMode) -> &'static str {
    match mode {
        OverwriteMode::InPlaceNever => "0 (in place, never overwrite)",
        OverwriteMode::InPlaceAlways => "1 (in place, always)",
        OverwriteMode::InPlaceSameSize => "2 (in place, same size only)",
        OverwriteMode::Never => "3 (never overwrite)",
        OverwriteMode::Always => "4 (always)",
        OverwriteMode::Backup => "5 (backup)",
    }
}

/// Refuses the reception when a file may not be written: an existing target that `mode` may
/// not replace, a folder in the way, or an S3 object larger than the upload cache allows.
pub async fn check(
    targets: &[Target],
    mode: OverwriteMode,
    upload_share: u64,
) -> Result<(), EngineError> {
    for target in targets.iter().filter(|t| !t.file.is_empty_dir) {
        let size = target.file.size;
        if target.backend.type_name() == "S3" {
            let largest_part = upload_share.min(S3_MAX_PART);
            if size > S3_MAX_OBJECT || part_size(size) > largest_part {
                return Err(EngineError::storage(format!(
                    "'{}' ({size} bytes) is too large for this server's S3 upload: its parts \
                     would be {} bytes but each transfer's upload cache holds {upload_share} \
                     bytes; raise --max-file-cache-upload-size on the receiving server (S3 \
                     allows at most 5 GiB parts and 5 TiB objects)",
                    target.shown,
                    part_size(size)
                )));
            }
            continue;
        }
        let Some(existing) = target.backend.stat(&target.rel).await? else {
            continue;
        };
        if existing.kind == EntryKind::Directory {
            return Err(EngineError::conflict(format!(
                "'{}' is a folder on the receiving server: remove it or send to another \
                 destinationPath",
                target.shown
            )));
        }
        let refused = match mode {
            OverwriteMode::InPlaceNever | OverwriteMode::Never => true,
            OverwriteMode::InPlaceSameSize => existing.size != size && existing.size != 0,
            _ => false,
        };
        if refused {
            return Err(EngineError::conflict(format!(
                "'{}' already exists ({} bytes) and overwriteMode {} does not replace it: \
                 remove it or use overwriteMode 4",
                target.shown,
                existing.size,
                mode_name(mode)
            )));
        }
    }
    Ok(())
}

/// Creates the parent folders of the files and the empty folders.
pub async fn prepare(targets: &[Target]) -> Result<(), EngineError> {
    let mut made = std::collections::HashSet::new();
    for target in targets {
        let folder = if target.file.is_empty_dir {
            target.rel.clone()
        } else {
            target.rel.parent()
        };
        let backend_id = Arc::as_ptr(&target.backend) as *const () as usize;
        if folder.is_root() || !made.insert((backend_id, folder.clone())) {
            continue;
        }
        target.backend.mkdir(&folder).await?;
    }
    Ok(())
}
