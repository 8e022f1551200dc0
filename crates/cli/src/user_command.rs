//! `slipstream user add|passwd|del|list`: accounts in the state database, usable while the
//! server runs (a change takes effect at the next login).

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use slipstream_server::state::Store;
use slipstream_server::users;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Args)]
pub struct UserArgs {
    #[command(subcommand)]
    action: UserAction,
    /// The server's state dir (default $XDG_DATA_HOME/slipstream or ~/.local/share/slipstream).
    #[arg(long, global = true, value_name = "DIR")]
    persistent_state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user.
    Add {
        name: String,
        /// Make the user a superuser.
        #[arg(long)]
        superuser: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password.
    Passwd {
        name: String,
        /// Also make the user a superuser.
        #[arg(long)]
        superuser: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user.
    Del { name: String },
    /// List users, one per line: name and "superuser" when they are one.
    List {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(password);
    }
    let first = rpassword::prompt_password("New password: ")
        .map_err(|_| anyhow!("no terminal to ask for a password: use --password-stdin"))?;
    let second = rpassword::prompt_password("Repeat password: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let dir = args
        .persistent_state_dir
        .unwrap_or_else(slipstream_server::config::default_state_dir);
    let store = Store::open(&dir)?;
    match args.action {
        UserAction::Add {
            name,
            superuser,
            password_stdin,
        } => {
            users::validate_user_name(&name)?;
            if store.user(&name)?.is_some() {
                bail!(users::UserError::Exists(name));
            }
            let password = read_password(password_stdin)?;
            users::add_user(&store, &name, &password, superuser)?;
            eprintln!("user '{name}' added");
        }
        UserAction::Passwd {
            name,
            superuser,
            password_stdin,
        } => {
            if store.user(&name)?.is_none() {
                bail!(users::UserError::Missing(name));
            }
            let password = read_password(password_stdin)?;
            users::change_password(&store, &name, &password, superuser.then_some(true))?;
            eprintln!("password of '{name}' changed");
        }
        UserAction::Del { name } => {
            users::delete_user(&store, &name)?;
            eprintln!("user '{name}' deleted");
        }
        UserAction::List { json } => {
            let all = store.users()?;
            if json {
                let list: Vec<_> = all
                    .iter()
                    .map(|u| serde_json::json!({"name": u.name, "superuser": u.superuser}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for user in all {
                    if user.superuser {
                        println!("{}\tsuperuser", user.name);
                    } else {
                        println!("{}", user.name);
                    }
                }
            }
        }
    }
    Ok(())
}
