//! `slipstream s3 uploads|cleanup`: the multipart uploads in a user's S3 sandboxes (left by
//! interrupted transfers), listed or aborted by hand. Reads the mappings from the server's
//! state dir, so it works while the server runs.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use slipstream_server::sandboxes::Sandboxes;
use slipstream_server::state::Store;
use slipstream_server::units::parse_duration_secs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct S3Args {
    #[command(subcommand)]
    action: S3Action,
    /// The server's state dir (default $XDG_DATA_HOME/slipstream or ~/.local/share/slipstream).
    #[arg(long, global = true, value_name = "DIR")]
    persistent_state_dir: Option<PathBuf>,
}

fn duration_arg(text: &str) -> Result<u64, String> {
    parse_duration_secs(text)
}

#[derive(Subcommand)]
enum S3Action {
    /// List the multipart uploads under the user's S3 sandboxes: key, upload id and age.
    Uploads {
        /// Whose sandboxes (their mapping, else the global one; "" for the global one).
        #[arg(long, value_name = "NAME")]
        user: String,
        /// Only uploads at least this old (e.g. 24h, 90m, 0s).
        #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
        older_than: Option<u64>,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Abort the multipart uploads under the user's S3 sandboxes older than an age.
    Cleanup {
        /// Whose sandboxes (their mapping, else the global one; "" for the global one).
        #[arg(long, value_name = "NAME")]
        user: String,
        /// Only uploads at least this old.
        #[arg(long, default_value = "24h", value_parser = duration_arg, value_name = "DURATION")]
        older_than: u64,
        /// Only show what would be aborted.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// `1d 2h`, `3h 5m`, `4m 7s`, `9s`.
fn age_text(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

pub async fn run(args: S3Args) -> anyhow::Result<()> {
    let dir = args
        .persistent_state_dir
        .unwrap_or_else(slipstream_server::config::default_state_dir);
    let store = Arc::new(Store::open(&dir)?);
    let sandboxes = Sandboxes::new(store, None);
    let (user, older_than, dry_run, json, cleanup) = match args.action {
        S3Action::Uploads {
            user,
            older_than,
            json,
        } => (user, older_than, true, json, false),
        S3Action::Cleanup {
            user,
            older_than,
            dry_run,
            json,
        } => (user, Some(older_than), dry_run, json, true),
    };
    let mapping = sandboxes
        .effective_mapping(&user)
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| {
            anyhow!(
                "user '{user}' has no sandbox mapping (and there is no global one) in {}: \
                 nothing is stored in S3",
                dir.display()
            )
        })?;
    let backends = sandboxes.s3_backends(&mapping, &user);
    if backends.is_empty() {
        bail!("the sandboxes of user '{user}' are not S3 sandboxes: there are no uploads to show");
    }
    let age = Duration::from_secs(older_than.unwrap_or(0));
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (root, backend) in backends {
        let backend = match backend {
            Ok(backend) => backend,
            Err(error) => {
                failures.push(format!("root '{root}': {error}"));
                continue;
            }
        };
        match backend.reap_stale_uploads(age, dry_run).await {
            Ok(found) => {
                for upload in found {
                    rows.push((root.clone(), backend.bucket().to_string(), upload));
                }
            }
            Err(error) => failures.push(format!("root '{root}': {error}")),
        }
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(root, bucket, u)| {
                json!({
                    "root": root,
                    "bucket": bucket,
                    "key": u.key,
                    "uploadId": u.upload_id,
                    "ageSeconds": u.age_seconds,
                })
            })
            .collect();
        let out = if cleanup {
            json!({"aborted": if dry_run { json!([]) } else { json!(list) },
                   "wouldAbort": if dry_run { json!(list) } else { json!([]) },
                   "dryRun": dry_run})
        } else {
            json!({ "uploads": list })
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (_, bucket, u) in &rows {
            let verb = match (cleanup, dry_run) {
                (true, true) => "would abort ",
                (true, false) => "aborted ",
                _ => "",
            };
            println!(
                "{verb}{bucket}/{}  {}  {}",
                u.key,
                u.upload_id,
                age_text(u.age_seconds)
            );
        }
        if rows.is_empty() {
            eprintln!(
                "no multipart uploads{}",
                if cleanup { " to abort" } else { "" }
            );
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::age_text;

    #[test]
    fn ages_read_well() {
        assert_eq!(age_text(9), "9s");
        assert_eq!(age_text(247), "4m 7s");
        assert_eq!(age_text(3 * 3600 + 300), "3h 5m");
        assert_eq!(age_text(93_600), "1d 2h");
    }
}
