//! The File sandbox type: a folder on local disk, with every path resolved so that nothing,
//! symbolic links included, can lead outside it.
//!
//! # How confinement works
//!
//! Every operation opens the sandbox root as a directory handle and resolves paths below it
//! with Linux `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses any
//! resolution that would leave the root (`..`, absolute symbolic links, symbolic links whose
//! target lies outside, `/proc` magic links). The last segment of a path is then acted on
//! relative to its parent's handle with the `*at` calls, which never follow a final symbolic
//! link (`mkdirat`, `unlinkat`, `renameat2`, `openat` with `O_CREAT | O_EXCL`). So:
//!
//! - a relative symbolic link whose target stays inside the sandbox is followed (listed,
//!   browsed, counted as its target); its [`Entry`] describes the target and has `symlink`
//!   set (the name itself is examined with `fstatat(AT_SYMLINK_NOFOLLOW)`), so that callers
//!   such as the manifest scan can leave links out;
//! - an absolute symbolic link, or one that leads outside (or dangles, or loops), cannot be
//!   browsed through: such paths give `PermissionDenied`, and such links are left out of
//!   listings. Removing or renaming the link itself is allowed: it touches the link, never its
//!   target;
//! - `usage` and recursive `remove` never follow symbolic links at all (like `du -P`, `rm -r`).
//!
//! When the sandbox root is `/` (no sandbox configured), `RESOLVE_IN_ROOT` is used instead, so
//! absolute links mean what they mean to the OS. On kernels without `openat2` (before 5.6, or
//! where seccomp blocks it) paths are walked one segment at a time with `O_NOFOLLOW`, which
//! refuses every symbolic link.
//!
//! Listings show folders and regular files; sockets, FIFOs and devices are left out, as are
//! names that are not UTF-8 or hold control characters (no user path could name them).
//! All blocking work runs in `tokio::task::spawn_blocking`.
//!
//! The data path of transfers (reader, sinks, partfiles) is in [`crate::file_data`]; it reuses
//! this module's resolution.

use crate::backend::{Backend, Entry, EntryKind, NodeId, Page, Usage};
use crate::data::{FileSink, ObjectReader, SinkOptions};
use crate::error::{StorageError, StorageResult};
use crate::file_data;
use crate::path::RelPath;
use async_trait::async_trait;
use std::collections::BinaryHeap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A File sandbox rooted at a local folder.
#[derive(Debug, Clone)]
pub struct FileBackend {
    root: PathBuf,
    /// Tests only: behave as on a kernel without `openat2`.
    walk_only: bool,
}

impl FileBackend {
    /// A backend confined to `root` (an absolute folder; it is opened on every operation, so it
    /// may be created after this call).
    pub fn new(root: PathBuf) -> Self {
        FileBackend {
            root,
            walk_only: false,
        }
    }

    /// A backend that resolves paths as on kernels without `openat2`, to test that fallback.
    #[cfg(test)]
    pub(crate) fn new_walk_only(root: PathBuf) -> Self {
        FileBackend {
            root,
            walk_only: true,
        }
    }

    /// The folder this backend is confined to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn run<T, F>(&self, op: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Fs) -> StorageResult<T> + Send + 'static,
    {
        let root = self.root.clone();
        let walk_only = self.walk_only;
        tokio::task::spawn_blocking(move || {
            let mut fs = Fs::open_root(&root)?;
            fs.use_openat2 &= !walk_only;
            op(&fs)
        })
        .await
        .map_err(|e| StorageError::Backend(format!("file operation failed: {e}")))?
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn type_name(&self) -> &'static str {
        "File"
    }

    async fn stat(&self, path: &RelPath) -> StorageResult<Option<Entry>> {
        let path = path.clone();
        self.run(move |fs| fs.stat(&path)).await
    }

    async fn list(&self, dir: &RelPath, limit: usize, cursor: Option<&str>) -> StorageResult<Page> {
        let dir = dir.clone();
        let cursor = cursor.map(str::to_string);
        self.run(move |fs| fs.list(&dir, limit.max(1), cursor))
            .await
    }

    async fn usage(&self, path: &RelPath) -> StorageResult<Usage> {
        let path = path.clone();
        self.run(move |fs| fs.usage(&path)).await
    }

    async fn mkdir(&self, path: &RelPath) -> StorageResult<()> {
        let path = path.clone();
        self.run(move |fs| fs.mkdir(&path)).await
    }

    async fn create_file(&self, path: &RelPath) -> StorageResult<()> {
        let path = path.clone();
        self.run(move |fs| fs.create_file(&path)).await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> StorageResult<()> {
        let (from, to) = (from.clone(), to.clone());
        self.run(move |fs| fs.rename(&from, &to)).await
    }

    async fn remove(&self, path: &RelPath, recursive: bool) -> StorageResult<()> {
        let path = path.clone();
        self.run(move |fs| fs.remove(&path, recursive)).await
    }

    async fn open_reader(&self, path: &RelPath) -> StorageResult<Box<dyn ObjectReader>> {
        let path = path.clone();
        let reader = self
            .run(move |fs| file_data::open_reader(fs, &path))
            .await?;
        Ok(Box::new(reader))
    }

    async fn create_sink(
        &self,
        path: &RelPath,
        options: SinkOptions,
    ) -> StorageResult<Box<dyn FileSink>> {
        let path = path.clone();
        let sink = self
            .run(move |fs| file_data::create_sink(fs, &path, options))
            .await?;
        Ok(Box::new(sink))
    }
}

// ---------------------------------------------------------------------------------------------
// System calls

/// `struct open_how` of `linux/openat2.h` (libc's is `non_exhaustive`, so it cannot be built).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Whether this kernel lets us call `openat2`; probed once.
fn openat2_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        match raw_openat2(libc::AT_FDCWD, c".", libc::O_PATH, RESOLVE_BENEATH) {
            Ok(_) => true,
            Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
        }
    })
}

