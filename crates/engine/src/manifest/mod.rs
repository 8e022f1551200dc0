//! Manifests: `send.createManifest`, `getManifest(s)`, `getManifestFiles`, `deleteManifest`.
//! A manifest is built in the background; `createManifest` waits a few seconds for it, so that
//! ordinary trees come back `complete` at once and huge ones come back `pending`
//! (`processing: true`) to be polled.

pub mod scan;

use crate::error::EngineError;
use crate::params::{now_us, Params};
use crate::{Caller, Engine};
use rusqlite::{params, OptionalExtension};
use scan::{ManifestFile, Symlinks};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long `createManifest` waits for the scan before answering `pending`.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// A manifest row.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub id: i64,
    pub owner: String,
    pub status: String,
    pub error_message: Option<String>,
    pub total_files: u64,
    pub total_size: u64,
}

impl ManifestRow {
    pub fn to_json(&self) -> Value {
        json!({
            "manifestId": self.id.to_string(),
            "status": self.status,
            "processing": self.status == "pending",
            "errorMessage": self.error_message,
            "owner": self.owner,
            "totalFiles": self.total_files,
            "totalSize": self.total_size,
        })
    }
}

fn load(engine: &Engine, id: i64) -> Result<Option<ManifestRow>, EngineError> {
    Ok(engine
        .db
        .conn()
        .query_row(
            "SELECT id, owner, status, error_message, total_files, total_size
             FROM manifests WHERE id = ?1",
            [id],
            |r| {
                Ok(ManifestRow {
                    id: r.get(0)?,
                    owner: r.get(1)?,
                    status: r.get(2)?,
                    error_message: r.get(3)?,
                    total_files: r.get::<_, i64>(4)? as u64,
                    total_size: r.get::<_, i64>(5)? as u64,
                })
            },
        )
        .optional()?)
}

/// The manifest `id` if `caller` may see it (its owner, or a superuser); else -32004.
pub fn visible(engine: &Engine, id: i64, caller: &Caller) -> Result<ManifestRow, EngineError> {
    match load(engine, id)? {
        Some(row) if row.owner == caller.user || caller.superuser => Ok(row),
        _ => Err(EngineError::not_found(format!(
            "manifest '{id}' does not exist (or is not yours): see send.getManifests"
        ))),
    }
}

/// Every file and empty folder of a manifest, in transfer order.
pub fn files(engine: &Engine, id: i64) -> Result<Vec<ManifestFile>, EngineError> {
    files_page(engine, id, 0, i64::MAX)
}

