//! The S3 sandbox type: client construction from a mapping, probing, and the S3 backend.
//!
//! - [`client()`] builds an `aws_sdk_s3::Client` from one sandbox's [`S3Config`] (every seed
//!   option: region, keys and session token, scheme, endpointOverride, path style, proxy with
//!   credentials, caFile/caPath, verifySSL) with bounded connect timeouts.
//! - [`probe()`] checks a mapping against the endpoint and explains each failure.
//! - [`S3Backend`] implements [`slipstream_storage::Backend`] over bucket + prefix.
//!
//! [`S3Config`]: slipstream_storage::config::S3Config

mod backend;
pub mod client;
mod errors;
mod insecure;
pub mod keys;
mod probe;

pub use backend::S3Backend;
pub use client::{client, metadata_client};
pub use probe::probe;
