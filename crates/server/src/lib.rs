//! The Slipstream server: configuration, state, users, authentication and the JSON-RPC API.
//!
//! [`run::run`] starts everything; [`config::ServerArgs`] are its flags. The pieces:
//! [`state`] (SQLite), [`users`] (argon2id accounts), [`auth`] (logins, tokens, throttling),
//! [`tls`] (the API certificate), [`rpc`] (JSON-RPC framing and errors), [`api`] (the
//! methods) and [`http`] (the HTTPS listener).

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod http;
pub mod requests;
pub mod rpc;
pub mod run;
pub mod sandboxes;
pub mod state;
pub mod tls;
pub mod units;
pub mod users;
