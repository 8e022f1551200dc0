//! User accounts: names, argon2id password hashes and the superuser flag, kept in the state
//! database so that `slipstream user ...` works while the server runs.

use crate::state::{StateError, Store, UserRecord};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

/// Errors of user administration.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("user '{0}' already exists; use `slipstream user passwd` to change the password")]
    Exists(String),
    #[error("no user '{0}'; `slipstream user list` shows the users")]
    Missing(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks a user name: 1–128 characters, no control characters, no `:` (it separates name
/// and password in HTTP Basic), no `/` or `\`.
pub fn validate_user_name(name: &str) -> Result<(), UserError> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(UserError::Invalid(
            "user name must be 1 to 128 characters".into(),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, ':' | '/' | '\\'))
    {
        return Err(UserError::Invalid(format!(
            "user name '{}' contains {bad:?}; use letters, digits, '.', '-', '_' or '@'",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// True if `password` matches the PHC `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash that matches no password, verified against when a user does not exist so that a
/// login takes as long whether or not the name is known.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password("slipstream-decoy-password-that-no-one-has").unwrap_or_default()
    })
}

fn now_us() -> i64 {
    crate::clock::now_us()
}

/// Adds a user.
pub fn add_user(
    store: &Store,
    name: &str,
    password: &str,
    superuser: bool,
) -> Result<(), UserError> {
    validate_user_name(name)?;
    if password.is_empty() {
        return Err(UserError::Invalid("the password must not be empty".into()));
    }
    let record = UserRecord {
        name: name.to_string(),
        password_hash: hash_password(password)?,
        superuser,
        created_us: now_us(),
    };
    if store.insert_user(&record)? {
        Ok(())
    } else {
        Err(UserError::Exists(name.to_string()))
    }
}

/// Changes a user's password (and, when given, the superuser flag).
pub fn change_password(
    store: &Store,
    name: &str,
    password: &str,
    superuser: Option<bool>,
) -> Result<(), UserError> {
    if password.is_empty() {
        return Err(UserError::Invalid("the password must not be empty".into()));
    }
    if !store.set_password_hash(name, &hash_password(password)?)? {
        return Err(UserError::Missing(name.to_string()));
    }
    if let Some(flag) = superuser {
        store.set_superuser(name, flag)?;
    }
    Ok(())
}

/// Deletes a user.
pub fn delete_user(store: &Store, name: &str) -> Result<(), UserError> {
    if store.delete_user(name)? {
        Ok(())
    } else {
        Err(UserError::Missing(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("secret").unwrap();
        let b = hash_password("secret").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password(&a, "secret"));
        assert!(!verify_password(&a, "Secret"));
        assert!(!verify_password(decoy_hash(), ""));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_user_name("alice@example.com").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("a:b").is_err());
        assert!(validate_user_name("a\nb").is_err());
    }
}
