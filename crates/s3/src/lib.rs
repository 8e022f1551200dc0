//! The S3 sandbox type: client construction from a mapping, probing, and the S3 backend.
