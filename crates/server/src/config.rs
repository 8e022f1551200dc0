//! `slipstream server` flags, the TOML config file whose keys are the long flag names, and the
//! resolved configuration the server runs with.

use crate::units::{parse_duration_secs, parse_size};
use clap::{Args, CommandFactory, Parser, ValueEnum};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Default size of the whole S3 file cache (`--max-file-cache-size`): 1 GiB. Every S3 upload
/// and download draws its buffers from it; when it is full, transfers wait for room.
pub const DEFAULT_FILE_CACHE_SIZE: u64 = slipstream_storage::cache::DEFAULT_FILE_CACHE_SIZE;
/// Default share of one upload into S3 (`--max-file-cache-upload-size`): 256 MiB. It bounds
/// the part size, so the largest file is 10,000 parts of it (2.44 TiB); larger files are
/// refused before any byte is sent, naming the value needed.
pub const DEFAULT_FILE_CACHE_UPLOAD_SIZE: u64 = slipstream_storage::cache::DEFAULT_UPLOAD_SHARE;
/// Default share of one download from S3 (`--max-file-cache-download-size`, read-ahead of
/// ranged GETs): 64 MiB.
pub const DEFAULT_FILE_CACHE_DOWNLOAD_SIZE: u64 = slipstream_storage::cache::DEFAULT_DOWNLOAD_SHARE;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text)
}

fn duration_arg(text: &str) -> Result<u64, String> {
    parse_duration_secs(text)
}

/// The flags of `slipstream server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// TOML file whose keys are the long flag names (api-port = 8886); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address the HTTPS control API listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDR")]
    pub api_host: String,
    /// TCP port of the HTTPS control API.
    #[arg(long, default_value_t = 8886, value_name = "PORT")]
    pub api_port: u16,
    /// UDP port that receives transfers.
    #[arg(long, default_value_t = 8886, value_name = "PORT")]
    pub recv_port: u16,
    /// Folder for the database, the TLS certificate and checkpoints
    /// (default $XDG_DATA_HOME/slipstream or ~/.local/share/slipstream).
    #[arg(long, value_name = "DIR")]
    pub persistent_state_dir: Option<PathBuf>,
    /// The system sandbox: a folder every user is confined to unless a mapping says otherwise.
    #[arg(long, value_name = "PATH")]
    pub sandbox_dir: Option<String>,
    /// A user who is a superuser (repeatable), besides those flagged with `user add --superuser`.
    #[arg(long = "superuser", value_name = "NAME")]
    pub superusers: Vec<String>,
    /// Memory for all S3 transfers together (default 1GiB); transfers wait when it is full.
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub max_file_cache_size: Option<u64>,
    /// Memory one upload into S3 may use (default 256MiB); bounds the part size: 10,000 parts
    /// of at most this, so 2.44 TiB with the default.
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub max_file_cache_upload_size: Option<u64>,
    /// Memory one download from S3 may use for read-ahead (default 64MiB).
    #[arg(long, value_parser = size_arg, value_name = "SIZE")]
    pub max_file_cache_download_size: Option<u64>,
    /// PEM certificate for the API (default: a self-signed one kept in the state dir).
    #[arg(long, requires = "api_key", value_name = "FILE")]
    pub api_cert: Option<PathBuf>,
    /// PEM private key for --api-cert.
    #[arg(long, requires = "api_cert", value_name = "FILE")]
    pub api_key: Option<PathBuf>,
    /// The lowest cipher level a sender must use: 0 none, 1 authenticated, 2 AES-128-GCM,
    /// 3 AES-256-GCM.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3), value_name = "0..3")]
    pub min_cipher: u8,
    /// Server-wide limit on incoming transfer data, kbit/s.
    #[arg(long, value_name = "KBPS")]
    pub incoming_rate_limit: Option<u64>,
    /// Server-wide limit on outgoing transfer data, kbit/s.
    #[arg(long, value_name = "KBPS")]
    pub outgoing_rate_limit: Option<u64>,
    /// Log as human-readable text or as JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long a token from server.auth stays valid (e.g. 12h, 30m, 90s).
    #[arg(long, default_value = "12h", value_parser = duration_arg, value_name = "DURATION")]
    pub api_token_lifetime: u64,
    /// Multipart uploads in S3 sandboxes older than this that no transfer owns are aborted,
    /// at start and every hour (e.g. 24h, 90m).
    #[arg(long, default_value = "24h", value_parser = duration_arg, value_name = "DURATION")]
    pub stale_upload_age: u64,
    /// Largest accepted API request body.
    #[arg(long, default_value = "8MiB", value_parser = size_arg, value_name = "SIZE")]
    pub max_request_size: u64,
    /// An incoming transfer whose sender has not come back (no data, no reconnection) for this
    /// many hours is expired: its partial files and S3 uploads are removed and it ends in
    /// error. 0: never.
    #[arg(long, default_value_t = 72, value_name = "HOURS")]
    pub reception_expiry_hours: u64,
    /// For tests: the expiry of incoming transfers in seconds, instead of
    /// --reception-expiry-hours (0: never).
    #[arg(long, hide = true, value_name = "SECONDS")]
    pub reception_expiry_seconds: Option<u64>,
}

