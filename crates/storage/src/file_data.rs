//! The File sandbox's data path: a positional reader and a [`FileSink`] that writes at any
//! offset, honours the six overwrite modes, checkpoints for resume, and publishes a file only
//! after reading it back and checking its digest.
//!
//! # Confinement
//!
//! Paths are resolved exactly like every other File operation (see [`crate::file`]): the
//! reader opens its file with `openat2(RESOLVE_BENEATH)`, the sink opens the *parent folder*
//! that way once and then acts only on single names relative to that folder handle
//! (`openat` with `O_NOFOLLOW`, `renameat2`, `linkat`, `unlinkat`), so no symbolic link can
//! lead a write outside the sandbox. A symbolic link under the final name is treated as an
//! entry of its own: modes 1, 4 and 5 replace the link itself (never its target), modes 0, 2
//! and 3 refuse it as an existing file.
//!
//! # Partfiles
//!
//! Modes 3 (never), 4 (always) and 5 (backup) write into a partfile in the same folder,
//! named by [`partfile_name`]: `.<name>.<reception_id>.slipstream-part` (hidden, unique per
//! reception; an unusual reception id is replaced by a hash of it, and a very long name is
//! shortened and completed with a hash so the partfile name stays within 255 bytes). Listings
//! do not hide partfiles; they are hidden files like any other. The partfile is created with
//! mode `0644` (less the umask) and renamed over the final name at commit. Modes 0–2 write
//! straight into the final name.
//!
//! # Life of a sink
//!
//! - Creation checks the overwrite mode against the existing target (`Conflict` before any byte
//!   is written), creates the partfile or in-place file, and extends it to its final size
//!   (sparse), so that writes can land anywhere.
//! - Writes are `pwrite`s in `spawn_blocking`; small writes are gathered (up to 1 MiB or 256
//!   writes) and written in one blocking task. An error of a gathered write is reported by a
//!   later `write_at`, `checkpoint` or `commit`.
//! - [`FileSink::checkpoint`] writes what is gathered, `fdatasync`s, and returns the written
//!   ranges and a state that carries them; a sink created with that state reopens the same file
//!   without truncating it and reports those ranges in [`FileSink::resumed`]. If the file is
//!   gone, has another size or is another file (inode), the sink starts afresh (with a warning),
//!   or fails with `NotFound` when [`SinkOptions::resume_only`] is set.
//! - The sink is [reopenable](FileSink::reopenable): after a checkpoint every written byte is on
//!   disk, so the engine may drop it (closing its two descriptors, the file and its folder) and
//!   reopen it from the checkpoint's state when it needs it again.
//! - Each verification chunk (the S3 part size) is read back and hashed in the background as
//!   soon as all of it is written, so [`FileSink::commit`] only hashes the chunks left. The
//!   checkpoint state records the hashes of durable chunks, so a sink reopened from it keeps
//!   them. Commit compares the digest with the sender's, and only
//!   then publishes: sets the executable bit and the modification time, renames
//!   (modes 3–5; mode 5 keeps the old file as `NAME.bak`), and `fsync`s the folder. A mismatch
//!   or any failure before publishing removes the partfile (or the in-place file).
//! - [`FileSink::abort`] removes the partfile, or the in-place file when the sink created,
//!   emptied or wrote into it.
//! - Dropping a sink without commit or abort removes the same things, *unless* a checkpoint was
//!   handed out (or the sink was itself resumed): that file is kept so that the reception can
//!   resume after a restart.

use crate::data::{
    verification_chunk_size, DigestBuilder, FileDigest, FileSink, ObjectReader, OverwriteMode,
    SinkCheckpoint, SinkOptions, MIB,
};
use crate::error::{StorageError, StorageResult};
use crate::file::{check, cstring, fstatat, is_dir, is_file, is_symlink, os_error, raw_openat, Fs};
use crate::path::RelPath;
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The suffix of every partfile name.
pub const PARTFILE_SUFFIX: &str = ".slipstream-part";
/// The longest file name Linux file systems accept, in bytes.
const NAME_MAX: usize = 255;
/// Size of the reads that verify a file at commit.
const VERIFY_READ: usize = 4 * MIB as usize;
/// Gathered writes are written once they hold this many bytes ...
const FLUSH_BYTES: usize = MIB as usize;
/// ... or this many writes.
const FLUSH_COUNT: usize = 256;

/// The partfile that receives `name` for the reception `reception_id`:
/// `.<name>.<reception_id>.slipstream-part`. A reception id that is empty, longer than 64
/// bytes or holds anything but ASCII letters, digits, `-`, `_` and `.` is replaced by 16 hex
/// digits of its BLAKE3 hash; a name too long for the result to fit in 255 bytes is cut (at a
/// character boundary) and followed by `~` and 16 hex digits of its hash.
pub fn partfile_name(name: &str, reception_id: &str) -> String {
    let plain_id = !reception_id.is_empty()
        && reception_id.len() <= 64
        && reception_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let id = if plain_id {
        reception_id.to_string()
    } else {
        short_hash(reception_id)
    };
    // The leading '.', the '.' before the id, the id and the suffix.
    let fixed = 2 + id.len() + PARTFILE_SUFFIX.len();
    if fixed + name.len() <= NAME_MAX {
        return format!(".{name}.{id}{PARTFILE_SUFFIX}");
    }
    let hash = short_hash(name);
    let mut cut = NAME_MAX - fixed - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}~{hash}.{id}{PARTFILE_SUFFIX}", &name[..cut])
}

/// True for names made by [`partfile_name`].
pub fn is_partfile_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(PARTFILE_SUFFIX)
}

fn short_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn join_error(err: tokio::task::JoinError) -> StorageError {
    StorageError::Backend(format!("file operation failed: {err}"))
}

// ---------------------------------------------------------------------------------------------
// Written ranges

/// Sorted, disjoint, non-adjacent byte ranges; inserting merges, so millions of adjacent
/// writes stay one range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    pub(crate) fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        // Fast path: in-order writes extend (or follow) the last range.
        match self.ranges.last_mut() {
            None => {
                self.ranges.push(range);
                return;
            }
            Some(last) if range.start >= last.start && range.start <= last.end => {
                last.end = last.end.max(range.end);
                return;
            }
            Some(last) if range.start > last.end => {
                self.ranges.push(range);
                return;
            }
            Some(_) => {}
        }
        // The ranges that touch or overlap `range` are lo..hi.
        let lo = self.ranges.partition_point(|r| r.end < range.start);
        let hi = self.ranges.partition_point(|r| r.start <= range.end);
        if lo == hi {
            self.ranges.insert(lo, range);
            return;
        }
        let start = range.start.min(self.ranges[lo].start);
        let end = range.end.max(self.ranges[hi - 1].end);
        self.ranges.splice(lo..hi, std::iter::once(start..end));
    }

    pub(crate) fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// How many bytes the ranges hold.
    pub(crate) fn covered(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// True when every byte of `range` is in the set.
    pub(crate) fn contains_range(&self, range: &Range<u64>) -> bool {
        if range.start >= range.end {
            return true;
        }
        let index = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges
            .get(index)
            .is_some_and(|r| r.start <= range.start && range.end <= r.end)
    }
}

// ---------------------------------------------------------------------------------------------
// Reader

/// Reads a File sandbox file at any offset (`pread` in `spawn_blocking`).
#[derive(Debug)]
pub struct FileReader {
    file: Arc<File>,
    size: u64,
    path: RelPath,
}

/// Opens `path` for reading, confined to the sandbox. A folder, a special file or a missing
/// path is `NotFound`; a path through a link that leaves the sandbox is `PermissionDenied`.
pub(crate) fn open_reader(fs: &Fs, path: &RelPath) -> StorageResult<FileReader> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    let fd = fs
        .open(path, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
        .map_err(|e| os_error(e, path))?;
    let st = fstatat(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH).map_err(|e| os_error(e, path))?;
    if is_dir(&st) {
        return Err(StorageError::NotFound(format!(
            "'{path}' is a folder, not a file: only files can be read"
        )));
    }
    if !is_file(&st) {
        return Err(StorageError::NotFound(format!(
            "'{path}' is not a regular file (a device, socket or FIFO) and cannot be read"
        )));
    }
    Ok(FileReader {
        file: Arc::new(File::from(fd)),
        size: u64::try_from(st.st_size).unwrap_or(0),
        path: path.clone(),
    })
}

