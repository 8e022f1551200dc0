//! JSON-RPC client for the Slipstream control API, with certificate pinning.
