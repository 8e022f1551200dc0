//! `slipstream`: the one binary. Subcommands: `server` (the daemon), `api` (one API call),
//! `user` (accounts in the state dir), `s3` (stale multipart uploads in S3 sandboxes).

mod api_command;
mod s3_command;
mod user_command;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

/// Slipstream: accelerated file transfer between servers, into folders and S3 buckets.
#[derive(Parser)]
#[command(name = "slipstream", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTPS control API and the transfer engine.
    Server(Box<slipstream_server::config::ServerArgs>),
    /// Call one API method and print the result as JSON.
    Api(api_command::ApiArgs),
    /// Manage users in the state dir (works while the server runs).
    User(user_command::UserArgs),
    /// List or abort the multipart uploads in a user's S3 sandboxes (uploads, cleanup).
    S3(s3_command::S3Args),
}

/// The arguments, with a `server --config FILE` expanded into flags.
fn arguments() -> Result<Vec<OsString>, String> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "server") {
        let rest = args.split_off(2);
        args.extend(slipstream_server::config::expand_config_file(rest)?);
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match arguments() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => {
                slipstream_server::run::init_logging(args.log_format);
                slipstream_server::run::run(*args).await
            }
            Command::Api(args) => api_command::run(args).await,
            Command::User(args) => user_command::run(args),
            Command::S3(args) => s3_command::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
