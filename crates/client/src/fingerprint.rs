//! Certificate fingerprints (lowercase hex SHA-256 of the DER certificate) and the per-user
//! store of servers trusted on first use.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowercase hex SHA-256 of a DER certificate, no colons.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Accepts a fingerprint with or without colons, in any case; returns `None` unless it is 64
/// hex digits.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(hex)
}

/// `host:port` → fingerprint, kept as JSON in the user's config dir
/// (`$XDG_CONFIG_HOME/slipstream/known_servers.json`, else `~/.config/slipstream/...`).
#[derive(Debug, Clone)]
pub struct KnownServers {
    file: PathBuf,
}

impl KnownServers {
    /// The store at its default place for the current OS user.
    pub fn default_location() -> Self {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        KnownServers {
            file: base.join("slipstream").join("known_servers.json"),
        }
    }

    /// A store kept in `file`.
    pub fn at(file: impl Into<PathBuf>) -> Self {
        KnownServers { file: file.into() }
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.file
    }

    fn load(&self) -> BTreeMap<String, String> {
        std::fs::read(&self.file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// The fingerprint recorded for `server` (`host:port`), if any.
    pub fn get(&self, server: &str) -> Option<String> {
        self.load().remove(server)
    }

    /// Records `fingerprint` for `server`, replacing any earlier one.
    pub fn remember(&self, server: &str, fingerprint: &str) -> std::io::Result<()> {
        let mut all = self.load();
        all.insert(server.to_string(), fingerprint.to_string());
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec_pretty(&all).map_err(std::io::Error::other)?;
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, &self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_colons_and_case() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            normalize_fingerprint(&colons).as_deref(),
            Some(plain.as_str())
        );
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
    }
}