#[async_trait]
impl ObjectReader for FileReader {
    /// The size when the file was opened; reads never go past it (a file that grows while it
    /// is sent is sent as it was when opened, as far as its size goes).
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> StorageResult<Bytes> {
        // `want` is at most `len`, a usize, so the cast back cannot truncate.
        let want = self.size.saturating_sub(offset).min(len as u64) as usize;
        if want == 0 {
            return Ok(Bytes::new());
        }
        let file = self.file.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    // The file shrank since it was opened: a short read at its real end.
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(os_error(e, &path)),
                }
            }
            buf.truncate(filled);
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(join_error)?
    }
}

// ---------------------------------------------------------------------------------------------
// Sink

/// Receives one file into a File sandbox (see the module documentation).
#[derive(Debug)]
pub struct FileDataSink {
    /// The final path, for messages.
    path: RelPath,
    /// The folder holding the file (an `O_PATH` handle, resolved once, confined).
    dir: Arc<OwnedFd>,
    /// The final name.
    name: CString,
    /// The name written to: the partfile, or the final name for in-place modes.
    work: CString,
    work_text: String,
    file: Arc<File>,
    mode: OverwriteMode,
    size: u64,
    executable: bool,
    modification_time: Option<i64>,
    reception_id: String,
    /// What was written to the file (not counting gathered writes not yet written).
    written: RangeSet,
    resumed: Vec<Range<u64>>,
    pending: Vec<(u64, Bytes)>,
    pending_bytes: usize,
    /// Verification chunks already hashed (index -> BLAKE3), and those being hashed in the
    /// background: each chunk is read back and hashed as soon as all of it is written, so the
    /// check at commit only hashes what is left instead of reading the whole file again.
    chunk_hashes: BTreeMap<u64, [u8; 32]>,
    chunk_tasks: Vec<ChunkHashTask>,
    chunks_started: std::collections::BTreeSet<u64>,
    /// In-place modes: the sink created, emptied or wrote into the file, so removing it on
    /// failure loses nothing of the previous file that was not already lost.
    owns_file: bool,
    /// A checkpoint exists that can resume this sink: keep the file when dropped.
    keep_on_drop: bool,
    /// The folder was fsync'ed since the file was created.
    dir_synced: bool,
    /// The file is published: nothing to remove any more.
    published: bool,
    /// Commit or abort ran: Drop does nothing.
    done: bool,
}

/// A background hash of one verification chunk: (chunk index, BLAKE3).
type ChunkHashTask = tokio::task::JoinHandle<io::Result<(u64, [u8; 32])>>;

/// Creates the sink for `path` (see the module documentation).
pub(crate) fn create_sink(
    fs: &Fs,
    path: &RelPath,
    options: SinkOptions,
) -> StorageResult<FileDataSink> {
    if path.is_root() {
        return Err(StorageError::Conflict(
            "the sandbox root is a folder; a file cannot be received there".into(),
        ));
    }
    let (dir, name) = fs.parent(path)?;
    let name_text = path.name().to_string();
    let mode = options.overwrite;
    if mode == OverwriteMode::Backup && name_text.len() + ".bak".len() > NAME_MAX {
        return Err(StorageError::Backend(format!(
            "'{path}': the name is too long to keep a backup '{name_text}.bak' \
             (overwriteMode 5); use another mode or a shorter name"
        )));
    }
    let work_text = if mode.uses_partfile() {
        partfile_name(&name_text, &options.reception_id)
    } else {
        name_text.clone()
    };
    let work = cstring(&work_text)?;
    let dir_fd = dir.as_raw_fd();

    let mut resumed = None;
    if let Some(state) = &options.resume {
        match reopen(dir_fd, &work, &work_text, &options, state) {
            Ok(found) => resumed = Some(found),
            Err(reason) if options.resume_only => {
                return Err(StorageError::NotFound(format!(
                    "the partial reception of '{path}' cannot be resumed: {reason}"
                )))
            }
            Err(reason) => tracing::warn!(
                path = %path,
                "cannot resume the reception of '{path}' ({reason}); receiving it from the start"
            ),
        }
    }

    let (file, written, owns_file, was_resumed) = match resumed {
        Some((file, written)) => {
            if mode == OverwriteMode::Never {
                // The target may have appeared while the reception was interrupted.
                let refused = match target_stat(dir_fd, &name, path) {
                    Ok(None) => None,
                    Ok(Some(_)) => Some(never_conflict(path)),
                    Err(e) => Some(e),
                };
                if let Some(e) = refused {
                    // No partfile is left behind on a failure.
                    let _ = unlink_if_same(dir_fd, &work, &file);
                    return Err(e);
                }
            }
            (file, written, true, true)
        }
        None => {
            let (file, owns) = create_fresh(dir_fd, &name, &work, path, &options)?;
            (file, RangeSet::default(), owns, false)
        }
    };
    let resumed_ranges = written.ranges().to_vec();
    let chunk_hashes = match (&options.resume, was_resumed) {
        (Some(state), true) => chunk_hashes_from_state(state, options.size, &written),
        _ => BTreeMap::new(),
    };
    let chunks_started = chunk_hashes.keys().copied().collect();
    Ok(FileDataSink {
        path: path.clone(),
        dir: Arc::new(dir),
        name,
        work,
        work_text,
        file: Arc::new(file),
        mode,
        size: options.size,
        executable: options.executable,
        modification_time: options.modification_time,
        reception_id: options.reception_id,
        written,
        resumed: resumed_ranges,
        pending: Vec::new(),
        pending_bytes: 0,
        chunk_hashes,
        chunk_tasks: Vec::new(),
        chunks_started,
        owns_file,
        keep_on_drop: was_resumed,
        dir_synced: was_resumed,
        published: false,
        done: false,
    })
}

fn never_conflict(path: &RelPath) -> StorageError {
    StorageError::Conflict(format!(
        "'{path}' exists and overwriteMode 3 never replaces it"
    ))
}

/// What is under `name` in `dir` (not following a link); `None` when nothing is. A folder is a
/// `Conflict` in every mode.
fn target_stat(dir: RawFd, name: &CStr, path: &RelPath) -> StorageResult<Option<libc::stat>> {
    match fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_dir(&st) => Err(StorageError::Conflict(format!(
            "'{path}' is a folder; a received file cannot replace it"
        ))),
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(os_error(e, path)),
    }
}

fn fstat_file(file: &File) -> io::Result<libc::stat> {
    fstatat(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; unlinkat never follows a final symbolic link.
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })
}

fn renameat(dir: RawFd, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated; `dir` is an open folder handle.
    check(unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) })
}

/// Removes `name` from `dir` if it is still `file` (same device and inode), so that a file
/// someone else put there meanwhile is never removed. Nothing there is fine.
fn unlink_if_same(dir: RawFd, name: &CStr, file: &File) -> io::Result<()> {
    let ours = fstat_file(file)?;
    match fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_dev == ours.st_dev && st.st_ino == ours.st_ino => {
            match unlinkat(dir, name) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
                _ => Ok(()),
            }
        }
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `name` in `dir` as a new file (`O_EXCL`, mode 0644 less the umask).
fn create_exclusive(dir: RawFd, name: &CStr) -> io::Result<File> {
    let fd = raw_openat(
        dir,
        name,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o644,
    )?;
    Ok(File::from(fd))
}

