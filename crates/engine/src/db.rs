//! The engine's own SQLite database (`engine.db` in the state dir): owner-only, WAL, numbered
//! migrations. Holds manifests, destinations, transfers (sending side), receptions (receiving
//! side) and the receptions' checkpoints, so that everything survives a restart.

use crate::EngineError;
use rusqlite::Connection;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: manifests, destinations, transfers, receptions, checkpoints
    "CREATE TABLE manifests (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         owner TEXT NOT NULL,
         status TEXT NOT NULL,
         error_message TEXT,
         total_files INTEGER NOT NULL DEFAULT 0,
         total_size INTEGER NOT NULL DEFAULT 0,
         symlinks TEXT NOT NULL,
         created_us INTEGER NOT NULL
     );
     CREATE TABLE manifest_files (
         manifest_id INTEGER NOT NULL,
         idx INTEGER NOT NULL,
         src_path TEXT NOT NULL,
         dest_path TEXT NOT NULL,
         size INTEGER NOT NULL,
         is_empty_dir INTEGER NOT NULL,
         executable INTEGER NOT NULL,
         mtime INTEGER,
         PRIMARY KEY (manifest_id, idx)
     );
     CREATE TABLE destinations (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         owner TEXT NOT NULL,
         address TEXT NOT NULL,
         host TEXT NOT NULL,
         api_port INTEGER NOT NULL,
         user TEXT NOT NULL,
         password TEXT,
         token TEXT,
         send_rate_max INTEGER,
         fingerprint TEXT NOT NULL,
         destination_ip TEXT,
         destination_port INTEGER,
         last_error INTEGER,
         last_error_message TEXT,
         created_us INTEGER NOT NULL
     );
     CREATE TABLE transfers (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         uuid TEXT NOT NULL UNIQUE,
         owner TEXT NOT NULL,
         destination_id INTEGER NOT NULL,
         manifest_id INTEGER NOT NULL,
         destination_path TEXT NOT NULL,
         overwrite_mode INTEGER NOT NULL,
         priority INTEGER NOT NULL,
         checkpoint_seconds INTEGER,
         min_cipher INTEGER NOT NULL,
         send_rate INTEGER,
         status TEXT NOT NULL,
         error_message TEXT,
         total_bytes INTEGER NOT NULL,
         total_files INTEGER NOT NULL,
         files_complete INTEGER NOT NULL DEFAULT 0,
         block_size INTEGER NOT NULL DEFAULT 0,
         bytes_resumed INTEGER NOT NULL DEFAULT 0,
         counters TEXT,
         negotiated INTEGER NOT NULL DEFAULT 0,
         request_us INTEGER NOT NULL,
         queue_us INTEGER,
         start_us INTEGER,
         end_us INTEGER
     );
     CREATE INDEX transfers_queue ON transfers(destination_id, status, priority, request_us);
     CREATE TABLE receptions (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         source_uuid TEXT NOT NULL UNIQUE,
         source_transfer_id INTEGER,
         owner TEXT NOT NULL,
         source_ip TEXT NOT NULL,
         source_port INTEGER,
         destination_path TEXT NOT NULL,
         overwrite_mode INTEGER NOT NULL,
         cipher INTEGER NOT NULL,
         checkpoint_seconds INTEGER,
         status TEXT NOT NULL,
         error_message TEXT,
         total_size INTEGER NOT NULL,
         bytes_recv INTEGER NOT NULL DEFAULT 0,
         files TEXT NOT NULL,
         created_us INTEGER NOT NULL,
         end_us INTEGER
     );
     CREATE TABLE reception_checkpoints (
         reception_id INTEGER NOT NULL,
         file_index INTEGER NOT NULL,
         state TEXT NOT NULL,
         durable TEXT NOT NULL,
         PRIMARY KEY (reception_id, file_index)
     );",
    // 2: when a reception's sender was last heard from (openTransfer or data), for expiry
    "ALTER TABLE receptions ADD COLUMN active_us INTEGER;
     UPDATE receptions SET active_us = created_us;",
];

/// Tables whose rows belong to a user (a closed list, so no name reaches SQL from outside).
#[derive(Debug, Clone, Copy)]
pub enum OwnedTable {
    Manifests,
    Destinations,
}

impl OwnedTable {
    fn name(self) -> &'static str {
        match self {
            OwnedTable::Manifests => "manifests",
            OwnedTable::Destinations => "destinations",
        }
    }
}

/// The open database.
pub struct Db {
    connection: Mutex<Connection>,
}

fn db_error(error: impl std::fmt::Display) -> EngineError {
    EngineError::internal(format!("engine database: {error}"))
}

impl From<rusqlite::Error> for EngineError {
    fn from(error: rusqlite::Error) -> Self {
        db_error(error)
    }
}

impl Db {
    /// Opens (creating owner-only if needed) `engine.db` in `dir` and applies migrations.
    pub fn open(dir: &Path) -> Result<Db, EngineError> {
        let io = |e: std::io::Error| {
            db_error(format!(
                "state dir {}: {e} (check --persistent-state-dir)",
                dir.display()
            ))
        };
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.recursive(true).create(dir).map_err(io)?;
        let file = dir.join("engine.db");
        // Create the file owner-only before SQLite opens it; SQLite gives its -wal and -shm
        // files the same permissions.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&file)
            .map_err(io)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let connection = Connection::open(&file)?;
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        let db = Db {
            connection: Mutex::new(connection),
        };
        db.migrate()?;
        Ok(db)
    }

    /// The connection. Statements are short; callers hold the lock only for one of them (or
    /// one transaction).
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back any
        // open transaction, so a poisoned lock is safe to take over.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ids of the rows of `table` (which has `id` and `owner` columns) that `user` may see:
    /// their own, or all of them for a superuser; in id order.
    pub fn visible_ids(
        &self,
        table: OwnedTable,
        user: &str,
        superuser: bool,
    ) -> Result<Vec<i64>, EngineError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT id FROM {} WHERE owner = ?1 OR ?2 ORDER BY id",
            table.name()
        );
        let mut statement = conn.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params![user, superuser], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn migrate(&self) -> Result<(), EngineError> {
        let mut conn = self.conn();
        let done: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let done = usize::try_from(done).unwrap_or(0);
        if done > MIGRATIONS.len() {
            return Err(db_error(format!(
                "engine.db has schema version {done}, newer than this slipstream ({}): \
                 use a newer slipstream",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_owner_only_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        drop(Db::open(&state).unwrap());
        let mode = std::fs::metadata(state.join("engine.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let db = Db::open(&state).unwrap();
        let version: i64 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