fn files_page(
    engine: &Engine,
    id: i64,
    offset: i64,
    limit: i64,
) -> Result<Vec<ManifestFile>, EngineError> {
    let conn = engine.db.conn();
    let mut statement = conn.prepare_cached(
        "SELECT src_path, dest_path, size, is_empty_dir, executable, mtime FROM manifest_files
         WHERE manifest_id = ?1 ORDER BY idx LIMIT ?2 OFFSET ?3",
    )?;
    let rows = statement.query_map(params![id, limit, offset], |r| {
        Ok(ManifestFile {
            src_path: r.get(0)?,
            dest_path: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
            is_empty_dir: r.get(3)?,
            executable: r.get(4)?,
            mtime: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn store_result(
    engine: &Engine,
    id: i64,
    result: Result<Vec<ManifestFile>, EngineError>,
) -> Result<(), EngineError> {
    let mut conn = engine.db.conn();
    let tx = conn.transaction()?;
    match result {
        Ok(files) => {
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO manifest_files
                     (manifest_id, idx, src_path, dest_path, size, is_empty_dir, executable, mtime)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for (i, f) in files.iter().enumerate() {
                    insert.execute(params![
                        id,
                        i as i64,
                        f.src_path,
                        f.dest_path,
                        f.size as i64,
                        f.is_empty_dir,
                        f.executable,
                        f.mtime
                    ])?;
                }
            }
            let regular: Vec<&ManifestFile> = files.iter().filter(|f| !f.is_empty_dir).collect();
            let size: u64 = regular.iter().map(|f| f.size).sum();
            tx.execute(
                "UPDATE manifests SET status = 'complete', total_files = ?2, total_size = ?3
                 WHERE id = ?1",
                params![id, regular.len() as i64, size as i64],
            )?;
        }
        Err(error) => {
            tx.execute(
                "UPDATE manifests SET status = 'error', error_message = ?2 WHERE id = ?1",
                params![id, error.message],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// `send.createManifest(mappings, symlinks="follow")`.
pub async fn create(
    engine: &Arc<Engine>,
    p: &Params,
    caller: &Caller,
) -> Result<Value, EngineError> {
    let mappings: Vec<(String, String)> = p
        .object("mappings")?
        .iter()
        .map(|(dest, src)| match src {
            Value::String(src) => Ok((dest.clone(), src.clone())),
            _ => Err(EngineError::invalid_param(
                "mappings",
                format!("mappings['{dest}'] must be a source path (a string)"),
            )),
        })
        .collect::<Result<_, _>>()?;
    if mappings.is_empty() {
        return Err(EngineError::invalid_param(
            "mappings",
            "mappings is empty: pass {destPath: srcPath, ...}",
        ));
    }
    let symlinks = p.opt_string("symlinks")?.unwrap_or_else(|| "follow".into());
    let Some(mode) = Symlinks::parse(&symlinks) else {
        return Err(EngineError::invalid_param(
            "symlinks",
            format!("symlinks '{symlinks}' is not \"follow\" or \"ignore\""),
        ));
    };
    let vfs = engine.config.sandboxes.view(&caller.user)?;
    let id = {
        let conn = engine.db.conn();
        conn.execute(
            "INSERT INTO manifests (owner, status, symlinks, created_us)
             VALUES (?1, 'pending', ?2, ?3)",
            params![caller.user, symlinks, now_us()],
        )?;
        conn.last_insert_rowid()
    };
    let task_engine = engine.clone();
    let build = tokio::spawn(async move {
        let result = scan::scan(&vfs, &mappings, mode).await;
        let failure = result.as_ref().err().cloned();
        if let Err(error) = store_result(&task_engine, id, result) {
            tracing::error!(manifest = id, %error, "cannot store a manifest");
        }
        failure
    });
    // A scan that fails at once is an error of this call (and leaves no manifest); one that
    // fails later is a manifest in `error`.
    if let Ok(Ok(Some(error))) = tokio::time::timeout(SYNC_WAIT, build).await {
        let mut conn = engine.db.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM manifest_files WHERE manifest_id = ?1", [id])?;
        tx.execute("DELETE FROM manifests WHERE id = ?1", [id])?;
        tx.commit()?;
        return Err(error);
    }
    Ok(visible(engine, id, caller)?.to_json())
}

/// `send.getManifest(manifestId)`.
pub fn get(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    Ok(visible(engine, p.id("manifestId")?, caller)?.to_json())
}

/// `send.getManifests()`: the caller's (a superuser: all).
pub fn list(engine: &Engine, caller: &Caller) -> Result<Value, EngineError> {
    let ids = engine.db.visible_ids(
        crate::db::OwnedTable::Manifests,
        &caller.user,
        caller.superuser,
    )?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(row) = load(engine, id)? {
            out.push(row.to_json());
        }
    }
    Ok(Value::Array(out))
}

/// `send.getManifestFiles(manifestId, offset=0, limit=1000)`.
pub fn get_files(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("manifestId")?, caller)?;
    let offset = p.u64_or("offset", 0)?.min(i64::MAX as u64) as i64;
    let limit = p.u64_or("limit", 1000)?.min(100_000) as i64;
    let files = files_page(engine, row.id, offset, limit)?;
    let mappings: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "srcPath": f.src_path,
                "destPath": f.dest_path,
                "fileSize": f.size,
                "isEmptyDir": f.is_empty_dir,
                "executable": f.executable,
                "modificationTime": f.mtime,
            })
        })
        .collect();
    Ok(json!({"manifestId": row.id.to_string(), "fileMappings": mappings}))
}

/// `send.deleteManifest(manifestId)`: refused while a transfer that is not finished uses it.
pub fn delete(engine: &Engine, p: &Params, caller: &Caller) -> Result<Value, EngineError> {
    let row = visible(engine, p.id("manifestId")?, caller)?;
    let mut conn = engine.db.conn();
    let busy: i64 = conn.query_row(
        "SELECT COUNT(*) FROM transfers WHERE manifest_id = ?1
         AND status IN ('pending', 'inProgress', 'suspended')",
        [row.id],
        |r| r.get(0),
    )?;
    if busy > 0 {
        return Err(EngineError::conflict(format!(
            "manifest '{}' is used by {busy} unfinished transfer(s): cancel or delete them first",
            row.id
        )));
    }
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM manifest_files WHERE manifest_id = ?1",
        [row.id],
    )?;
    tx.execute("DELETE FROM manifests WHERE id = ?1", [row.id])?;
    tx.commit()?;
    Ok(Value::Null)
}

/// At start: manifests whose scan was interrupted by a restart become errors.
pub fn recover(engine: &Engine) -> Result<(), EngineError> {
    engine.db.conn().execute(
        "UPDATE manifests SET status = 'error', error_message =
         'the server restarted while this manifest was being built: create it again'
         WHERE status = 'pending'",
        [],
    )?;
    Ok(())
}