/// Opens the existing regular file `name` in `dir` for writing; `None` when it is not a regular
/// file (a link, FIFO, device).
fn open_existing(dir: RawFd, name: &CStr, extra: i32) -> io::Result<Option<File>> {
    let fd = match raw_openat(
        dir,
        name,
        libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | extra,
        0,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = File::from(fd);
    if !is_file(&fstat_file(&file)?) {
        return Ok(None);
    }
    // Back to blocking mode for the writes (O_NONBLOCK only kept the open from waiting).
    // SAFETY: fcntl on a descriptor we own, reading its status flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, setting the same flags without O_NONBLOCK.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    Ok(Some(file))
}

/// Checks the overwrite mode against the target and creates the file to write into, at its
/// final size. Returns the file and whether the sink owns its content (see `owns_file`).
fn create_fresh(
    dir: RawFd,
    name: &CStr,
    work: &CStr,
    path: &RelPath,
    options: &SinkOptions,
) -> StorageResult<(File, bool)> {
    let err = |e: io::Error| os_error(e, path);
    if options.overwrite.uses_partfile() {
        // A stale partfile of this reception (one that could not be resumed, or anything put
        // under its name) goes first, so that no failure below leaves it behind.
        match unlinkat(dir, work) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(StorageError::Conflict(format!(
                    "a folder named like the partfile '{}' of '{path}' is in the way",
                    work.to_string_lossy()
                )))
            }
            Err(e) => return Err(err(e)),
        }
    }
    let target = target_stat(dir, name, path)?;
    let exists_conflict = |n: u8| {
        StorageError::Conflict(format!(
            "'{path}' exists and overwriteMode {n} never replaces it"
        ))
    };
    let not_regular = || {
        StorageError::Conflict(format!(
            "'{path}' exists and is not a regular file (a symbolic link, device, socket or \
             FIFO); it is not replaced by writing into it"
        ))
    };
    let (file, owns) = match options.overwrite {
        OverwriteMode::InPlaceNever => {
            if target.is_some() {
                return Err(exists_conflict(0));
            }
            let file = create_exclusive(dir, name).map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) => exists_conflict(0),
                _ => err(e),
            })?;
            (file, true)
        }
        OverwriteMode::InPlaceAlways => match target {
            Some(st) if is_file(&st) => {
                let file = open_existing(dir, name, libc::O_TRUNC)
                    .map_err(err)?
                    .ok_or_else(not_regular)?;
                (file, true)
            }
            Some(st) if is_symlink(&st) => {
                // Replace the link itself, never write through it.
                unlinkat(dir, name).map_err(err)?;
                (create_exclusive(dir, name).map_err(err)?, true)
            }
            Some(_) => return Err(not_regular()),
            None => (create_exclusive(dir, name).map_err(err)?, true),
        },
        OverwriteMode::InPlaceSameSize => match target {
            Some(st) if is_file(&st) => {
                let file = open_existing(dir, name, 0)
                    .map_err(err)?
                    .ok_or_else(not_regular)?;
                let existing = u64::try_from(fstat_file(&file).map_err(err)?.st_size).unwrap_or(0);
                if existing != options.size && existing != 0 {
                    return Err(StorageError::Conflict(format!(
                        "'{path}' exists with {existing} bytes and overwriteMode 2 only writes \
                         into a file of the same size ({} bytes) or an empty one",
                        options.size
                    )));
                }
                // An empty file is extended below: it becomes ours.
                (file, existing == 0 && options.size > 0)
            }
            Some(_) => return Err(not_regular()),
            None => (create_exclusive(dir, name).map_err(err)?, true),
        },
        OverwriteMode::Never | OverwriteMode::Always | OverwriteMode::Backup => {
            if options.overwrite == OverwriteMode::Never && target.is_some() {
                return Err(never_conflict(path));
            }
            (create_exclusive(dir, work).map_err(err)?, true)
        }
    };
    if let Err(e) = file.set_len(options.size) {
        if owns {
            let _ = unlink_if_same(dir, work, &file);
        }
        return Err(err(e));
    }
    Ok((file, owns))
}

/// Reopens the file of an earlier checkpoint; the reason it cannot be resumed otherwise.
fn reopen(
    dir: RawFd,
    work: &CStr,
    work_text: &str,
    options: &SinkOptions,
    state: &serde_json::Value,
) -> Result<(File, RangeSet), String> {
    let field = |key: &str| state.get(key).ok_or(format!("the state has no '{key}'"));
    if field("file")?.as_str() != Some(work_text) {
        return Err("the state names another file".into());
    }
    if field("mode")?.as_u64() != Some(u64::from(u8::from(options.overwrite))) {
        return Err("the state is for another overwrite mode".into());
    }
    if field("size")?.as_u64() != Some(options.size) {
        return Err("the state is for another size".into());
    }
    if field("reception")?.as_str() != Some(options.reception_id.as_str()) {
        return Err("the state is for another reception".into());
    }
    let mut written = RangeSet::default();
    let durable = field("durable")?
        .as_array()
        .ok_or("'durable' is not a list")?;
    for pair in durable {
        let bounds = pair
            .as_array()
            .and_then(|p| Some((p.first()?.as_u64()?, p.get(1)?.as_u64()?)))
            .filter(|(start, end)| start < end && *end <= options.size)
            .ok_or("'durable' holds a range that is not [start, end] within the file")?;
        written.insert(bounds.0..bounds.1);
    }
    let file = match open_existing(dir, work, 0) {
        Ok(Some(file)) => file,
        Ok(None) => return Err("the file is no longer a regular file".into()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err("the file is gone".into()),
        Err(e) => return Err(format!("the file cannot be opened: {e}")),
    };
    let st = fstat_file(&file).map_err(|e| e.to_string())?;
    if u64::try_from(st.st_size).ok() != Some(options.size) {
        return Err(format!(
            "the file has {} bytes instead of {}",
            st.st_size, options.size
        ));
    }
    if field("ino")?.as_u64() != Some(st.st_ino) {
        return Err("the file was replaced by another one".into());
    }
    Ok((file, written))
}

/// `pwrite`s a batch of gathered writes.
fn write_batch(file: &File, batch: &[(u64, Bytes)]) -> io::Result<()> {
    for (offset, data) in batch {
        file.write_all_at(data, *offset)?;
    }
    Ok(())
}

/// `fsync` of the folder `dir` (an `O_PATH` handle cannot be synced: open it for reading).
fn sync_dir(dir: RawFd) -> io::Result<()> {
    let fd = raw_openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    File::from(fd).sync_all()
}

/// The BLAKE3 hash of `range` of `file`, read back in pieces (a chunk can be hundreds of MiB).
fn chunk_hash_of(file: &File, range: Range<u64>) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let len = range.end - range.start;
    let mut buf = vec![0u8; VERIFY_READ.min(usize::try_from(len).unwrap_or(VERIFY_READ))];
    let mut offset = range.start;
    while offset < range.end {
        // Bounded by buf.len(), a usize.
        let want = (range.end - offset).min(buf.len() as u64) as usize;
        match file.read_at(&mut buf[..want], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends at {offset}, before {}", range.end),
                ))
            }
            Ok(n) => {
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Lower-case hex of a hash.
fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from its hex form.
fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(out)
}

/// The chunk hashes a checkpoint's state recorded, for chunks that are entirely among the
/// durable ranges (anything else in the list is ignored: those chunks are hashed at commit).
fn chunk_hashes_from_state(
    state: &serde_json::Value,
    size: u64,
    written: &RangeSet,
) -> BTreeMap<u64, [u8; 32]> {
    let chunk_size = verification_chunk_size(size).max(1);
    let mut hashes = BTreeMap::new();
    let Some(list) = state.get("chunks").and_then(|c| c.as_array()) else {
        return hashes;
    };
    for entry in list {
        let parsed = entry.as_array().and_then(|pair| {
            let index = pair.first()?.as_u64()?;
            let hash = from_hex(pair.get(1)?.as_str()?)?;
            Some((index, hash))
        });
        let Some((index, hash)) = parsed else {
            continue;
        };
        let start = index.saturating_mul(chunk_size);
        let chunk = start..start.saturating_add(chunk_size).min(size);
        if start < size && written.contains_range(&chunk) {
            hashes.insert(index, hash);
        }
    }
    hashes
}

/// The digest of the first `size` bytes of `file`: the chunk hashes already known, and the
/// other chunks read back and hashed (an empty file is one empty chunk, as for
/// [`DigestBuilder`]).
fn file_digest(file: &File, size: u64, known: &BTreeMap<u64, [u8; 32]>) -> io::Result<FileDigest> {
    let chunk_size = verification_chunk_size(size).max(1);
    let count = size.div_ceil(chunk_size).max(1);
    let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for index in 0..count {
        let hash = match known.get(&index) {
            Some(hash) => *hash,
            None => chunk_hash_of(
                file,
                index * chunk_size..((index + 1) * chunk_size).min(size),
            )?,
        };
        hashes.push(hash);
    }
    Ok(DigestBuilder::from_chunk_hashes(hashes.iter()))
}

/// Microseconds since the epoch as a time, if representable.
fn system_time(micros: i64) -> Option<SystemTime> {
    let delta = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(delta)
    } else {
        UNIX_EPOCH.checked_sub(delta)
    }
}

impl FileDataSink {
    /// The state to resume from (see the module documentation).
    fn state(&self) -> StorageResult<serde_json::Value> {
        let ino = fstat_file(&self.file)
            .map_err(|e| os_error(e, &self.path))?
            .st_ino;
        let durable: Vec<[u64; 2]> = self
            .written
            .ranges()
            .iter()
            .map(|r| [r.start, r.end])
            .collect();
        // Hashes of chunks that are written (and, at a checkpoint, durable), so that a sink
        // closed and reopened (the engine closes each file once it is complete) or resumed
        // after a restart does not read them back again at commit.
        let chunks: Vec<serde_json::Value> = self
            .chunk_hashes
            .iter()
            .map(|(index, hash)| json!([index, to_hex(hash)]))
            .collect();
        Ok(json!({
            "file": self.work_text,
            "mode": u8::from(self.mode),
            "size": self.size,
            "reception": self.reception_id,
            "ino": ino,
            "durable": durable,
            "chunks": chunks,
        }))
    }

