//! The S3 sandbox type: client construction from a mapping, probing, the S3 backend and its
//! transfer data path.
//!
//! - [`client()`] builds an `aws_sdk_s3::Client` from one sandbox's [`S3Config`] (every seed
//!   option: region, keys and session token, scheme, endpointOverride, path style, proxy with
//!   credentials, caFile/caPath, verifySSL) with bounded connect timeouts.
//! - [`probe()`] checks a mapping against the endpoint and explains each failure.
//! - [`S3Backend`] implements [`slipstream_storage::Backend`] over bucket + prefix.
//! - [`upload`]: the sink that receives a transfer into a multipart upload ([`S3Sink`],
//!   [`check_upload_size`]); [`download`]: the ranged-GET reader ([`S3Reader`]); both draw
//!   their memory from the server's [`slipstream_storage::cache::FileCache`].
//! - [`reaper`]: stale multipart uploads (list, abort).
//!
//! [`S3Config`]: slipstream_storage::config::S3Config

mod backend;
pub mod client;
pub mod download;
mod errors;
mod insecure;
pub mod keys;
mod probe;
pub mod reaper;
pub mod upload;

pub use backend::S3Backend;
pub use client::{client, metadata_client};
pub use download::S3Reader;
pub use probe::probe;
pub use reaper::PendingUpload;
pub use upload::{check_upload_size, S3Sink};
