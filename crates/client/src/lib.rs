//! JSON-RPC client for the Slipstream control API, with certificate pinning.
//!
//! Used by `slipstream api`, by the tests, and by a sending server when it logs in to a
//! receiving server. Every call opens one TLS connection; the server's certificate is checked
//! against a [`Trust`] policy: a pinned SHA-256 fingerprint, trust on first use, or nothing.

mod fingerprint;
mod rpc;
mod tls;

pub use fingerprint::{normalize_fingerprint, sha256_fingerprint, KnownServers};
pub use rpc::{ApiClient, Auth, ClientError, RpcError};
pub use tls::Trust;