    async fn flush(&mut self) -> StorageResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let ranges: Vec<Range<u64>> = batch
            .iter()
            .map(|(offset, data)| *offset..*offset + data.len() as u64)
            .collect();
        let file = self.file.clone();
        // Written bytes change the file even if a later one fails.
        self.owns_file = true;
        tokio::task::spawn_blocking(move || write_batch(&file, &batch))
            .await
            .map_err(join_error)?
            .map_err(|e| os_error(e, &self.path))?;
        for range in &ranges {
            self.written.insert(range.clone());
        }
        self.hash_complete_chunks(&ranges);
        Ok(())
    }

    /// Starts hashing, in the background, every verification chunk touched by `ranges` that is
    /// now completely written.
    fn hash_complete_chunks(&mut self, ranges: &[Range<u64>]) {
        let chunk_size = verification_chunk_size(self.size).max(1);
        for range in ranges {
            if range.start >= range.end {
                continue;
            }
            for index in range.start / chunk_size..=(range.end - 1) / chunk_size {
                let chunk = index * chunk_size..((index + 1) * chunk_size).min(self.size);
                if self.chunks_started.contains(&index) || !self.written.contains_range(&chunk) {
                    continue;
                }
                self.chunks_started.insert(index);
                let file = self.file.clone();
                self.chunk_tasks.push(tokio::task::spawn_blocking(move || {
                    Ok((index, chunk_hash_of(&file, chunk)?))
                }));
            }
        }
    }

    /// Takes the results of the background chunk hashes that have finished (without waiting
    /// for the others).
    async fn collect_finished_chunk_hashes(&mut self) {
        let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.chunk_tasks)
            .into_iter()
            .partition(|task| task.is_finished());
        self.chunk_tasks = running;
        // A failed hash is done again at commit.
        for task in finished {
            if let Ok(Ok((index, hash))) = task.await {
                self.chunk_hashes.insert(index, hash);
            }
        }
    }

    /// Waits for the background chunk hashes; a chunk whose hashing failed is hashed again at
    /// commit.
    async fn collect_chunk_hashes(&mut self) {
        for task in std::mem::take(&mut self.chunk_tasks) {
            if let Ok(Ok((index, hash))) = task.await {
                self.chunk_hashes.insert(index, hash);
            }
        }
    }

    fn flush_blocking(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        self.owns_file = true;
        write_batch(&self.file, &batch)?;
        for (offset, data) in &batch {
            self.written.insert(*offset..*offset + data.len() as u64);
        }
        Ok(())
    }

    /// Removes what a failed or abandoned reception leaves: the partfile, or the in-place file
    /// when the sink owns its content.
    fn discard(&mut self) -> io::Result<()> {
        self.pending.clear();
        if self.published || !(self.mode.uses_partfile() || self.owns_file) {
            return Ok(());
        }
        let dir = self.dir.as_raw_fd();
        let result = unlink_if_same(dir, &self.work, &self.file);
        if !self.mode.uses_partfile() {
            // The in-place file was just removed from the final name: make it stick.
            let _ = sync_dir(dir);
        }
        result
    }

    /// Sets the executable bit and the modification time on the file (failures are warnings:
    /// the content is right, and a file of another owner cannot always take them).
    fn apply_metadata(&self) {
        let result = (|| -> io::Result<()> {
            let mode = fstat_file(&self.file)?.st_mode & 0o7777;
            let wanted = if self.executable {
                // Execute for whoever may read, as `chmod +x` under the umask would do.
                mode | ((mode & 0o444) >> 2)
            } else {
                mode & !0o111
            };
            if wanted != mode {
                self.file
                    .set_permissions(std::fs::Permissions::from_mode(wanted))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.path, "cannot set the permissions of '{}': {e}", self.path);
        }
        if let Some(micros) = self.modification_time {
            let Some(time) = system_time(micros) else {
                tracing::warn!(path = %self.path, "modification time {micros} µs is out of range");
                return;
            };
            if let Err(e) = self.file.set_modified(time) {
                tracing::warn!(
                    path = %self.path,
                    "cannot set the modification time of '{}': {e}", self.path
                );
            }
        }
    }

    /// Verifies and publishes; on failure the caller discards.
    fn commit_blocking(&mut self, expected: FileDigest) -> StorageResult<()> {
        let path = self.path.clone();
        let err = |e: io::Error| os_error(e, &path);
        self.flush_blocking().map_err(err)?;
        self.file.sync_data().map_err(err)?;
        let actual = file_digest(&self.file, self.size, &self.chunk_hashes).map_err(err)?;
        if actual != expected {
            tracing::warn!(
                path = %path,
                written = self.written.covered(),
                size = self.size,
                "digest mismatch: expected {}, the file has {}",
                expected.to_hex(),
                actual.to_hex()
            );
            return Err(StorageError::Backend(format!(
                "integrity check failed for '{path}': the received data does not match the \
                 sender's digest; nothing was published"
            )));
        }
        self.apply_metadata();
        self.file.sync_all().map_err(err)?;
        let dir = self.dir.as_raw_fd();
        match self.mode {
            OverwriteMode::InPlaceNever
            | OverwriteMode::InPlaceAlways
            | OverwriteMode::InPlaceSameSize => {}
            OverwriteMode::Never => rename_no_replace(dir, &self.work, &self.name, &path)?,
            OverwriteMode::Always => {
                target_stat(dir, &self.name, &path)?;
                renameat(dir, &self.work, &self.name).map_err(err)?;
            }
            OverwriteMode::Backup => {
                if target_stat(dir, &self.name, &path)?.is_some() {
                    self.keep_backup(dir)?;
                }
                renameat(dir, &self.work, &self.name).map_err(err)?;
            }
        }
        self.published = true;
        sync_dir(dir).map_err(err)
    }

    /// Mode 5: the current file becomes `NAME.bak` (replacing an older one). A hard link is
    /// made first so that `NAME` never disappears; where links are not supported, a rename.
    fn keep_backup(&self, dir: RawFd) -> StorageResult<()> {
        let mut bak = self.name.as_bytes().to_vec();
        bak.extend_from_slice(b".bak");
        let bak_path = format!("{}.bak", self.path);
        let bak = CString::new(bak).map_err(|_| {
            StorageError::PermissionDenied("NUL is not allowed in names".to_string())
        })?;
        match unlinkat(dir, &bak) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(StorageError::Conflict(format!(
                    "'{bak_path}' is a folder, so the old file cannot be kept as its backup \
                     (overwriteMode 5); nothing was published"
                )))
            }
            Err(e) => return Err(os_error(e, &self.path)),
        }
        // SAFETY: both names are NUL-terminated; flags 0: a symbolic link is linked itself.
        let linked = check(unsafe { libc::linkat(dir, self.name.as_ptr(), dir, bak.as_ptr(), 0) });
        if linked.is_err() {
            renameat(dir, &self.name, &bak).map_err(|e| os_error(e, &self.path))?;
        }
        Ok(())
    }
}

/// Mode 3 at commit: rename unless the target appeared meanwhile.
fn rename_no_replace(dir: RawFd, from: &CStr, to: &CStr, path: &RelPath) -> StorageResult<()> {
    let appeared = || {
        StorageError::Conflict(format!(
            "'{path}' appeared while it was being received and overwriteMode 3 never replaces \
             it; nothing was published"
        ))
    };
    // SAFETY: both names are NUL-terminated; `dir` is an open folder handle.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir,
            from.as_ptr(),
            dir,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Err(appeared()),
        // No RENAME_NOREPLACE here (old kernel or file system): check, then rename.
        Some(libc::ENOSYS | libc::EINVAL) => {
            if target_stat(dir, to, path)?.is_some() {
                return Err(appeared());
            }
            renameat(dir, from, to).map_err(|e| os_error(e, path))
        }
        _ => Err(os_error(e, path)),
    }
}

#[async_trait]
impl FileSink for FileDataSink {
    fn resumed(&self) -> Vec<Range<u64>> {
        self.resumed.clone()
    }

    fn reopenable(&self) -> bool {
        true
    }

    fn window(&self) -> u64 {
        u64::MAX
    }

