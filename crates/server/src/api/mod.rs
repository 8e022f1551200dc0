//! The JSON-RPC methods: the method table (names, params in order, whether a login is
//! needed), authentication of the caller, and dispatch to the handlers by namespace.

mod fs_methods;
mod sandbox_methods;
mod server_methods;

use crate::auth::{Authenticator, Session};
use crate::requests::Requests;
use crate::rpc::{Params, RpcError};
use crate::sandboxes::Sandboxes;
use crate::state::Store;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// One API method: its full name, its params in positional order, and whether it needs a login.
pub struct MethodSpec {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub needs_auth: bool,
}

const fn method(name: &'static str, params: &'static [&'static str]) -> MethodSpec {
    MethodSpec {
        name,
        params,
        needs_auth: true,
    }
}

/// Every method the server answers.
pub const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "server.getServerInfo",
        params: &[],
        needs_auth: false,
    },
    // server.auth carries its own credentials.
    MethodSpec {
        name: "server.auth",
        params: &["user", "password"],
        needs_auth: false,
    },
    method("server.superuser", &[]),
    method("server.echo", &["text"]),
    method(
        "server.setSandboxMapping",
        &["user", "mapping", "skipValidation"],
    ),
    method("server.getSandboxMappings", &[]),
    method("server.deleteSandboxMapping", &["user"]),
    method("server.lsRoots", &[]),
    method("server.ls", &["path", "limit", "cursor"]),
    method("server.du", &["path"]),
    method("server.mkdir", &["path"]),
    method("server.mkFile", &["path"]),
    method("server.mv", &["src", "dst"]),
    method("server.rm", &["path", "recursive"]),
    method("server.lsRootsAsync", &[]),
    method("server.lsAsync", &["path", "limit", "cursor"]),
    method("server.duAsync", &["path"]),
    method("server.mkdirAsync", &["path"]),
    method("server.mkFileAsync", &["path"]),
    method("server.mvAsync", &["src", "dst"]),
    method("server.rmAsync", &["path", "recursive"]),
    method("server.getRequestStatus", &["requestId"]),
    method("server.getRequestResult", &["requestId"]),
];

/// Finds a method by name; names without a namespace are in `server.` (as in JetStream).
/// `send.*` and `recv.*` come from the engine's table.
pub fn find_method(name: &str) -> Option<MethodSpec> {
    let full = if name.contains('.') {
        name.to_string()
    } else {
        format!("server.{name}")
    };
    let server = METHODS.iter().find(|m| m.name == full).map(|m| MethodSpec {
        name: m.name,
        params: m.params,
        needs_auth: m.needs_auth,
    });
    server.or_else(|| {
        slipstream_engine::METHODS
            .iter()
            .find(|(n, _)| *n == full)
            .map(|(name, params)| MethodSpec {
                name,
                params,
                needs_auth: true,
            })
    })
}

/// Static facts about this server that `getServerInfo` reports.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version: &'static str,
    pub server_name: String,
    pub host_name: String,
    pub server_id: String,
    pub api_port: u16,
    pub recv_port: u16,
    pub min_cipher: u8,
    pub certificate_fingerprint: String,
    pub sandbox_dir: Option<String>,
    pub file_cache_max: u64,
    pub file_cache_max_upload: u64,
    pub file_cache_max_download: u64,
}

/// Everything a handler may use.
pub struct Context {
    pub facts: ServerFacts,
    pub store: Arc<Store>,
    pub auth: Authenticator,
    /// The S3 file cache (its `used()` is `getServerInfo.fileCache.used`).
    pub file_cache: slipstream_storage::cache::FileCache,
    /// Users' sandboxes.
    pub sandboxes: Arc<Sandboxes>,
    /// Background requests of the `...Async` methods.
    pub requests: Requests,
    /// The transfer engine (`send.*`, `recv.*`).
    pub engine: Arc<slipstream_engine::Engine>,
}

