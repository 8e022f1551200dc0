//! `slipstream api`: one JSON-RPC call from the command line. Client options (`--host`,
//! `--port`, `--user`, `--insecure`, `--fingerprint`) may come before or after METHOD; every
//! other `--key=value` becomes a named param, parsed as JSON when it parses.

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use serde_json::{Map, Value};
use slipstream_client::{normalize_fingerprint, ApiClient, Auth, KnownServers, Trust};

/// `slipstream api [--host H] [--port P] [--user U] [--insecure | --fingerprint SHA256] METHOD
/// [--key=value]... [--params JSON]`
#[derive(Args)]
#[command(
    after_help = "The password comes from SLIPSTREAM_API_PASSWORD or a prompt. Values parse as JSON \
                  when they can (--overwriteMode=4, --mapping='{\"\":\"/data\"}'). --params takes a \
                  JSON object (named) or array (positional): use it for params called user or host."
)]
pub struct ApiArgs {
    /// [--host H] [--port P] [--user U] [--insecure | --fingerprint SHA256] METHOD [--key=value]... [--params JSON]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// The parsed command line of one call.
#[derive(Debug, Default, PartialEq)]
struct Invocation {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    insecure: bool,
    fingerprint: Option<String>,
    method: Option<String>,
    named: Map<String, Value>,
    params: Option<Value>,
}

/// A flag value as JSON when it parses, else as a string.
fn flag_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn parse(args: &[String]) -> anyhow::Result<Invocation> {
    let mut invocation = Invocation::default();
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        index += 1;
        let Some(flag) = arg.strip_prefix("--") else {
            if invocation.method.is_some() {
                bail!("unexpected argument '{arg}': params are written --name=value");
            }
            invocation.method = Some(arg.clone());
            continue;
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (flag.to_string(), None),
        };
        if name == "insecure" {
            invocation.insecure = true;
            continue;
        }
        let value = match inline_value {
            Some(value) => value,
            None => {
                let next = args
                    .get(index)
                    .ok_or_else(|| anyhow!("--{name} needs a value (--{name}=VALUE)"))?;
                index += 1;
                next.clone()
            }
        };
        match name.as_str() {
            "host" => invocation.host = Some(value),
            "port" => {
                invocation.port = Some(
                    value
                        .parse()
                        .map_err(|_| anyhow!("--port '{value}' is not a port number"))?,
                )
            }
            "user" => invocation.user = Some(value),
            "fingerprint" => {
                invocation.fingerprint = Some(normalize_fingerprint(&value).ok_or_else(|| {
                    anyhow!("--fingerprint must be 64 hex digits (SHA-256), colons allowed")
                })?)
            }
            "params" => {
                let parsed: Value = serde_json::from_str(&value)
                    .map_err(|e| anyhow!("--params is not JSON: {e}"))?;
                if !(parsed.is_object() || parsed.is_array()) {
                    bail!("--params must be a JSON object (named) or array (positional)");
                }
                invocation.params = Some(parsed);
            }
            "" => bail!("empty flag name"),
            _ => {
                invocation.named.insert(name, flag_value(&value));
            }
        }
    }
    if invocation.insecure && invocation.fingerprint.is_some() {
        bail!("--insecure and --fingerprint exclude each other");
    }
    Ok(invocation)
}

/// Merges `--params` with `--key=value` pairs into the request's params.
fn params_of(invocation: &Invocation) -> anyhow::Result<Value> {
    match (&invocation.params, invocation.named.is_empty()) {
        (None, true) => Ok(Value::Null),
        (None, false) => Ok(Value::Object(invocation.named.clone())),
        (Some(Value::Object(object)), _) => {
            let mut merged = object.clone();
            merged.extend(invocation.named.clone());
            Ok(Value::Object(merged))
        }
        (Some(array), true) => Ok(array.clone()),
        (Some(_), false) => {
            bail!("positional --params cannot be mixed with --key=value params")
        }
    }
}

fn password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("SLIPSTREAM_API_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password("Password: ")
        .context("no password: set SLIPSTREAM_API_PASSWORD or run on a terminal to be asked")
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let invocation = parse(&args.args)?;
    let method = invocation
        .method
        .clone()
        .ok_or_else(|| anyhow!("no METHOD given, e.g. `slipstream api server.getServerInfo`"))?;
    let params = params_of(&invocation)?;
    let trust = if invocation.insecure {
        Trust::Insecure
    } else if let Some(fingerprint) = &invocation.fingerprint {
        Trust::Fingerprint(fingerprint.clone())
    } else {
        Trust::FirstUse(KnownServers::default_location())
    };
    let host = invocation
        .host
        .clone()
        .unwrap_or_else(|| "localhost".into());
    let mut client = ApiClient::new(host, invocation.port.unwrap_or(8886), trust);
    if let Some(user) = &invocation.user {
        client = client.with_auth(Auth::Basic {
            user: user.clone(),
            password: password()?,
        });
    }
    match client.call(&method, params).await {
        Ok(result) => {
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
        Err(slipstream_client::ClientError::Rpc(error)) => {
            bail!("{} (code {})", error.message, error.code)
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn client_flags_anywhere_and_params_as_json() {
        let invocation = parse(&strings(&[
            "--host",
            "h",
            "send.createTransfer",
            "--overwriteMode=4",
            "--user=bob",
            "--mapping={\"\":\"/data\"}",
            "--name",
            "plain text",
        ]))
        .unwrap();
        assert_eq!(invocation.host.as_deref(), Some("h"));
        assert_eq!(invocation.user.as_deref(), Some("bob"));
        assert_eq!(invocation.method.as_deref(), Some("send.createTransfer"));
        assert_eq!(
            params_of(&invocation).unwrap(),
            json!({"overwriteMode": 4, "mapping": {"": "/data"}, "name": "plain text"})
        );
    }

    #[test]
    fn params_json_object_or_array() {
        let invocation = parse(&strings(&["m", "--params", "[\"\", {}]"])).unwrap();
        assert_eq!(params_of(&invocation).unwrap(), json!(["", {}]));
        let invocation = parse(&strings(&["m", "--params={\"user\":\"x\"}", "--a=1"])).unwrap();
        assert_eq!(
            params_of(&invocation).unwrap(),
            json!({"user": "x", "a": 1})
        );
        assert!(parse(&strings(&["m", "--params=3"])).is_err());
        assert!(parse(&strings(&[
            "m",
            "--insecure",
            "--fingerprint",
            &"a".repeat(64)
        ]))
        .is_err());
    }
}