    async fn write_at(&mut self, offset: u64, data: Bytes) -> StorageResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let fits = offset
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= self.size);
        if !fits {
            return Err(StorageError::Backend(format!(
                "'{}': a write of {} bytes at offset {offset} goes past the end of the file \
                 ({} bytes)",
                self.path,
                data.len(),
                self.size
            )));
        }
        self.pending_bytes += data.len();
        self.pending.push((offset, data));
        if self.pending_bytes >= FLUSH_BYTES || self.pending.len() >= FLUSH_COUNT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn checkpoint(&mut self) -> StorageResult<SinkCheckpoint> {
        self.flush().await?;
        self.collect_finished_chunk_hashes().await;
        let file = self.file.clone();
        let dir = self.dir.clone();
        let sync_folder = !self.dir_synced;
        tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            // A new file's name must survive a crash too.
            if sync_folder {
                sync_dir(dir.as_raw_fd())?;
            }
            Ok::<(), io::Error>(())
        })
        .await
        .map_err(join_error)?
        .map_err(|e| os_error(e, &self.path))?;
        self.dir_synced = true;
        self.keep_on_drop = true;
        Ok(SinkCheckpoint {
            state: self.state()?,
            durable: self.written.ranges().to_vec(),
        })
    }

    async fn commit(mut self: Box<Self>, expected: FileDigest) -> StorageResult<()> {
        self.collect_chunk_hashes().await;
        tokio::task::spawn_blocking(move || {
            let result = self.commit_blocking(expected);
            if result.is_err() {
                if let Err(e) = self.discard() {
                    tracing::warn!(path = %self.path, "cannot remove '{}': {e}", self.work_text);
                }
            }
            self.done = true;
            result
        })
        .await
        .map_err(join_error)?
    }

    async fn abort(mut self: Box<Self>) -> StorageResult<()> {
        tokio::task::spawn_blocking(move || {
            self.done = true;
            let path = self.path.clone();
            self.discard().map_err(|e| os_error(e, &path))
        })
        .await
        .map_err(join_error)?
    }
}

impl Drop for FileDataSink {
    fn drop(&mut self) {
        if self.done || self.keep_on_drop {
            return;
        }
        if let Err(e) = self.discard() {
            tracing::warn!(path = %self.path, "cannot remove '{}': {e}", self.work_text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::data::chunk_hash;
    use crate::file::FileBackend;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::{Path, PathBuf};

    const MODES: [OverwriteMode; 6] = [
        OverwriteMode::InPlaceNever,
        OverwriteMode::InPlaceAlways,
        OverwriteMode::InPlaceSameSize,
        OverwriteMode::Never,
        OverwriteMode::Always,
        OverwriteMode::Backup,
    ];

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    /// Deterministic pseudo-random bytes.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A deterministic shuffle.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut x = seed | 1;
        for i in (1..items.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            items.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }

    fn digest(data: &[u8]) -> FileDigest {
        let mut builder = DigestBuilder::new(data.len() as u64);
        builder.update(data);
        builder.finish().unwrap()
    }

    fn options(size: usize, mode: OverwriteMode) -> SinkOptions {
        SinkOptions {
            size: size as u64,
            overwrite: mode,
            executable: false,
            modification_time: None,
            reception_id: "t1-0".into(),
            resume: None,
            resume_only: false,
        }
    }

    /// The partfiles in `dir`.
    fn partfiles(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| is_partfile_name(n))
            .collect()
    }

    /// A sandbox folder `root` next to a folder `outside` holding `secret`.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        backend: FileBackend,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let backend = FileBackend::new(root.clone());
        Fixture {
            _dir: dir,
            root,
            outside,
            backend,
        }
    }

    /// Writes `data` in pieces of `piece` bytes, in a shuffled order.
    async fn write_shuffled(sink: &mut Box<dyn FileSink>, data: &[u8], piece: usize, seed: u64) {
        let mut offsets: Vec<usize> = (0..data.len()).step_by(piece).collect();
        shuffle(&mut offsets, seed);
        for offset in offsets {
            let end = (offset + piece).min(data.len());
            sink.write_at(offset as u64, Bytes::copy_from_slice(&data[offset..end]))
                .await
                .unwrap();
        }
    }

    async fn receive(
        b: &FileBackend,
        path: &str,
        data: &[u8],
        options: SinkOptions,
    ) -> StorageResult<()> {
        let mut sink = b.create_sink(&p(path), options).await?;
        assert_eq!(sink.window(), u64::MAX);
        assert!(sink.resumed().is_empty());
        write_shuffled(&mut sink, data, 64 << 10, 7).await;
        sink.commit(digest(data)).await
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Target {
        Absent,
        DifferentSize,
        SameSize,
        Empty,
    }

    #[tokio::test]
    async fn every_mode_against_every_target() {
        let new = pattern(300_000, 1);
        for mode in MODES {
            for target in [
                Target::Absent,
                Target::DifferentSize,
                Target::SameSize,
                Target::Empty,
            ] {
                let f = fixture();
                let what = format!("mode {mode:?}, target {target:?}");
                let old = match target {
                    Target::Absent => None,
                    Target::DifferentSize => Some(pattern(5_000, 2)),
                    Target::SameSize => Some(pattern(new.len(), 3)),
                    Target::Empty => Some(Vec::new()),
                };
                std::fs::create_dir(f.root.join("d")).unwrap();
                let file = f.root.join("d/x");
                let bak = f.root.join("d/x.bak");
                if let Some(old) = &old {
                    std::fs::write(&file, old).unwrap();
                }
                std::fs::write(&bak, b"older backup").unwrap();

                let conflict = match (mode, target) {
                    (_, Target::Absent) => false,
                    (OverwriteMode::InPlaceNever | OverwriteMode::Never, _) => true,
                    (OverwriteMode::InPlaceSameSize, Target::DifferentSize) => true,
                    _ => false,
                };
                let result = receive(&f.backend, "d/x", &new, options(new.len(), mode)).await;
                if conflict {
                    let Err(StorageError::Conflict(message)) = result else {
                        panic!("{what}: {result:?}");
                    };
                    assert!(message.contains("'/d/x'"), "{what}: {message}");
                    let n = u8::from(mode);
                    assert!(message.contains(&format!("overwriteMode {n}")), "{message}");
                    if n != 2 {
                        assert!(message.contains("never replaces it"), "{message}");
                    } else {
                        assert!(message.contains("5000 bytes"), "{message}");
                    }
                    assert_eq!(std::fs::read(&file).ok(), old, "{what}: target changed");
                } else {
                    result.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(std::fs::read(&file).unwrap() == new, "{what}: content");
                }
                let expected_bak: Vec<u8> = match (&old, mode, conflict) {
                    (Some(old), OverwriteMode::Backup, false) => old.clone(),
                    _ => b"older backup".to_vec(),
                };
                assert_eq!(std::fs::read(&bak).unwrap(), expected_bak, "{what}: .bak");
                assert!(
                    partfiles(&f.root.join("d")).is_empty(),
                    "{what}: partfile left"
                );
            }
        }
    }

    #[tokio::test]
    async fn partfile_modes_leave_the_target_alone_until_commit() {
        let f = fixture();
        let new = pattern(100_000, 4);
        for mode in [OverwriteMode::Always, OverwriteMode::Backup] {
            std::fs::write(f.root.join("x"), b"old").unwrap();
            let mut sink = f
                .backend
                .create_sink(&p("x"), options(new.len(), mode))
                .await
                .unwrap();
            write_shuffled(&mut sink, &new, 10_000, 1).await;
            sink.checkpoint().await.unwrap();
            assert_eq!(std::fs::read(f.root.join("x")).unwrap(), b"old");
            let parts = partfiles(&f.root);
            assert_eq!(parts, [".x.t1-0.slipstream-part"]);
            // Listings show partfiles (they are ordinary hidden files).
            let listed = f.backend.list(&RelPath::root(), 100, None).await.unwrap();
            assert!(listed.entries.iter().any(|e| e.name == parts[0]));
            sink.commit(digest(&new)).await.unwrap();
            assert_eq!(std::fs::read(f.root.join("x")).unwrap(), new);
            assert!(partfiles(&f.root).is_empty());
        }
        assert_eq!(std::fs::read(f.root.join("x.bak")).unwrap(), b"old");
    }

    #[tokio::test]
    async fn mode_never_fails_at_commit_when_the_target_appeared() {
        let f = fixture();
        let new = pattern(70_000, 5);
        let mut sink = f
            .backend
            .create_sink(&p("x"), options(new.len(), OverwriteMode::Never))
            .await
            .unwrap();
        write_shuffled(&mut sink, &new, 4096, 2).await;
        std::fs::write(f.root.join("x"), b"someone else's").unwrap();
        let err = sink.commit(digest(&new)).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Conflict(m) if m.contains("appeared")),
            "{err:?}"
        );
        assert_eq!(std::fs::read(f.root.join("x")).unwrap(), b"someone else's");
        assert!(partfiles(&f.root).is_empty());
    }