fn raw_openat2(dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let how = OpenHow {
        // Flags are a bit set; widening the non-negative i32 keeps every bit.
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how of the
        // size passed; the kernel reads both and returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it. A
            // descriptor always fits an i32.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename made the kernel unsure; the documented answer is to retry.
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

pub(crate) fn raw_openat(
    dirfd: RawFd,
    name: &CStr,
    flags: i32,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; openat returns a new descriptor or -1.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the single name `name` in `dir` with `O_NOFOLLOW`; a symbolic link there is `ELOOP`
/// (the kernel may say `ENOTDIR` when `O_DIRECTORY` is given too).
fn open_no_follow(dir: RawFd, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    raw_openat(dir, name, flags | libc::O_NOFOLLOW, 0).map_err(|e| {
        match fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_symlink(&st) => io::Error::from_raw_os_error(libc::ELOOP),
            _ => e,
        }
    })
}

pub(crate) fn fstatat(dirfd: RawFd, name: &CStr, flags: i32) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of a `stat`; `name` is NUL-terminated.
    let rc = unsafe { libc::fstatat(dirfd, name.as_ptr(), st.as_mut_ptr(), flags) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    fstatat(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

pub(crate) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn cstring(text: &str) -> StorageResult<CString> {
    CString::new(text)
        .map_err(|_| StorageError::PermissionDenied("NUL is not allowed in names".into()))
}

/// The names in a folder (not `.` and `..`), as raw bytes, read as a stream.
struct DirNames {
    dir: *mut libc::DIR,
}

impl DirNames {
    /// Reads the folder open at `fd` (a descriptor opened with `O_RDONLY | O_DIRECTORY`).
    fn new(fd: &OwnedFd) -> io::Result<Self> {
        let copy = fd.try_clone()?;
        // SAFETY: fdopendir takes ownership of a valid descriptor on success.
        let dir = unsafe { libc::fdopendir(copy.as_raw_fd()) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        // The DIR stream owns the descriptor now; closedir closes it.
        std::mem::forget(copy);
        // SAFETY: `dir` is a valid stream; a duplicated descriptor shares its offset with the
        // original, so start from the beginning whatever happened to it before.
        unsafe { libc::rewinddir(dir) };
        Ok(DirNames { dir })
    }
}

impl Iterator for DirNames {
    type Item = io::Result<CString>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // SAFETY: errno is thread-local; clearing it tells end-of-stream from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `self.dir` is a valid open stream (closed only in Drop).
            let entry = unsafe { libc::readdir(self.dir) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => None,
                    Some(_) => Some(Err(err)),
                };
            }
            // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated; we copy
            // it before the next readdir call.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if name == c"." || name == c".." {
                continue;
            }
            return Some(Ok(name.to_owned()));
        }
    }
}

impl Drop for DirNames {
    fn drop(&mut self) {
        // SAFETY: the stream is valid and closed exactly once, here.
        unsafe { libc::closedir(self.dir) };
    }
}

// SAFETY: the DIR stream is only used through &mut self, by one thread at a time.
unsafe impl Send for DirNames {}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub(crate) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn entry_from_stat(name: &str, st: &libc::stat) -> Option<Entry> {
    let kind = if is_dir(st) {
        EntryKind::Directory
    } else if is_file(st) {
        EntryKind::File
    } else {
        return None;
    };
    let micros = st.st_mtime * 1_000_000 + st.st_mtime_nsec / 1_000;
    Some(Entry {
        name: name.to_string(),
        kind,
        size: if kind == EntryKind::File {
            u64::try_from(st.st_size).unwrap_or(0)
        } else {
            0
        },
        modification_time: Some(micros),
        executable: kind == EntryKind::File && st.st_mode & 0o111 != 0,
        symlink: false,
        node: Some(NodeId {
            device: st.st_dev,
            inode: st.st_ino,
        }),
    })
}

/// A user-facing name for a folder name read from disk, if it can be one.
fn listable_name(name: &CStr) -> Option<&str> {
    let name = name.to_str().ok()?;
    (!name.chars().any(char::is_control)).then_some(name)
}

/// Maps an OS error about `path` to the storage error users see.
pub(crate) fn os_error(err: io::Error, path: &RelPath) -> StorageError {
    match err.raw_os_error() {
        Some(libc::ENOENT) => StorageError::NotFound(format!("'{path}' does not exist")),
        Some(libc::ENOTDIR) => {
            StorageError::NotFound(format!("'{path}' does not exist (a part of it is a file)"))
        }
        Some(libc::EXDEV | libc::ELOOP) => StorageError::PermissionDenied(format!(
            "'{path}' goes through a symbolic link that leads outside the sandbox (or loops); \
             such links cannot be followed"
        )),
        Some(libc::EEXIST) => StorageError::Conflict(format!("'{path}' already exists")),
        Some(libc::ENOTEMPTY) => StorageError::Conflict(format!(
            "the folder '{path}' is not empty: remove it with recursive=true"
        )),
        Some(libc::EACCES | libc::EPERM) => {
            StorageError::PermissionDenied(format!("'{path}': {err}"))
        }
        _ => StorageError::Backend(format!("'{path}': {err}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The operations, on an open sandbox root

/// One operation's view of the sandbox: the root's descriptor and how to resolve below it.
pub(crate) struct Fs {
    root: OwnedFd,
    /// `RESOLVE_IN_ROOT` when the sandbox is `/`, else `RESOLVE_BENEATH`.
    confine: u64,
    use_openat2: bool,
}

impl Fs {
    fn open_root(root: &Path) -> StorageResult<Fs> {
        let c_root = CString::new(root.as_os_str().as_bytes()).map_err(|_| {
            StorageError::Backend("the sandbox folder's path holds a NUL byte".into())
        })?;
        let fd = raw_openat(libc::AT_FDCWD, &c_root, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(
            |e| {
                StorageError::Backend(format!(
                "the sandbox folder is not usable ({e}): ask the administrator to create it or \
                 fix the mapping"
            ))
            },
        )?;
        let confine = if root == Path::new("/") {
            RESOLVE_IN_ROOT
        } else {
            RESOLVE_BENEATH
        };
        Ok(Fs {
            root: fd,
            confine,
            use_openat2: openat2_available(),
        })
    }

    /// Opens `rel` (a path below `base`, `""` for `base` itself) confined to `base`.
    /// `no_symlinks` refuses every symbolic link on the way.
    fn open_below(
        &self,
        base: RawFd,
        rel: &str,
        flags: i32,
        no_symlinks: bool,
    ) -> io::Result<OwnedFd> {
        if self.use_openat2 {
            let path = CString::new(if rel.is_empty() { "." } else { rel })
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let mut resolve = self.confine | RESOLVE_NO_MAGICLINKS;
            if no_symlinks {
                resolve |= RESOLVE_NO_SYMLINKS;
            }
            return raw_openat2(base, &path, flags, resolve);
        }
        // Fallback: one segment at a time, never following a symbolic link.
        let segments: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let Some((last, parents)) = segments.split_last() else {
            return raw_openat(base, c".", flags, 0);
        };
        let mut current: Option<OwnedFd> = None;
        for segment in parents {
            let name =
                CString::new(*segment).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let dir = current.as_ref().map_or(base, AsRawFd::as_raw_fd);
            let next = open_no_follow(dir, &name, libc::O_PATH | libc::O_DIRECTORY)?;
            current = Some(next);
        }
        let name = CString::new(*last).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let dir = current.as_ref().map_or(base, AsRawFd::as_raw_fd);
        let fd = open_no_follow(dir, &name, flags)?;
        // O_PATH | O_NOFOLLOW opens a final symbolic link itself instead of failing: refuse it.
        if is_symlink(&fstat(&fd)?) {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        Ok(fd)
    }

    /// Opens `rel` below the sandbox root, following only links that stay inside.
    pub(crate) fn open(&self, rel: &RelPath, flags: i32) -> io::Result<OwnedFd> {
        self.open_below(self.root.as_raw_fd(), rel.as_str(), flags, false)
    }

    /// The folder holding `path` (`NotFound` when it is missing or not a folder) and the last
    /// segment of `path`.
    pub(crate) fn parent(&self, path: &RelPath) -> StorageResult<(OwnedFd, CString)> {
        let parent = path.parent();
        let fd = self
            .open(&parent, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => StorageError::NotFound(format!(
                    "the folder '{parent}' does not exist: create it first"
                )),
                _ => os_error(e, &parent),
            })?;
        Ok((fd, cstring(path.name())?))
    }

    /// The entry for `name` in the folder `dir_fd` (whose path is `dir`), following a symbolic
    /// link only when its target stays inside the sandbox (the entry then describes the target
    /// and has `symlink` set). `None` when there is nothing to show.
    fn entry_at(&self, dir_fd: &OwnedFd, dir: &RelPath, name: &str) -> io::Result<Option<Entry>> {
        let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let st = match fstatat(dir_fd.as_raw_fd(), &c_name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !is_symlink(&st) {
            return Ok(entry_from_stat(name, &st));
        }
        let Ok(full) = dir.join(name) else {
            return Ok(None);
        };
        // A link that leads outside, dangles or loops is simply not shown. One that stays
        // inside shows its target, flagged as a link.
        match self.open(&full, libc::O_PATH) {
            Ok(fd) => Ok(entry_from_stat(name, &fstat(&fd)?).map(|target| Entry {
                symlink: true,
                ..target
            })),
            Err(_) => Ok(None),
        }
    }

    fn stat(&self, path: &RelPath) -> StorageResult<Option<Entry>> {
        if path.is_root() {
            let st = fstat(&self.root).map_err(|e| os_error(e, path))?;
            return Ok(entry_from_stat("", &st));
        }
        let parent = path.parent();
        let dir_fd = match self.open(&parent, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(None)
            }
            Err(e) => return Err(os_error(e, &parent)),
        };
        self.entry_at(&dir_fd, &parent, path.name())
            .map_err(|e| os_error(e, path))
    }

    fn list(&self, dir: &RelPath, limit: usize, cursor: Option<String>) -> StorageResult<Page> {
        let dir_fd = self
            .open(dir, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR) => StorageError::NotFound(format!("'{dir}' is not a folder")),
                _ => os_error(e, dir),
            })?;
        let mut entries = Vec::new();
        let mut after = cursor;
        loop {
            let wanted = limit - entries.len();
            let names = smallest_names_after(&dir_fd, after.as_deref(), wanted.saturating_add(1))
                .map_err(|e| os_error(e, dir))?;
            let more = names.len() > wanted;
            for name in names.into_iter().take(wanted) {
                if let Some(entry) = self
                    .entry_at(&dir_fd, dir, &name)
                    .map_err(|e| os_error(e, dir))?
                {
                    entries.push(entry);
                }
                after = Some(name);
            }
            if !more {
                return Ok(Page {
                    entries,
                    next_cursor: None,
                });
            }
            if entries.len() == limit {
                return Ok(Page {
                    entries,
                    next_cursor: after,
                });
            }
            // Some names were not shown (links out of the sandbox): fill the page from further on.
        }
    }

    fn usage(&self, path: &RelPath) -> StorageResult<Usage> {
        let start = match self.open(path, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return match self.stat(path)? {
                    Some(entry) if entry.kind == EntryKind::File => Ok(Usage {
                        total_size: entry.size,
                        total_files: 1,
                        total_directories: 0,
                    }),
                    _ => Err(StorageError::NotFound(format!("'{path}' does not exist"))),
                };
            }
            Err(e) => return Err(os_error(e, path)),
        };
        let mut usage = Usage::default();
        // Folders still to visit, relative to `start`; a path, not a descriptor, so that wide
        // trees do not run out of descriptors.
        let mut pending: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = pending.pop() {
            let rel_text = String::from_utf8_lossy(&rel).into_owned();
            let fd = if rel.is_empty() {
                start.try_clone().map_err(|e| os_error(e, path))?
            } else {
                match self.open_below_bytes(&start, &rel) {
                    Ok(fd) => fd,
                    // Removed while we counted: nothing to count.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => {
                        return Err(StorageError::Backend(format!("'{path}/{rel_text}': {e}")))
                    }
                }
            };
            for name in DirNames::new(&fd).map_err(|e| os_error(e, path))? {
                let name = name.map_err(|e| os_error(e, path))?;
                let st = match fstatat(fd.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(os_error(e, path)),
                };
                if is_dir(&st) {
                    usage.total_directories += 1;
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(name.as_bytes());
                    pending.push(child);
                } else if is_file(&st) {
                    usage.total_files += 1;
                    usage.total_size += u64::try_from(st.st_size).unwrap_or(0);
                }
            }
        }
        Ok(usage)
    }

    /// Opens the folder `rel` (raw bytes, may be non-UTF-8) below `base`, refusing every link.
    fn open_below_bytes(&self, base: &OwnedFd, rel: &[u8]) -> io::Result<OwnedFd> {
        if self.use_openat2 {
            let path = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            return raw_openat2(
                base.as_raw_fd(),
                &path,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
            );
        }
        let mut current = base.try_clone()?;
        for segment in rel.split(|b| *b == b'/') {
            let name =
                CString::new(segment).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            current = open_no_follow(
                current.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY,
            )?;
        }
        Ok(current)
    }

    fn mkdir(&self, path: &RelPath) -> StorageResult<()> {
        let mut current = RelPath::root();
        for segment in path.segments() {
            let parent_fd = self
                .open(&current, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| os_error(e, &current))?;
            current = current.join(segment)?;
            let name = cstring(segment)?;
            // SAFETY: `name` is NUL-terminated; mkdirat never follows a final symbolic link.
            let made = check(unsafe { libc::mkdirat(parent_fd.as_raw_fd(), name.as_ptr(), 0o777) });
            match made {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // Something is there: it must be a folder we may enter.
                    self.open(&current, libc::O_PATH | libc::O_DIRECTORY)
                        .map_err(|e| match e.raw_os_error() {
                            Some(libc::ENOTDIR) => StorageError::Conflict(format!(
                                "'{current}' is a file, so no folder can be made there"
                            )),
                            _ => os_error(e, &current),
                        })?;
                }
                Err(e) => return Err(os_error(e, &current)),
            }
        }
        Ok(())
    }

    fn create_file(&self, path: &RelPath) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::Conflict(
                "the sandbox root already exists (it is a folder)".into(),
            ));
        }
        let (dir, name) = self.parent(path)?;
        raw_openat(
            dir.as_raw_fd(),
            &name,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
            0o666,
        )
        .map_err(|e| os_error(e, path))?;
        Ok(())
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> StorageResult<()> {
        if from.is_root() {
            return Err(StorageError::PermissionDenied(
                "the sandbox root cannot be moved".into(),
            ));
        }
        if to.is_root() {
            return Err(StorageError::Conflict(
                "the sandbox root already exists".into(),
            ));
        }
        let (from_dir, from_name) = self.parent(from).map_err(|e| match e {
            StorageError::NotFound(_) => StorageError::NotFound(format!("'{from}' does not exist")),
            other => other,
        })?;
        fstatat(from_dir.as_raw_fd(), &from_name, libc::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| os_error(e, from))?;
        let (to_dir, to_name) = self.parent(to)?;
        match fstatat(to_dir.as_raw_fd(), &to_name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => return Err(StorageError::Conflict(format!("'{to}' already exists"))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(os_error(e, to)),
        }
        if to.starts_with(from) {
            return Err(StorageError::Conflict(format!(
                "cannot move '{from}' into itself ('{to}')"
            )));
        }
        let into_itself =
            || StorageError::Conflict(format!("cannot move '{from}' into itself ('{to}')"));
        // SAFETY: both names are NUL-terminated and both descriptors are open folders.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                from_dir.as_raw_fd(),
                from_name.as_ptr(),
                to_dir.as_raw_fd(),
                to_name.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        let err = if rc == 0 {
            return Ok(());
        } else {
            io::Error::last_os_error()
        };
        match err.raw_os_error() {
            // No RENAME_NOREPLACE here (old kernel or file system): we checked `to` above.
            Some(libc::ENOSYS | libc::EINVAL) => {
                // SAFETY: as above.
                let plain = check(unsafe {
                    libc::renameat(
                        from_dir.as_raw_fd(),
                        from_name.as_ptr(),
                        to_dir.as_raw_fd(),
                        to_name.as_ptr(),
                    )
                });
                match plain {
                    Ok(()) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(into_itself()),
                    Err(e) => Err(rename_error(e, from, to)),
                }
            }
            _ => Err(rename_error(err, from, to)),
        }
    }

    fn remove(&self, path: &RelPath, recursive: bool) -> StorageResult<()> {
        if path.is_root() {
            return Err(StorageError::PermissionDenied(
                "the sandbox root cannot be removed".into(),
            ));
        }
        let (dir, name) = self.parent(path).map_err(|e| match e {
            StorageError::NotFound(_) => StorageError::NotFound(format!("'{path}' does not exist")),
            other => other,
        })?;
        let st = fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| os_error(e, path))?;
        if !is_dir(&st) {
            // Files and symbolic links (the link itself, never its target).
            // SAFETY: `name` is NUL-terminated; unlinkat never follows links.
            return check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
                .map_err(|e| os_error(e, path));
        }
        let rmdir = || {
            // SAFETY: as above.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
        };
        match rmdir() {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                if !recursive {
                    return Err(StorageError::Conflict(format!(
                        "the folder '{path}' is not empty: remove it with recursive=true"
                    )));
                }
            }
            Err(e) => return Err(os_error(e, path)),
        }
        self.remove_tree(&dir, &name)
            .map_err(|e| os_error(e, path))?;
        rmdir().map_err(|e| os_error(e, path))
    }

    /// Empties the folder `name` of `parent`, never following a symbolic link.
    fn remove_tree(&self, parent: &OwnedFd, name: &CStr) -> io::Result<()> {
        struct Frame {
            fd: OwnedFd,
            names: std::vec::IntoIter<CString>,
        }
        let open = |dir: &OwnedFd, name: &CStr| -> io::Result<Frame> {
            let fd = self.open_below_bytes(dir, name.to_bytes())?;
            let names = DirNames::new(&fd)?.collect::<io::Result<Vec<_>>>()?;
            Ok(Frame {
                fd,
                names: names.into_iter(),
            })
        };
        let mut stack = vec![open(parent, name)?];
        // Names of the folders on the stack (but the first), to remove them once emptied.
        let mut dir_names: Vec<CString> = Vec::new();
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.names.next() else {
                stack.pop();
                if let (Some(done), Some(up)) = (dir_names.pop(), stack.last()) {
                    // SAFETY: `done` is NUL-terminated; `up.fd` is its open parent folder.
                    check(unsafe {
                        libc::unlinkat(up.fd.as_raw_fd(), done.as_ptr(), libc::AT_REMOVEDIR)
                    })?;
                }
                continue;
            };
            let dir_fd = frame.fd.as_raw_fd();
            let st = match fstatat(dir_fd, &child, libc::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            if is_dir(&st) {
                let next = open(&frame.fd, &child)?;
                stack.push(next);
                dir_names.push(child);
            } else {
                // SAFETY: `child` is NUL-terminated; unlinkat never follows links.
                match check(unsafe { libc::unlinkat(dir_fd, child.as_ptr(), 0) }) {
                    Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn rename_error(err: io::Error, from: &RelPath, to: &RelPath) -> StorageError {
    match err.raw_os_error() {
        Some(libc::EXDEV) => StorageError::Backend(format!(
            "cannot move '{from}' to '{to}': they are on different file systems"
        )),
        Some(libc::EEXIST | libc::ENOTEMPTY) => {
            StorageError::Conflict(format!("'{to}' already exists"))
        }
        _ => os_error(err, from),
    }
}

/// The `count` smallest listable names in the folder `fd` that sort after `after`, in order.
/// Reads the folder as a stream and keeps at most `count` names, however big it is.
fn smallest_names_after(
    fd: &OwnedFd,
    after: Option<&str>,
    count: usize,
) -> io::Result<Vec<String>> {
    // `count` comes from the user: reserve for a typical page, grow only as names arrive.
    let mut heap: BinaryHeap<String> = BinaryHeap::with_capacity(count.min(1024));
    for name in DirNames::new(fd)? {
        let name = name?;
        let Some(name) = listable_name(&name) else {
            continue;
        };
        if after.is_some_and(|a| name <= a) {
            continue;
        }
        if heap.len() < count {
            heap.push(name.to_string());
        } else if heap.peek().is_some_and(|largest| name < largest.as_str()) {
            heap.pop();
            heap.push(name.to_string());
        }
    }
    Ok(heap.into_sorted_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    fn names(page: &Page) -> Vec<&str> {
        page.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// A sandbox folder `root` next to a folder `outside` holding `secret`.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        Fixture {
            _dir: dir,
            root,
            outside,
        }
    }

    fn backends(root: &Path) -> [FileBackend; 2] {
        [
            FileBackend::new(root.to_path_buf()),
            FileBackend::new_walk_only(root.to_path_buf()),
        ]
    }

    #[tokio::test]
    async fn create_stat_list_usage() {
        let f = fixture();
        for b in backends(&f.root) {
            b.mkdir(&p("a/b/c")).await.unwrap();
            b.mkdir(&p("a/b")).await.unwrap();
            b.create_file(&p("a/file")).await.unwrap();
            std::fs::write(f.root.join("a/b/data"), vec![0u8; 1234]).unwrap();
            std::fs::set_permissions(
                f.root.join("a/file"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();

            let page = b.list(&p("a"), 1000, None).await.unwrap();
            assert_eq!(names(&page), ["b", "file"]);
            assert_eq!(page.next_cursor, None);
            let dir = &page.entries[0];
            assert_eq!(
                (dir.kind, dir.size, dir.executable),
                (EntryKind::Directory, 0, false)
            );
            assert!(page.entries[1].executable);

            let data = b.stat(&p("a/b/data")).await.unwrap().unwrap();
            assert_eq!((data.kind, data.size), (EntryKind::File, 1234));
            let mtime = std::fs::metadata(f.root.join("a/b/data"))
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64;
            assert_eq!(data.modification_time, Some(mtime));
            assert!(b.stat(&p("a/nothing")).await.unwrap().is_none());
            assert!(b.stat(&p("a/file/below")).await.unwrap().is_none());
            assert_eq!(
                b.stat(&RelPath::root()).await.unwrap().unwrap().kind,
                EntryKind::Directory
            );

            let usage = b.usage(&p("a")).await.unwrap();
            assert_eq!(
                usage,
                Usage {
                    total_size: 1234,
                    total_files: 2,
                    total_directories: 2
                }
            );
            let one = b.usage(&p("a/b/data")).await.unwrap();
            assert_eq!((one.total_size, one.total_files), (1234, 1));
            assert!(matches!(
                b.usage(&p("nope")).await,
                Err(StorageError::NotFound(_))
            ));
            assert!(matches!(
                b.list(&p("nope"), 10, None).await,
                Err(StorageError::NotFound(_))
            ));
            assert!(matches!(
                b.list(&p("a/file"), 10, None).await,
                Err(StorageError::NotFound(_))
            ));

            // mkdir through a file, create_file without parent or over an existing entry.
            assert!(matches!(
                b.mkdir(&p("a/file/x")).await,
                Err(StorageError::Conflict(_))
            ));
            assert!(matches!(
                b.create_file(&p("missing/f")).await,
                Err(StorageError::NotFound(_))
            ));
            assert!(matches!(
                b.create_file(&p("a/file")).await,
                Err(StorageError::Conflict(_))
            ));
            assert!(matches!(
                b.create_file(&p("a/b")).await,
                Err(StorageError::Conflict(_))
            ));
            b.remove(&p("a"), true).await.unwrap();
        }
    }

    #[tokio::test]
    async fn rename_and_remove_rules() {
        let f = fixture();
        for b in backends(&f.root) {
            b.mkdir(&p("d/sub")).await.unwrap();
            b.create_file(&p("d/sub/f")).await.unwrap();
            b.create_file(&p("g")).await.unwrap();

            assert!(matches!(
                b.rename(&p("g"), &p("d")).await,
                Err(StorageError::Conflict(_))
            ));
            assert!(matches!(
                b.rename(&p("nope"), &p("x")).await,
                Err(StorageError::NotFound(_))
            ));
            assert!(matches!(
                b.rename(&p("g"), &p("missing/g")).await,
                Err(StorageError::NotFound(_))
            ));
            assert!(matches!(
                b.rename(&p("d"), &p("d/sub/d")).await,
                Err(StorageError::Conflict(_))
            ));
            assert!(matches!(
                b.rename(&RelPath::root(), &p("x")).await,
                Err(StorageError::PermissionDenied(_))
            ));
            b.rename(&p("d"), &p("e")).await.unwrap();
            b.rename(&p("g"), &p("e/g")).await.unwrap();
            assert!(b.stat(&p("e/sub/f")).await.unwrap().is_some());
            assert!(b.stat(&p("e/g")).await.unwrap().is_some());

            assert!(matches!(
                b.remove(&p("e"), false).await,
                Err(StorageError::Conflict(_))
            ));
            assert!(matches!(
                b.remove(&p("nope"), true).await,
                Err(StorageError::NotFound(_))
            ));
            assert!(matches!(
                b.remove(&RelPath::root(), true).await,
                Err(StorageError::PermissionDenied(_))
            ));
            b.remove(&p("e/g"), false).await.unwrap();
            b.mkdir(&p("e/empty")).await.unwrap();
            b.remove(&p("e/empty"), false).await.unwrap();
            b.remove(&p("e"), true).await.unwrap();
            assert!(b
                .list(&RelPath::root(), 10, None)
                .await
                .unwrap()
                .entries
                .is_empty());
        }
    }

    #[tokio::test]
    async fn pages_of_a_big_folder() {
        let f = fixture();
        std::fs::create_dir(f.root.join("big")).unwrap();
        for i in 0..2500 {
            std::fs::write(f.root.join(format!("big/f{i:05}")), b"").unwrap();
        }
        for b in backends(&f.root) {
            let mut cursor: Option<String> = None;
            let mut sizes = Vec::new();
            let mut all = Vec::new();
            loop {
                let page = b.list(&p("big"), 1000, cursor.as_deref()).await.unwrap();
                sizes.push(page.entries.len());
                all.extend(page.entries.into_iter().map(|e| e.name));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(sizes, [1000, 1000, 500]);
            let whole = b.list(&p("big"), usize::MAX, None).await.unwrap();
            assert_eq!((whole.entries.len(), whole.next_cursor), (2500, None));
            let expected: Vec<String> = (0..2500).map(|i| format!("f{i:05}")).collect();
            assert_eq!(all, expected);
            let usage = b.usage(&p("big")).await.unwrap();
            assert_eq!((usage.total_files, usage.total_directories), (2500, 0));
        }
    }

    #[tokio::test]
    async fn symlinks_out_of_the_sandbox_are_refused() {
        let f = fixture();
        std::fs::create_dir(f.root.join("sub")).unwrap();
        std::fs::write(f.root.join("sub/inner"), b"12").unwrap();
        symlink("/", f.root.join("slash")).unwrap();
        symlink("/etc", f.root.join("etc")).unwrap();
        symlink("../outside", f.root.join("rel_out")).unwrap();
        symlink("../outside/secret", f.root.join("secret_link")).unwrap();
        symlink(f.root.join("sub"), f.root.join("abs_inside")).unwrap();
        symlink("sub", f.root.join("inside")).unwrap();
        symlink("nowhere", f.root.join("dangling")).unwrap();

        for (i, b) in backends(&f.root).into_iter().enumerate() {
            let openat2 = i == 0 && openat2_available();
            let listing = b.list(&RelPath::root(), 100, None).await.unwrap();
            let expected: &[&str] = if openat2 {
                &["inside", "sub"]
            } else {
                &["sub"]
            };
            assert_eq!(names(&listing), expected, "walk only: {}", i == 1);

            for out in ["slash", "etc", "rel_out", "abs_inside"] {
                let denied = |r: &StorageResult<()>| {
                    matches!(
                        r,
                        Err(StorageError::PermissionDenied(_)) | Err(StorageError::NotFound(_))
                    )
                };
                let listed = b.list(&p(out), 100, None).await;
                assert!(
                    matches!(listed, Err(StorageError::PermissionDenied(_))),
                    "{out}: {listed:?}"
                );
                assert!(b.stat(&p(out)).await.unwrap().is_none(), "{out}");
                assert!(matches!(
                    b.stat(&p(&format!("{out}/passwd"))).await,
                    Err(StorageError::PermissionDenied(_))
                ));
                assert!(matches!(
                    b.usage(&p(out)).await,
                    Err(StorageError::PermissionDenied(_))
                ));
                let made = b.mkdir(&p(&format!("{out}/newdir"))).await;
                assert!(denied(&made), "{out}: {made:?}");
                let made = b.create_file(&p(&format!("{out}/newfile"))).await;
                assert!(denied(&made), "{out}: {made:?}");
                let moved = b.rename(&p(&format!("{out}/secret")), &p("stolen")).await;
                assert!(denied(&moved), "{out}: {moved:?}");
                let moved = b.rename(&p("sub/inner"), &p(&format!("{out}/inner"))).await;
                assert!(denied(&moved), "{out}: {moved:?}");
                let removed = b.remove(&p(&format!("{out}/secret")), true).await;
                assert!(denied(&removed), "{out}: {removed:?}");
            }
            assert!(b.stat(&p("secret_link")).await.unwrap().is_none());
            assert!(b.stat(&p("dangling")).await.unwrap().is_none());
            assert!(!f.outside.join("newdir").exists());
            assert!(!f.outside.join("newfile").exists());
            assert!(!f.outside.join("inner").exists());
            assert!(f.outside.join("secret").exists());
            assert!(!f.root.join("stolen").exists());
            assert!(f.root.join("sub/inner").exists());

            // Links that stay inside are followed (openat2) or refused (walk only).
            let inside = b.list(&p("inside"), 100, None).await;
            if openat2 {
                assert_eq!(names(&inside.unwrap()), ["inner"]);
            } else {
                assert!(matches!(inside, Err(StorageError::PermissionDenied(_))));
            }

            // du of the root never follows links.
            let usage = b.usage(&RelPath::root()).await.unwrap();
            assert_eq!((usage.total_files, usage.total_size), (1, 2));
        }

        // Removing or renaming a link touches the link only.
        let b = FileBackend::new(f.root.clone());
        b.rename(&p("rel_out"), &p("moved_link")).await.unwrap();
        b.remove(&p("moved_link"), true).await.unwrap();
        b.remove(&p("secret_link"), false).await.unwrap();
        assert!(f.outside.join("secret").exists());

        // A recursive remove of a folder holding a link out removes the link, not the target.
        std::fs::create_dir(f.root.join("tree")).unwrap();
        symlink("../../outside", f.root.join("tree/out")).unwrap();
        symlink("/", f.root.join("tree/slash")).unwrap();
        b.remove(&p("tree"), true).await.unwrap();
        assert!(!f.root.join("tree").exists());
        assert!(f.outside.join("secret").exists());
    }

    #[tokio::test]
    async fn symlinks_inside_are_flagged_as_links() {
        let f = fixture();
        std::fs::create_dir(f.root.join("dir")).unwrap();
        std::fs::write(f.root.join("dir/inner"), b"12").unwrap();
        std::fs::write(f.root.join("file"), b"hello").unwrap();
        symlink("file", f.root.join("to_file")).unwrap();
        symlink("dir", f.root.join("to_dir")).unwrap();
        symlink("to_file", f.root.join("to_link")).unwrap();
        symlink("../file", f.root.join("dir/up_file")).unwrap();
        symlink("nowhere", f.root.join("dangling")).unwrap();
        symlink("../outside/secret", f.root.join("escaping")).unwrap();
        symlink("../outside", f.root.join("escaping_dir")).unwrap();

        // Without openat2 no link is ever an entry.
        let walk = FileBackend::new_walk_only(f.root.clone());
        let page = walk.list(&RelPath::root(), 100, None).await.unwrap();
        assert_eq!(names(&page), ["dir", "file"]);
        assert!(page.entries.iter().all(|e| !e.symlink));
        assert!(walk.stat(&p("to_file")).await.unwrap().is_none());
        if !openat2_available() {
            return; // this kernel has no openat2: the backend below would walk the same way
        }

        let b = FileBackend::new(f.root.clone());
        let page = b.list(&RelPath::root(), 100, None).await.unwrap();
        let flags: Vec<(&str, EntryKind, bool)> = page
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.symlink))
            .collect();
        assert_eq!(
            flags,
            [
                ("dir", EntryKind::Directory, false),
                ("file", EntryKind::File, false),
                ("to_dir", EntryKind::Directory, true),
                ("to_file", EntryKind::File, true),
                ("to_link", EntryKind::File, true),
            ]
        );

        // A link describes its target (size, node) but says it is a link.
        let file = b.stat(&p("file")).await.unwrap().unwrap();
        let to_file = b.stat(&p("to_file")).await.unwrap().unwrap();
        assert!(!file.symlink && to_file.symlink);
        assert_eq!((to_file.kind, to_file.size), (EntryKind::File, 5));
        assert!(file.node.is_some());
        assert_eq!(to_file.node, file.node);
        assert_eq!(
            b.stat(&p("to_link")).await.unwrap().unwrap().node,
            file.node
        );
        let dir = b.stat(&p("dir")).await.unwrap().unwrap();
        let to_dir = b.stat(&p("to_dir")).await.unwrap().unwrap();
        assert!(!dir.symlink && to_dir.symlink);
        assert_eq!(to_dir.kind, EntryKind::Directory);
        assert_eq!(to_dir.node, dir.node);
        assert_ne!(dir.node, file.node);
        let root = b.stat(&RelPath::root()).await.unwrap().unwrap();
        assert!(!root.symlink && root.node.is_some());

        // Below a followed link, names are flagged for what they are themselves.
        let inner = b.list(&p("to_dir"), 100, None).await.unwrap();
        let flags: Vec<(&str, bool)> = inner
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.symlink))
            .collect();
        assert_eq!(flags, [("inner", false), ("up_file", true)]);
        assert!(!b.stat(&p("to_dir/inner")).await.unwrap().unwrap().symlink);

        // Dangling links and links that leave the sandbox are no entries at all.
        for gone in ["dangling", "escaping", "escaping_dir"] {
            assert!(b.stat(&p(gone)).await.unwrap().is_none(), "{gone}");
        }
    }

    #[tokio::test]
    async fn missing_root_is_a_clear_error() {
        let b = FileBackend::new(PathBuf::from("/nonexistent/slipstream/root"));
        let err = b.list(&RelPath::root(), 10, None).await.unwrap_err();
        assert!(matches!(err, StorageError::Backend(ref m) if m.contains("sandbox folder")));
    }

    #[tokio::test]
    async fn whole_filesystem_root_resolves_absolute_links_in_root() {
        // With "/" as the sandbox, the usual system folders are reachable.
        let b = FileBackend::new(PathBuf::from("/"));
        let etc = b.stat(&p("etc")).await.unwrap().unwrap();
        assert_eq!(etc.kind, EntryKind::Directory);
        assert!(!b.list(&p("etc"), 5, None).await.unwrap().entries.is_empty());
    }
}
