//! A user's view of storage: virtual roots mapped to backends.