    #[tokio::test]
    async fn mode_never_resume_checks_the_target_again() {
        let f = fixture();
        let mut opts = options(10, OverwriteMode::Never);
        let mut sink = f.backend.create_sink(&p("x"), opts.clone()).await.unwrap();
        sink.write_at(0, Bytes::from_static(b"01234"))
            .await
            .unwrap();
        let checkpoint = sink.checkpoint().await.unwrap();
        drop(sink);
        assert_eq!(partfiles(&f.root).len(), 1);
        std::fs::write(f.root.join("x"), b"theirs").unwrap();
        opts.resume = Some(checkpoint.state);
        let made = f.backend.create_sink(&p("x"), opts).await;
        assert!(
            matches!(made, Err(StorageError::Conflict(_))),
            "{:?}",
            made.err()
        );
        assert_eq!(std::fs::read(f.root.join("x")).unwrap(), b"theirs");
        assert!(partfiles(&f.root).is_empty());

        // A partfile that cannot be resumed is removed by a conflict too.
        std::fs::remove_file(f.root.join("x")).unwrap();
        let mut opts = options(10, OverwriteMode::Never);
        let mut sink = f.backend.create_sink(&p("x"), opts.clone()).await.unwrap();
        let mut state = sink.checkpoint().await.unwrap().state;
        drop(sink);
        assert_eq!(partfiles(&f.root).len(), 1);
        state["ino"] = json!(0);
        std::fs::write(f.root.join("x"), b"theirs").unwrap();
        opts.resume = Some(state);
        let made = f.backend.create_sink(&p("x"), opts).await;
        assert!(
            matches!(made, Err(StorageError::Conflict(_))),
            "{:?}",
            made.err()
        );
        assert!(partfiles(&f.root).is_empty());
    }

    #[tokio::test]
    async fn out_of_order_pieces_give_identical_bytes() {
        let f = fixture();
        let data = pattern(5 * MIB as usize + 12_345, 6);
        for (i, mode) in [OverwriteMode::InPlaceAlways, OverwriteMode::Always]
            .into_iter()
            .enumerate()
        {
            let name = format!("big{i}");
            receive(&f.backend, &name, &data, options(data.len(), mode))
                .await
                .unwrap();
            assert!(std::fs::read(f.root.join(&name)).unwrap() == data);
        }
        assert!(partfiles(&f.root).is_empty());
        // Tiny writes are gathered and still land in the right place.
        let small = pattern(50_000, 8);
        let mut sink = f
            .backend
            .create_sink(&p("small"), options(small.len(), OverwriteMode::Always))
            .await
            .unwrap();
        write_shuffled(&mut sink, &small, 100, 3).await;
        let durable = sink.checkpoint().await.unwrap().durable;
        assert_eq!(durable, vec![0..small.len() as u64]);
        sink.commit(digest(&small)).await.unwrap();
        assert!(std::fs::read(f.root.join("small")).unwrap() == small);
        // The empty file.
        receive(&f.backend, "empty", &[], options(0, OverwriteMode::Backup))
            .await
            .unwrap();
        assert_eq!(std::fs::read(f.root.join("empty")).unwrap(), b"");
    }

    #[tokio::test]
    async fn wrong_digest_publishes_nothing() {
        let data = pattern(200_000, 9);
        let wrong = digest(&pattern(200_000, 10));
        for mode in MODES {
            let f = fixture();
            let mut sink = f
                .backend
                .create_sink(&p("x"), options(data.len(), mode))
                .await
                .unwrap();
            write_shuffled(&mut sink, &data, 64 << 10, 4).await;
            let err = sink.commit(wrong).await.unwrap_err();
            assert_eq!(
                err,
                StorageError::Backend(
                    "integrity check failed for '/x': the received data does not match the \
                     sender's digest; nothing was published"
                        .into()
                ),
                "{mode:?}"
            );
            assert!(!f.root.join("x").exists(), "{mode:?}");
            assert!(partfiles(&f.root).is_empty(), "{mode:?}");

            // With an existing target, partfile modes leave it as it was.
            if mode.uses_partfile() && mode != OverwriteMode::Never {
                std::fs::write(f.root.join("x"), b"old").unwrap();
                let mut sink = f
                    .backend
                    .create_sink(&p("x"), options(data.len(), mode))
                    .await
                    .unwrap();
                write_shuffled(&mut sink, &data, 64 << 10, 4).await;
                assert!(sink.commit(wrong).await.is_err());
                assert_eq!(std::fs::read(f.root.join("x")).unwrap(), b"old");
                assert!(!f.root.join("x.bak").exists());
                assert!(partfiles(&f.root).is_empty(), "{mode:?}");
            }
        }
        // A file with a gap (never fully written) fails the same way.
        let f = fixture();
        let mut sink = f
            .backend
            .create_sink(&p("x"), options(data.len(), OverwriteMode::Always))
            .await
            .unwrap();
        sink.write_at(0, Bytes::copy_from_slice(&data[..1000]))
            .await
            .unwrap();
        assert!(sink.commit(digest(&data)).await.is_err());
        assert!(!f.root.join("x").exists());
        assert!(partfiles(&f.root).is_empty());
    }

    /// Pseudo-random bytes (xorshift), so every chunk differs.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn the_digest_from_known_chunks_is_the_digest_of_the_file() {
        // Three 8 MiB verification chunks and a short fourth.
        let data = noise(3 * 8 * MIB as usize + 12_345, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let size = data.len() as u64;
        let whole = file_digest(&file, size, &BTreeMap::new()).unwrap();
        assert_eq!(whole, digest(&data));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let empty = File::open(&empty).unwrap();
        assert_eq!(
            file_digest(&empty, 0, &BTreeMap::new()).unwrap(),
            digest(b"")
        );
        let chunk = verification_chunk_size(size) as usize;
        let mut known = BTreeMap::new();
        known.insert(1, chunk_hash(&data[chunk..2 * chunk]));
        known.insert(3, chunk_hash(&data[3 * chunk..]));
        assert_eq!(file_digest(&file, size, &known).unwrap(), whole);
        // The known hashes are used as they are, not read again.
        known.insert(0, [7; 32]);
        assert_ne!(file_digest(&file, size, &known).unwrap(), whole);
    }

    #[tokio::test]
    async fn chunks_are_hashed_while_the_file_arrives_and_a_mismatch_still_fails() {
        let f = fixture();
        let data = noise(2 * 8 * MIB as usize + 777, 5);
        for mode in [OverwriteMode::Never, OverwriteMode::InPlaceAlways] {
            let name = format!("big{}", u8::from(mode));
            receive(&f.backend, &name, &data, options(data.len(), mode))
                .await
                .unwrap();
            assert_eq!(std::fs::read(f.root.join(&name)).unwrap(), data);
            // The same bytes against another digest: refused, nothing published.
            let other = format!("other{}", u8::from(mode));
            let mut sink = f
                .backend
                .create_sink(&p(&other), options(data.len(), mode))
                .await
                .unwrap();
            write_shuffled(&mut sink, &data, 64 << 10, 9).await;
            let mut wrong = data.clone();
            wrong[5] ^= 1;
            let error = sink.commit(digest(&wrong)).await.unwrap_err();
            assert!(
                error.to_string().contains("integrity check failed"),
                "{error}"
            );
            assert!(!f.root.join(&other).exists());
            assert!(partfiles(&f.root).is_empty());
        }
    }

