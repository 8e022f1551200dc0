//! Key arithmetic for an S3 sandbox: the normalised `path` prefix, sandbox paths to keys and
//! back, which listed names are shown, `CopySource` encoding, and multipart-copy part ranges.

use slipstream_storage::{RelPath, StorageError, StorageResult};

/// Normalises the `path` option: no leading, trailing or doubled slashes; `""` is the bucket
/// root. `.` and `..` segments are refused (they would be literal keys, never navigation, and
/// a prefix must not look like it climbs).
pub fn normalize_prefix(path: &str) -> StorageResult<String> {
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" => {}
            "." | ".." => {
                return Err(StorageError::config(
                    "path",
                    format!("path '{path}': '.' and '..' segments are not allowed in an S3 prefix"),
                ))
            }
            s if s.chars().any(char::is_control) => {
                return Err(StorageError::config(
                    "path",
                    format!("path '{path}': control characters are not allowed"),
                ))
            }
            s => segments.push(s),
        }
    }
    Ok(segments.join("/"))
}

/// Maps sandbox paths to keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct KeyMap {
    /// Normalised prefix, `""` for the bucket root.
    prefix: String,
}

impl KeyMap {
    pub(crate) fn new(prefix: String) -> Self {
        KeyMap { prefix }
    }

    /// The object key of a file at `path` (`path` must not be the root).
    pub(crate) fn key(&self, path: &RelPath) -> String {
        match (self.prefix.is_empty(), path.is_root()) {
            (true, _) => path.as_str().to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{}", self.prefix, path.as_str()),
        }
    }

    /// The key prefix of the folder `path`, ending in `/` (`""` for the root of a bucket-root
    /// sandbox). This is also the folder's marker key.
    pub(crate) fn dir_prefix(&self, path: &RelPath) -> String {
        if path.is_root() {
            if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            }
        } else {
            format!("{}/", self.key(path))
        }
    }
}

/// True if `name` (one listed segment) is shown to users: it must be reachable through a
/// [`RelPath`], so `""`, `.`, `..`, names with `/` or control characters are hidden.
pub(crate) fn visible_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// True if every segment of `rel` (a key below a folder prefix; a trailing `/` marks a folder
/// marker) is a visible name.
pub(crate) fn visible_path(rel: &str) -> bool {
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    !rel.is_empty() && rel.split('/').all(visible_name)
}

