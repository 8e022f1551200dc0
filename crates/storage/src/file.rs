//! The File sandbox type: a folder on local disk.