/// The default state dir: `$XDG_DATA_HOME/slipstream`, else `~/.local/share/slipstream`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return dir.join("slipstream");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    home.join(".local").join("share").join("slipstream")
}

impl ServerArgs {
    /// The state dir to use.
    pub fn state_dir(&self) -> PathBuf {
        self.persistent_state_dir
            .clone()
            .unwrap_or_else(default_state_dir)
    }

    /// How long an incoming transfer's sender may stay away before the transfer expires;
    /// `None`: never.
    pub fn reception_expiry(&self) -> Option<std::time::Duration> {
        let seconds = match self.reception_expiry_seconds {
            Some(seconds) => seconds,
            None => self.reception_expiry_hours.saturating_mul(3600),
        };
        (seconds > 0).then(|| std::time::Duration::from_secs(seconds))
    }

    /// The file cache limits, with defaults filled in: (total, per upload, per download).
    pub fn file_cache_limits(&self) -> (u64, u64, u64) {
        (
            self.max_file_cache_size.unwrap_or(DEFAULT_FILE_CACHE_SIZE),
            self.max_file_cache_upload_size
                .unwrap_or(DEFAULT_FILE_CACHE_UPLOAD_SIZE),
            self.max_file_cache_download_size
                .unwrap_or(DEFAULT_FILE_CACHE_DOWNLOAD_SIZE),
        )
    }
}

/// A parser used only to list the long flag names of [`ServerArgs`].
#[derive(Parser)]
struct FlagNames {
    #[command(flatten)]
    args: ServerArgs,
}

/// Turns the TOML config file named by `--config` into flags placed before the command line's
/// own, so that flags given on the command line win. `args` are the arguments after the
/// `server` subcommand. Unknown keys are an error naming the key and the file.
pub fn expand_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut config_path: Option<PathBuf> = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            config_path = iter.next().map(PathBuf::from);
        } else if let Some(value) = text.strip_prefix("--config=") {
            config_path = Some(PathBuf::from(value));
        }
    }
    let Some(path) = config_path else {
        return Ok(args);
    };
    let mut from_file = config_file_flags(&path)?;
    from_file.extend(args);
    Ok(from_file)
}

fn config_file_flags(path: &Path) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    let command = FlagNames::command();
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|name| name != "config" && name != "help")
        .collect();
    let mut flags = Vec::new();
    for (key, value) in table {
        if !known.contains(&key) {
            return Err(format!(
                "config file {}: unknown key '{key}'; valid keys are the long flag names: {}",
                path.display(),
                known.join(", ")
            ));
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for item in values {
            match item {
                toml::Value::String(s) => flags.push(format!("--{key}={s}").into()),
                toml::Value::Integer(i) => flags.push(format!("--{key}={i}").into()),
                toml::Value::Boolean(true) => flags.push(format!("--{key}").into()),
                toml::Value::Boolean(false) => {}
                other => {
                    return Err(format!(
                        "config file {}: key '{key}' has an unsupported value {other}",
                        path.display()
                    ))
                }
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Probe {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn parse(args: Vec<OsString>) -> ServerArgs {
        let mut argv: Vec<OsString> = vec!["probe".into()];
        argv.extend(expand_config_file(args).unwrap());
        Probe::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn config_file_keys_are_flags_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "api-port = 9000\nmax-file-cache-size = \"2GiB\"\nsuperuser = [\"root\", \"ops\"]\n",
        )
        .unwrap();
        let args = parse(vec![
            "--config".into(),
            file.clone().into(),
            "--api-port=9100".into(),
        ]);
        assert_eq!(args.api_port, 9100);
        assert_eq!(args.max_file_cache_size, Some(2 << 30));
        assert_eq!(args.superusers, vec!["root", "ops"]);
    }

    #[test]
    fn reception_expiry_defaults_to_72_hours() {
        let hours = |args: Vec<OsString>| parse(args).reception_expiry().map(|d| d.as_secs());
        assert_eq!(hours(vec![]), Some(72 * 3600));
        assert_eq!(hours(vec!["--reception-expiry-hours=0".into()]), None);
        assert_eq!(
            hours(vec![
                "--reception-expiry-hours=1".into(),
                "--reception-expiry-seconds=5".into()
            ]),
            Some(5)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "reception-expiry-hours = 24\n").unwrap();
        assert_eq!(hours(vec!["--config".into(), file.into()]), Some(24 * 3600));
    }

    #[test]
    fn unknown_config_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, "api-prot = 9000\n").unwrap();
        let err = expand_config_file(vec!["--config".into(), file.into()]).unwrap_err();
        assert!(err.contains("unknown key 'api-prot'"), "{err}");
        assert!(err.contains("api-port"), "{err}");
    }
}