    #[tokio::test]
    async fn chunk_hashes_survive_a_close_and_reopen_through_the_checkpoint() {
        let f = fixture();
        let data = noise(2 * 8 * MIB as usize + 99, 21);
        let mut opts = options(data.len(), OverwriteMode::Never);
        let mut sink = f.backend.create_sink(&p("c"), opts.clone()).await.unwrap();
        write_shuffled(&mut sink, &data, 256 << 10, 4).await;
        // The engine checkpoints and closes a complete file; the background hashes finish
        // meanwhile (a checkpoint only takes those that are done).
        let mut state = serde_json::Value::Null;
        for _ in 0..100 {
            state = sink.checkpoint().await.unwrap().state;
            if state["chunks"].as_array().is_some_and(|c| c.len() == 3) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let chunks = state["chunks"].as_array().unwrap().clone();
        assert_eq!(chunks.len(), 3, "{chunks:?}");
        assert_eq!(chunks[1][1], to_hex(&chunk_hash(&data[8 << 20..16 << 20])));
        drop(sink);

        opts.resume = Some(state.clone());
        let sink = f.backend.create_sink(&p("c"), opts.clone()).await.unwrap();
        sink.commit(digest(&data)).await.unwrap();
        assert_eq!(std::fs::read(f.root.join("c")).unwrap(), data);

        // The recorded hashes are what commit checks: a wrong one fails the file (so a
        // checkpoint can never make bad data pass, only good data fail).
        let mut sink = f.backend.create_sink(&p("d"), opts.clone()).await.unwrap();
        write_shuffled(&mut sink, &data, 256 << 10, 4).await;
        let mut state = sink.checkpoint().await.unwrap().state;
        state["chunks"] = json!([[0, to_hex(&[9; 32])]]);
        drop(sink);
        opts.resume = Some(state);
        let sink = f.backend.create_sink(&p("d"), opts).await.unwrap();
        let error = sink.commit(digest(&data)).await.unwrap_err();
        assert!(
            error.to_string().contains("integrity check failed"),
            "{error}"
        );
        assert!(!f.root.join("d").exists());
    }

    #[tokio::test]
    async fn checkpoint_drop_and_resume() {
        let data = pattern(3 * MIB as usize + 777, 11);
        let piece = 64 << 10;
        for mode in MODES {
            let f = fixture();
            let mut offsets: Vec<usize> = (0..data.len()).step_by(piece).collect();
            shuffle(&mut offsets, 5);
            let (first, rest) = offsets.split_at(offsets.len() / 2);
            let mut opts = options(data.len(), mode);
            let mut sink = f.backend.create_sink(&p("x"), opts.clone()).await.unwrap();
            for &offset in first {
                let end = (offset + piece).min(data.len());
                sink.write_at(offset as u64, Bytes::copy_from_slice(&data[offset..end]))
                    .await
                    .unwrap();
            }
            let checkpoint = sink.checkpoint().await.unwrap();
            let expected_durable = {
                let mut set = RangeSet::default();
                for &offset in first {
                    set.insert(offset as u64..((offset + piece).min(data.len())) as u64);
                }
                set.ranges().to_vec()
            };
            assert_eq!(checkpoint.durable, expected_durable, "{mode:?}");
            let work = checkpoint.state["file"].as_str().unwrap().to_string();
            if mode.uses_partfile() {
                assert_eq!(work, ".x.t1-0.slipstream-part");
            } else {
                assert_eq!(work, "x");
            }
            assert_eq!(checkpoint.state["mode"], u8::from(mode));
            assert_eq!(checkpoint.state["size"], data.len() as u64);
            // A write after the checkpoint, then the process "stops".
            sink.write_at(0, Bytes::from_static(b"x")).await.unwrap();
            drop(sink);
            assert!(f.root.join(&work).exists(), "{mode:?}: kept for resume");

            opts.resume = Some(checkpoint.state.clone());
            let mut sink = f
                .backend
                .create_sink(&p("x"), opts.clone())
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(sink.resumed(), checkpoint.durable, "{mode:?}");
            for &offset in rest {
                let end = (offset + piece).min(data.len());
                sink.write_at(offset as u64, Bytes::copy_from_slice(&data[offset..end]))
                    .await
                    .unwrap();
            }
            let again = sink.checkpoint().await.unwrap();
            assert_eq!(again.durable, vec![0..data.len() as u64]);
            sink.commit(digest(&data)).await.unwrap();
            assert!(std::fs::read(f.root.join("x")).unwrap() == data, "{mode:?}");
            assert!(partfiles(&f.root).is_empty());

            // With resume_only, a state that cannot be resumed is NotFound and creates nothing
            // (here: the partfile is gone; the published file stays untouched).
            if mode.uses_partfile() {
                let mut only = opts.clone();
                only.resume_only = true;
                let refused = f.backend.create_sink(&p("x"), only).await.err();
                assert!(
                    matches!(refused, Some(StorageError::NotFound(_))),
                    "{mode:?}: {refused:?}"
                );
                assert!(std::fs::read(f.root.join("x")).unwrap() == data, "{mode:?}");
                assert!(partfiles(&f.root).is_empty());
            }

            // A state whose file is gone (or another size) starts afresh.
            if mode.uses_partfile() {
                let mut stale = opts.clone();
                stale.overwrite = OverwriteMode::Always;
                stale.resume = Some(checkpoint.state.clone());
                let sink = f.backend.create_sink(&p("x"), stale).await.unwrap();
                assert!(sink.resumed().is_empty());
                sink.abort().await.unwrap();
                assert!(partfiles(&f.root).is_empty());
            }
        }
        // Wrong size: fresh start, the file is received whole.
        let f = fixture();
        let mut opts = options(data.len(), OverwriteMode::Always);
        let mut sink = f.backend.create_sink(&p("x"), opts.clone()).await.unwrap();
        sink.write_at(0, Bytes::copy_from_slice(&data[..1000]))
            .await
            .unwrap();
        let checkpoint = sink.checkpoint().await.unwrap();
        drop(sink);
        let part = f.root.join(".x.t1-0.slipstream-part");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .unwrap()
            .set_len(10)
            .unwrap();
        opts.resume = Some(checkpoint.state);
        let mut sink = f.backend.create_sink(&p("x"), opts).await.unwrap();
        assert!(sink.resumed().is_empty());
        write_shuffled(&mut sink, &data, piece, 9).await;
        sink.commit(digest(&data)).await.unwrap();
        assert!(std::fs::read(f.root.join("x")).unwrap() == data);
    }

    #[tokio::test]
    async fn abort_and_drop_clean_up() {
        let data = pattern(100_000, 12);
        for mode in MODES {
            let f = fixture();
            let mut sink = f
                .backend
                .create_sink(&p("x"), options(data.len(), mode))
                .await
                .unwrap();
            write_shuffled(&mut sink, &data[..], 10_000, 1).await;
            sink.abort().await.unwrap();
            assert!(!f.root.join("x").exists(), "{mode:?}");
            assert!(partfiles(&f.root).is_empty(), "{mode:?}");

            // Dropped without a checkpoint: removed as well.
            let mut sink = f
                .backend
                .create_sink(&p("x"), options(data.len(), mode))
                .await
                .unwrap();
            sink.write_at(0, Bytes::from_static(b"abc")).await.unwrap();
            drop(sink);
            assert!(!f.root.join("x").exists(), "{mode:?}");
            assert!(partfiles(&f.root).is_empty(), "{mode:?}");
        }
        // Abort of a partfile mode keeps the existing target; of mode 1, removes the replaced
        // (now partial) file.
        let f = fixture();
        std::fs::write(f.root.join("x"), b"old").unwrap();
        let sink = f
            .backend
            .create_sink(&p("x"), options(10, OverwriteMode::Backup))
            .await
            .unwrap();
        sink.abort().await.unwrap();
        assert_eq!(std::fs::read(f.root.join("x")).unwrap(), b"old");
        let sink = f
            .backend
            .create_sink(&p("x"), options(10, OverwriteMode::InPlaceAlways))
            .await
            .unwrap();
        sink.abort().await.unwrap();
        assert!(!f.root.join("x").exists());
        // Mode 2 into a same-size file that was never written to: left as it was.
        std::fs::write(f.root.join("y"), b"0123456789").unwrap();
        let sink = f
            .backend
            .create_sink(&p("y"), options(10, OverwriteMode::InPlaceSameSize))
            .await
            .unwrap();
        sink.abort().await.unwrap();
        assert_eq!(std::fs::read(f.root.join("y")).unwrap(), b"0123456789");
    }

    #[tokio::test]
    async fn executable_bit_and_modification_time() {
        let f = fixture();
        let data = pattern(5000, 13);
        let mtime = 1_600_000_000_123_456i64;
        for (i, mode) in MODES.into_iter().enumerate() {
            let name = format!("f{i}");
            let mut opts = options(data.len(), mode);
            opts.executable = true;
            opts.modification_time = Some(mtime);
            receive(&f.backend, &name, &data, opts).await.unwrap();
            let meta = std::fs::metadata(f.root.join(&name)).unwrap();
            assert_eq!(meta.mode() & 0o111, 0o111 & (meta.mode() >> 2), "{mode:?}");
            assert_ne!(meta.mode() & 0o100, 0, "{mode:?}");
            let entry = f.backend.stat(&p(&name)).await.unwrap().unwrap();
            assert_eq!(entry.modification_time, Some(mtime), "{mode:?}");
            assert!(entry.executable);

            // Received again, not executable: the bit goes.
            let mut opts = options(data.len(), mode);
            opts.reception_id = "t2-0".into();
            if matches!(mode, OverwriteMode::InPlaceNever | OverwriteMode::Never) {
                std::fs::remove_file(f.root.join(&name)).unwrap();
            }
            receive(&f.backend, &name, &data, opts).await.unwrap();
            let meta = std::fs::metadata(f.root.join(&name)).unwrap();
            assert_eq!(meta.mode() & 0o111, 0, "{mode:?}");
        }
        // Before 1970.
        let mut opts = options(3, OverwriteMode::Always);
        opts.modification_time = Some(-1_000_000);
        receive(&f.backend, "old", b"abc", opts).await.unwrap();
        let entry = f.backend.stat(&p("old")).await.unwrap().unwrap();
        assert_eq!(entry.modification_time, Some(-1_000_000));
    }

    #[tokio::test]
    async fn symlinks_out_of_the_sandbox_are_refused() {
        let f = fixture();
        symlink("../outside", f.root.join("out")).unwrap();
        symlink("/", f.root.join("slash")).unwrap();
        symlink("../outside/secret", f.root.join("secret_link")).unwrap();
        for b in [
            FileBackend::new(f.root.clone()),
            FileBackend::new_walk_only(f.root.clone()),
        ] {
            for mode in MODES {
                for path in ["out/x", "out/secret", "slash/tmp/x"] {
                    let made = b.create_sink(&p(path), options(3, mode)).await;
                    assert!(
                        matches!(made, Err(StorageError::PermissionDenied(_))),
                        "{path} {mode:?}: {:?}",
                        made.err()
                    );
                }
            }
            for path in ["out/secret", "secret_link", "slash/etc/passwd"] {
                let read = b.open_reader(&p(path)).await;
                assert!(
                    matches!(read, Err(StorageError::PermissionDenied(_))),
                    "{path}: {:?}",
                    read.err()
                );
            }
        }
        assert_eq!(
            std::fs::read_dir(&f.outside).unwrap().count(),
            1,
            "nothing was created outside"
        );
        // A link under the final name is an entry of its own: replaced (modes 1, 4, 5) or
        // refused (0, 2, 3), never written through.
        let b = &f.backend;
        for mode in MODES {
            let made = receive(b, "secret_link", b"new", options(3, mode)).await;
            match mode {
                OverwriteMode::InPlaceNever
                | OverwriteMode::InPlaceSameSize
                | OverwriteMode::Never => {
                    assert!(matches!(made, Err(StorageError::Conflict(_))), "{mode:?}");
                }
                _ => {
                    made.unwrap();
                    let st = std::fs::symlink_metadata(f.root.join("secret_link")).unwrap();
                    assert!(st.is_file(), "{mode:?}");
                    std::fs::remove_file(f.root.join("secret_link")).unwrap();
                    if mode == OverwriteMode::Backup {
                        let bak = std::fs::symlink_metadata(f.root.join("secret_link.bak"));
                        assert!(bak.unwrap().file_type().is_symlink());
                        std::fs::remove_file(f.root.join("secret_link.bak")).unwrap();
                    }
                    symlink("../outside/secret", f.root.join("secret_link")).unwrap();
                }
            }
            assert_eq!(std::fs::read(f.outside.join("secret")).unwrap(), b"secret");
        }
        assert!(partfiles(&f.root).is_empty());
    }

    #[tokio::test]
    async fn missing_parent_folder_and_folder_targets() {
        let f = fixture();
        let made = f
            .backend
            .create_sink(&p("nope/x"), options(3, OverwriteMode::Always))
            .await;
        assert!(
            matches!(&made, Err(StorageError::NotFound(m)) if m.contains("'/nope'")),
            "{:?}",
            made.err()
        );
        std::fs::create_dir(f.root.join("dir")).unwrap();
        for mode in MODES {
            let made = f.backend.create_sink(&p("dir"), options(3, mode)).await;
            assert!(matches!(made, Err(StorageError::Conflict(_))), "{mode:?}");
        }
        let made = f
            .backend
            .create_sink(&RelPath::root(), options(3, OverwriteMode::Always))
            .await;
        assert!(matches!(made, Err(StorageError::Conflict(_))));
        // Writing past the end is an error.
        let mut sink = f
            .backend
            .create_sink(&p("x"), options(3, OverwriteMode::Always))
            .await
            .unwrap();
        assert!(sink.write_at(2, Bytes::from_static(b"ab")).await.is_err());
        assert!(sink
            .write_at(u64::MAX, Bytes::from_static(b"ab"))
            .await
            .is_err());
        sink.abort().await.unwrap();
    }

    #[tokio::test]
    async fn reader_reads_exact_bytes() {
        let f = fixture();
        let data = pattern(1_000_003, 14);
        std::fs::write(f.root.join("r"), &data).unwrap();
        for b in [
            FileBackend::new(f.root.clone()),
            FileBackend::new_walk_only(f.root.clone()),
        ] {
            let reader = b.open_reader(&p("r")).await.unwrap();
            assert_eq!(reader.size(), data.len() as u64);
            for (offset, len) in [(0, 10), (12_345, 65_536), (999_999, 4), (0, data.len())] {
                let got = reader.read_at(offset as u64, len).await.unwrap();
                assert_eq!(&got[..], &data[offset..offset + len]);
            }
            // Short only at the end; nothing at or past it.
            let tail = reader.read_at(1_000_000, 100).await.unwrap();
            assert_eq!(&tail[..], &data[1_000_000..]);
            assert!(reader.read_at(1_000_003, 10).await.unwrap().is_empty());
            assert!(reader.read_at(u64::MAX, 10).await.unwrap().is_empty());
        }
        let b = &f.backend;
        assert!(matches!(
            b.open_reader(&p("missing")).await.err(),
            Some(StorageError::NotFound(_))
        ));
        std::fs::create_dir(f.root.join("folder")).unwrap();
        let err = b.open_reader(&p("folder")).await.err();
        assert!(
            matches!(&err, Some(StorageError::NotFound(m)) if m.contains("is a folder")),
            "{err:?}"
        );
        assert!(b.open_reader(&RelPath::root()).await.is_err());
        // A FIFO is refused, without waiting for a writer.
        let fifo = CString::new(f.root.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = b.open_reader(&p("fifo")).await.err();
        assert!(matches!(err, Some(StorageError::NotFound(_))), "{err:?}");
    }

    /// Throughput of small in-order writes, commit included (run with `--release --ignored
    /// --nocapture`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn throughput_of_small_writes() {
        let f = fixture();
        let size = 256 * MIB as usize;
        let block = 1200;
        let data = Bytes::from(pattern(size, 15));
        let expected = digest(&data);
        let start = std::time::Instant::now();
        let mut sink = f
            .backend
            .create_sink(&p("t"), options(size, OverwriteMode::Always))
            .await
            .unwrap();
        for offset in (0..size).step_by(block) {
            let end = (offset + block).min(size);
            sink.write_at(offset as u64, data.slice(offset..end))
                .await
                .unwrap();
        }
        let written = start.elapsed();
        sink.commit(expected).await.unwrap();
        let total = start.elapsed();
        let mbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{} writes of {block} B: written at {:.0} MB/s, with verified commit {:.0} MB/s",
            size / block,
            mbps(written),
            mbps(total)
        );
    }