/// Who sent the HTTP request: the Authorization header and the client address. The login is
/// checked at most once per HTTP request, even for a batch.
pub struct Caller {
    pub authorization: Option<String>,
    pub address: IpAddr,
    session: OnceCell<Result<Session, RpcError>>,
}

impl Caller {
    pub fn new(authorization: Option<String>, address: IpAddr) -> Self {
        Caller {
            authorization,
            address,
            session: OnceCell::new(),
        }
    }

    async fn session(&self, context: &Context) -> Result<Session, RpcError> {
        self.session
            .get_or_init(|| authenticate(context, self.authorization.as_deref(), self.address))
            .await
            .clone()
    }
}

async fn authenticate(
    context: &Context,
    authorization: Option<&str>,
    address: IpAddr,
) -> Result<Session, RpcError> {
    use base64::Engine;
    let Some(header) = authorization else {
        return Err(RpcError::auth_failed(
            "no credentials; use HTTP Basic (user:password) or a Bearer token from server.auth",
        ));
    };
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| RpcError::auth_failed("malformed Basic credentials"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| RpcError::auth_failed("malformed Basic credentials"))?;
            context.auth.login(user, password, address).await
        }
        "bearer" => context.auth.check_token(value.trim()),
        _ => Err(RpcError::auth_failed(
            "unsupported Authorization scheme; use Basic or Bearer",
        )),
    }
}

/// Runs one call.
pub async fn dispatch(
    shared: &Arc<Context>,
    caller: &Caller,
    method_name: &str,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let context: &Context = shared;
    let spec = find_method(method_name).ok_or_else(|| RpcError::method_not_found(method_name))?;
    let spec = &spec;
    let session = if spec.needs_auth {
        Some(caller.session(context).await?)
    } else {
        None
    };
    let params = Params::new(params, spec.params)?;
    let call = Call {
        context,
        caller,
        session: session.as_ref(),
        params: &params,
    };
    match spec.name.split_once('.') {
        Some((
            "server",
            name @ ("setSandboxMapping" | "getSandboxMappings" | "deleteSandboxMapping"),
        )) => sandbox_methods::handle(name, call).await,
        Some(("server", name @ ("getServerInfo" | "auth" | "superuser" | "echo"))) => {
            server_methods::handle(name, call).await
        }
        Some(("server", name)) => fs_methods::handle(name, call, shared.clone()).await,
        Some(("send" | "recv", _)) => {
            let session = call.session()?;
            let caller = slipstream_engine::Caller {
                user: session.user.clone(),
                superuser: session.superuser,
                address: caller.address,
            };
            shared
                .engine
                .call(spec.name, params.clone().into_map(), &caller)
                .await
                .map_err(RpcError::from)
        }
        _ => Err(RpcError::method_not_found(method_name)),
    }
}

/// One call as a handler sees it.
pub struct Call<'a> {
    pub context: &'a Context,
    pub caller: &'a Caller,
    /// The logged-in user; `None` only for methods that need no login.
    pub session: Option<&'a Session>,
    pub params: &'a Params,
}

impl Call<'_> {
    /// The logged-in user (methods that need a login always have one).
    pub fn session(&self) -> Result<&Session, RpcError> {
        self.session
            .ok_or_else(|| RpcError::auth_failed("this method needs a login"))
    }

    /// Fails unless the caller is a superuser.
    pub fn require_superuser(&self) -> Result<&Session, RpcError> {
        let session = self.session()?;
        if session.superuser {
            Ok(session)
        } else {
            Err(RpcError::permission_denied(format!(
                "user '{}' is not a superuser; this method needs a superuser",
                session.user
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_unique_and_unprefixed_names_mean_server() {
        for (i, a) in METHODS.iter().enumerate() {
            assert!(
                METHODS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
        assert_eq!(find_method("echo").unwrap().name, "server.echo");
        assert!(find_method("server.nope").is_none());
    }
}