/// `bucket/key` for `CopySource`, percent-encoded except `/` and unreserved characters.
pub(crate) fn copy_source(bucket: &str, key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    format!(
        "{}/{}",
        percent_encoding::utf8_percent_encode(bucket, KEEP),
        percent_encoding::utf8_percent_encode(key, KEEP)
    )
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// The largest object CopyObject copies in one request; larger ones use UploadPartCopy.
pub const COPY_OBJECT_MAX: u64 = 5 * GIB;
/// S3's limit on parts per multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// The smallest part we copy with (fewer requests than S3's 5 MiB minimum).
pub const MIN_COPY_PART: u64 = 512 * MIB;
/// S3's largest part.
pub const MAX_PART: u64 = 5 * GIB;

/// The part size for a multipart copy of `size` bytes: at least [`MIN_COPY_PART`], large
/// enough for [`MAX_PARTS`] parts (rounded up to a MiB), at most [`MAX_PART`].
pub fn copy_part_size(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    needed.clamp(MIN_COPY_PART, MAX_PART)
}

/// The parts of a multipart copy: `(part number, first byte, last byte)`, inclusive ranges as
/// `x-amz-copy-source-range` wants them. Lazy: 10,000 parts are never held at once.
pub fn copy_parts(size: u64) -> impl Iterator<Item = (i32, u64, u64)> {
    part_ranges(size, copy_part_size(size))
}

/// `size` bytes cut into parts of `part` bytes (the last one shorter), numbered from 1.
pub fn part_ranges(size: u64, part: u64) -> impl Iterator<Item = (i32, u64, u64)> {
    let part = part.max(1);
    let count = size.div_ceil(part);
    (0..count).map(move |i| {
        let first = i * part;
        let last = (first + part).min(size) - 1;
        // Callers keep `count` within MAX_PARTS (10,000), so `i + 1` fits an i32.
        (i32::try_from(i + 1).unwrap_or(i32::MAX), first, last)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/users//bob/").unwrap(), "users/bob");
        assert!(normalize_prefix("a/../b").is_err());
        assert!(normalize_prefix("./a").is_err());
    }

    #[test]
    fn keys_under_a_prefix() {
        let p = RelPath::parse("x/y.txt").unwrap();
        let m = KeyMap::new("users/bob".into());
        assert_eq!(m.key(&p), "users/bob/x/y.txt");
        assert_eq!(m.dir_prefix(&p), "users/bob/x/y.txt/");
        assert_eq!(m.dir_prefix(&RelPath::root()), "users/bob/");
        let m = KeyMap::new(String::new());
        assert_eq!(m.key(&p), "x/y.txt");
        assert_eq!(m.dir_prefix(&RelPath::root()), "");
    }

    #[test]
    fn odd_names_are_hidden() {
        for bad in ["", ".", "..", "a/b", "a\u{1}"] {
            assert!(!visible_name(bad), "{bad:?}");
        }
        assert!(visible_name("a b.txt"));
        assert!(visible_path("a/b/"));
        assert!(visible_path("a/b"));
        assert!(!visible_path("a//b"));
        assert!(!visible_path("./x"));
        assert!(!visible_path("a/../b"));
        assert!(!visible_path("/"));
    }

    #[test]
    fn copy_source_is_encoded() {
        assert_eq!(copy_source("b", "a dir/ü+x"), "b/a%20dir/%C3%BC%2Bx");
    }

    #[test]
    fn copy_part_arithmetic() {
        // Just over the single-copy limit: 512 MiB parts, last one short.
        let size = COPY_OBJECT_MAX + 1;
        assert_eq!(copy_part_size(size), MIN_COPY_PART);
        let parts: Vec<_> = copy_parts(size).collect();
        assert_eq!(parts.len(), 11);
        assert_eq!(parts[0], (1, 0, MIN_COPY_PART - 1));
        assert_eq!(parts[10], (11, 10 * MIN_COPY_PART, size - 1));

        // 1 TiB: 10,000 parts of ≥ 104.86 MiB would do, but the minimum wins.
        let tib = 1024 * GIB;
        assert_eq!(copy_part_size(tib), MIN_COPY_PART);
        assert_eq!(copy_parts(tib).count(), 2048);

        // 10 TiB needs 1049 MiB parts to stay within 10,000.
        let size = 10 * tib;
        let part = copy_part_size(size);
        assert_eq!(part, 1049 * MIB);
        assert!(size.div_ceil(part) <= MAX_PARTS);

        // The S3 maximum (10,000 × 5 GiB) uses exactly 10,000 parts of 5 GiB.
        let max = MAX_PARTS * MAX_PART;
        assert_eq!(copy_part_size(max), MAX_PART);
        let (n, first, last) = copy_parts(max).last().unwrap();
        assert_eq!((n, first, last), (10_000, max - MAX_PART, max - 1));

        // Ranges tile the object exactly: contiguous, no gaps or overlaps.
        for size in [COPY_OBJECT_MAX + 1, 7 * GIB + 3, 3 * tib + 12345] {
            let mut next = 0;
            for (i, (n, first, last)) in copy_parts(size).enumerate() {
                assert_eq!(n as usize, i + 1);
                assert_eq!(first, next);
                assert!(last >= first && last - first < copy_part_size(size));
                next = last + 1;
            }
            assert_eq!(next, size);
        }
        assert_eq!(part_ranges(0, 5).count(), 0);
        assert_eq!(
            part_ranges(10, 5).collect::<Vec<_>>(),
            [(1, 0, 4), (2, 5, 9)]
        );
    }
}