    #[test]
    fn partfile_names() {
        assert_eq!(
            partfile_name("a.txt", "t7-3"),
            ".a.txt.t7-3.slipstream-part"
        );
        let odd = partfile_name("a", "x/y");
        assert!(!odd.contains('/') && is_partfile_name(&odd), "{odd}");
        assert_ne!(odd, partfile_name("a", "x_y"));
        let long = "é".repeat(127);
        let part = partfile_name(&long, "t1");
        assert!(part.len() <= NAME_MAX, "{}", part.len());
        assert!(part.ends_with(".t1.slipstream-part"));
        assert_ne!(part, partfile_name(&format!("{long}x"), "t1"));
    }

    #[test]
    fn range_set_merges() {
        let mut set = RangeSet::default();
        for i in 0..1_000_000u64 {
            set.insert(i * 10..i * 10 + 10);
        }
        assert_eq!(set.ranges(), vec![0..10_000_000]);
        let mut set = RangeSet::default();
        set.insert(50..60);
        set.insert(10..20);
        set.insert(30..40);
        set.insert(20..25);
        assert_eq!(set.ranges(), [10..25, 30..40, 50..60]);
        set.insert(5..55);
        assert_eq!(set.ranges(), vec![5..60]);
        set.insert(70..70);
        set.insert(0..1);
        set.insert(60..61);
        assert_eq!(set.ranges(), [0..1, 5..61]);
        assert_eq!(set.covered(), 57);
    }
}
