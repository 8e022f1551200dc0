//! The persistent state: one SQLite database in the state dir, owner-only, with numbered schema
//! migrations. Several processes may open it at once (the server and `slipstream user`).

use rusqlite::{params, Connection, OptionalExtension};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: users, API tokens, sandbox mappings
    "CREATE TABLE users (
         name TEXT PRIMARY KEY,
         password_hash TEXT NOT NULL,
         superuser INTEGER NOT NULL DEFAULT 0,
         created_us INTEGER NOT NULL
     );
     CREATE TABLE tokens (
         token_hash TEXT PRIMARY KEY,
         user TEXT NOT NULL,
         created_us INTEGER NOT NULL,
         expiry_us INTEGER NOT NULL
     );
     CREATE INDEX tokens_expiry ON tokens(expiry_us);
     CREATE TABLE sandbox_mappings (
         user TEXT PRIMARY KEY,
         mapping TEXT NOT NULL
     );",
];

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A user record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub superuser: bool,
    pub created_us: i64,
}

/// The open state database.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    connection: Mutex<Connection>,
}

fn io_error(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and parents) owner-only if missing, and makes it owner-only if it exists.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error(dir, e))
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, which is created owner-only, and
    /// applies pending migrations.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        ensure_private_dir(dir)?;
        let file = dir.join("slipstream.db");
        // Create the file owner-only before SQLite opens it; SQLite gives its -wal and -shm
        // files the same permissions.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| io_error(&file, e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error(&file, e))?;
        let connection = Connection::open(&file)?;
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let store = Store {
            dir: dir.to_path_buf(),
            connection: Mutex::new(connection),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The state dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back any
        // open transaction, so a poisoned lock is safe to take over.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn migrate(&self) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version after migrations.
    pub fn schema_version(&self) -> Result<usize, StateError> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ---- users ----

    /// Adds a user; false if the name is taken.
    pub fn insert_user(&self, user: &UserRecord) -> Result<bool, StateError> {
        let changed = self.conn().execute(
            "INSERT OR IGNORE INTO users (name, password_hash, superuser, created_us) VALUES (?1, ?2, ?3, ?4)",
            params![user.name, user.password_hash, user.superuser, user.created_us],
        )?;
        Ok(changed == 1)
    }

    /// Replaces a user's password hash; false if there is no such user.
    pub fn set_password_hash(&self, name: &str, hash: &str) -> Result<bool, StateError> {
        let changed = self.conn().execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, hash],
        )?;
        Ok(changed == 1)
    }

    /// Sets or clears a user's superuser flag; false if there is no such user.
    pub fn set_superuser(&self, name: &str, superuser: bool) -> Result<bool, StateError> {
        let changed = self.conn().execute(
            "UPDATE users SET superuser = ?2 WHERE name = ?1",
            params![name, superuser],
        )?;
        Ok(changed == 1)
    }

    /// Deletes a user and their tokens; false if there is no such user.
    pub fn delete_user(&self, name: &str) -> Result<bool, StateError> {
        let conn = self.conn();
        conn.execute("DELETE FROM tokens WHERE user = ?1", params![name])?;
        let changed = conn.execute("DELETE FROM users WHERE name = ?1", params![name])?;
        Ok(changed == 1)
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, password_hash, superuser, created_us FROM users WHERE name = ?1",
                params![name],
                row_to_user,
            )
            .optional()?)
    }

    /// All users, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT name, password_hash, superuser, created_us FROM users ORDER BY name",
        )?;
        let rows = statement.query_map([], row_to_user)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- tokens ----

    /// Records a token (by its hash) for `user` until `expiry_us`.
    pub fn insert_token(
        &self,
        token_hash: &str,
        user: &str,
        created_us: i64,
        expiry_us: i64,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO tokens (token_hash, user, created_us, expiry_us) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, user, created_us, expiry_us],
        )?;
        Ok(())
    }

    /// The user and expiry of a token, if it was issued.
    pub fn token(&self, token_hash: &str) -> Result<Option<(String, i64)>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT user, expiry_us FROM tokens WHERE token_hash = ?1",
                params![token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Forgets tokens that expired before `now_us`.
    pub fn delete_expired_tokens(&self, now_us: i64) -> Result<usize, StateError> {
        Ok(self
            .conn()
            .execute("DELETE FROM tokens WHERE expiry_us < ?1", params![now_us])?)
    }

    // ---- sandbox mappings ----

    /// Stores a mapping (full form, secrets included: the database is owner-only).
    pub fn set_mapping(&self, user: &str, mapping_json: &str) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO sandbox_mappings (user, mapping) VALUES (?1, ?2)
             ON CONFLICT(user) DO UPDATE SET mapping = excluded.mapping",
            params![user, mapping_json],
        )?;
        Ok(())
    }

    /// Removes a mapping; false if there was none.
    pub fn delete_mapping(&self, user: &str) -> Result<bool, StateError> {
        Ok(self.conn().execute(
            "DELETE FROM sandbox_mappings WHERE user = ?1",
            params![user],
        )? == 1)
    }

    /// One mapping.
    pub fn mapping(&self, user: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT mapping FROM sandbox_mappings WHERE user = ?1",
                params![user],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// All mappings, by user ("" is the global one).
    pub fn mappings(&self) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare("SELECT user, mapping FROM sandbox_mappings ORDER BY user")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_to_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        superuser: row.get(2)?,
        created_us: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_owner_only_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open(&state).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        drop(store);
        let store = Store::open(&state).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("slipstream.db")), 0o600);
    }

    #[test]
    fn users_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = UserRecord {
            name: "alice".into(),
            password_hash: "h".into(),
            superuser: false,
            created_us: 1,
        };
        assert!(store.insert_user(&user).unwrap());
        assert!(!store.insert_user(&user).unwrap());
        assert!(store.set_superuser("alice", true).unwrap());
        assert!(store.user("alice").unwrap().unwrap().superuser);
        assert!(store.delete_user("alice").unwrap());
        assert!(store.user("alice").unwrap().is_none());
    }
}
