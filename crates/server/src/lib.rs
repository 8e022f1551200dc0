//! The Slipstream server: configuration, state, users, authentication and the JSON-RPC API.
