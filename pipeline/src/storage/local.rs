//! Local-folder backend: the bucket is a directory, objects are regular files.
//!
//! Nothing outside the bucket is ever opened or listed, whatever happens to the folder while a
//! run reads it. The root is opened once, and every path is resolved beneath that descriptor
//! without following a link: `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or, on
//! kernels without it, one `O_NOFOLLOW` open per folder on the way. What was opened is then
//! checked with `fstat`: only regular files are read. Opening never blocks (`O_NONBLOCK`), so
//! a FIFO or a device under an object's name is refused ([`StoreError::NotARegularFile`],
//! naming the object) instead of waited on. Listings walk folder descriptors the same way:
//! they never descend into a linked folder, and report links and special files as unusable
//! objects (errors naming them) rather than as objects. Keys and prefixes with `..` segments
//! or a leading `/` are refused before any path is touched.
//!
//! Writes go to a hidden temporary file beside the target, locked (`flock`) by its writer, and
//! are published atomically: `linkat(2)` for create-only puts (it fails if the name exists) and
//! `renameat(2)` for the rest. Every failure removes the temporary file; one left by a killed
//! process is no longer locked, which is how [`Store::clean_up`] tells it from a live upload.
//! Compare-and-swap holds an exclusive `flock` on the parent directory while it compares the
//! generation and renames, so two processes racing on the lock object behave as on GCS. The
//! generation is derived from the file's inode and modification time, both of which change when
//! a new version is renamed into place.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use rustix::fs::{AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, Stat};
use rustix::io::Errno;
use tokio::io::AsyncWriteExt;

use super::{
    GetResult, MultipartUpload, ObjectMeta, PutMode, Store, StoreError, validate_key,
    validate_prefix,
};

/// Marks temporary files; listings never show them.
const TMP_MARK: &str = ".autotune-tmp-";
/// Objects up to this size are read in one blocking call.
const SMALL_READ: u64 = 256 * 1024;
/// An unlocked temporary file younger than this is left alone by [`Store::clean_up`]: its
/// writer may be between creating and locking it.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// Why links are refused, for error messages.
const NO_LINKS: &str = "the local backend reads regular files only and never follows links";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// The root folder, opened once: every path is resolved beneath this descriptor.
    dir: Arc<OwnedFd>,
}

/// Set once `openat2` turned out to be missing (ENOSYS), so the fallback is used directly.
#[cfg(any(target_os = "linux", target_os = "android"))]
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` (a checked key, or `.`) beneath `root` without following any link, with
/// `O_NOFOLLOW | O_CLOEXEC` added to `flags`. A link anywhere on the way fails with `ELOOP`
/// (or `EXDEV` for a path leaving `root`).
fn open_beneath(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        use rustix::fs::ResolveFlags;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other,
        }
    }
    open_by_components(root, rel, flags)
}

/// The fallback of [`open_beneath`]: one `O_NOFOLLOW` open per folder on the way, so no link
/// is followed; keys have no `..` segment, so the path cannot climb out of `root`.
fn open_by_components(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let (folders, name) = match rel.rsplit_once('/') {
        Some((folders, name)) => (Some(folders), name),
        None => (None, rel),
    };
    let mut at: Option<OwnedFd> = None;
    for folder in folders.into_iter().flat_map(|f| f.split('/')) {
        let parent = at.as_ref().map_or(root, AsFd::as_fd);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let opened = rustix::fs::openat(parent, folder, flags, Mode::empty())
            .map_err(|e| link_as_loop(parent, folder, e))?;
        at = Some(opened);
    }
    let parent = at.as_ref().map_or(root, AsFd::as_fd);
    rustix::fs::openat(
        parent,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `open(O_DIRECTORY | O_NOFOLLOW)` of a link fails with `ENOTDIR`: tells it apart as `ELOOP`.
fn link_as_loop(parent: BorrowedFd<'_>, name: &str, e: Errno) -> Errno {
    let is_link = || {
        rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    };
    if e == Errno::NOTDIR && is_link() {
        Errno::LOOP
    } else {
        e
    }
}

/// Opens the folder `rel` (a checked key, or `.`) beneath `root` as [`open_beneath`] does;
/// a link in its place fails with `ELOOP`.
fn open_folder_beneath(root: BorrowedFd<'_>, rel: &str) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK;
    open_beneath(root, rel, flags).map_err(|e| {
        if e != Errno::NOTDIR {
            return e;
        }
        let (parent, name) = split_key(rel);
        match open_beneath(root, if parent.is_empty() { "." } else { parent }, flags) {
            Ok(parent) => link_as_loop(parent.as_fd(), name, e),
            Err(_) => e,
        }
    })
}

/// What a file that is not a regular file is, for messages; `None` for a regular file.
fn not_regular(st: &Stat) -> Option<&'static str> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a folder"),
        FileType::Symlink => Some("a symbolic link"),
        FileType::Fifo => Some("a FIFO (named pipe)"),
        FileType::Socket => Some("a socket"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Unknown => Some("a special file"),
    }
}

/// Bytes a multipart upload buffers before a write, and the most tokio's file holds per write.
const UPLOAD_BUFFER: usize = 256 * 1024;

/// An inode's number, modification and change times: a new version renamed into place has a
/// new inode, the nanosecond mtime keeps a recycled inode number from looking unchanged, and
/// the change time (which no user can set back, unlike mtime) catches an in-place edit that
/// restored the old modification time.
fn generation(st: &Stat) -> String {
    let mut g = format!(
        "{}{:09}-{}-{}{:09}",
        st.st_mtime, st.st_mtime_nsec, st.st_ino, st.st_ctime, st.st_ctime_nsec
    );
    // `format!` grows by doubling (64 bytes for these ~48); a listing keeps one per object.
    g.shrink_to_fit();
    g
}

/// How long ago the file was last modified, by this machine's clock; `None` for a time in
/// the future.
fn age(st: &Stat) -> Option<std::time::Duration> {
    let secs = u64::try_from(st.st_mtime).ok()?;
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    let modified = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    std::time::SystemTime::now().duration_since(modified).ok()
}

fn size(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// A key's folder (empty at the root) and file name.
fn split_key(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

fn join_key(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_owned()
    } else {
        format!("{folder}/{name}")
    }
}

/// An exclusive `flock` on a folder descriptor, released on drop.
struct DirLock<'a>(BorrowedFd<'a>);

impl<'a> DirLock<'a> {
    fn acquire(dir: BorrowedFd<'a>) -> rustix::io::Result<Self> {
        rustix::fs::flock(dir, FlockOperation::LockExclusive)?;
        Ok(Self(dir))
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, FlockOperation::Unlock);
    }
}

/// Removes a temporary file on drop. After a successful publish its name is already gone
/// (renamed into place), and the `ENOENT` is ignored.
struct RemoveOnDrop<'a> {
    dir: BorrowedFd<'a>,
    name: &'a str,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(self.dir, self.name, AtFlags::empty());
    }
}

/// One entry met by a walk.
enum Found<'a> {
    /// A regular file: its folder, name, key and status.
    File {
        dir: BorrowedFd<'a>,
        name: &'a CStr,
        key: &'a str,
        stat: &'a Stat,
    },
    /// Something that is not an object: a link, a special file, a name that is not UTF-8, or
    /// a folder that cannot be read.
    Unusable(StoreError),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

impl LocalStore {
    pub fn new(path: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: path.to_owned(),
            reason,
        };
        let root = PathBuf::from(path)
            .canonicalize()
            .map_err(|e| invalid(format!("bucket folder cannot be opened: {e}")))?;
        let dir = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR => invalid("not a folder".to_owned()),
            e => invalid(format!(
                "bucket folder cannot be opened: {}",
                std::io::Error::from(e)
            )),
        })?;
        Ok(Self {
            root,
            dir: Arc::new(dir),
        })
    }

    fn root_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn not_a_regular_file(&self, key: &str, what: &str) -> StoreError {
        StoreError::NotARegularFile {
            key: key.to_owned(),
            uri: self.uri(key),
            reason: format!("{what}, not a regular file: {NO_LINKS}"),
        }
    }

    /// The error of a failed system call on `key`.
    fn fail(&self, key: &str, e: Errno) -> StoreError {
        match e {
            Errno::NOENT => StoreError::NotFound { uri: self.uri(key) },
            Errno::LOOP | Errno::XDEV => {
                self.not_a_regular_file(key, "a symbolic link, or inside a linked folder")
            }
            e => StoreError::Io {
                uri: self.uri(key),
                source: e.into(),
            },
        }
    }

    fn io(&self, key: &str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            uri: self.uri(key),
            source,
        }
    }

    fn meta(key: &str, st: &Stat) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: size(st),
            generation: generation(st),
            checksum: None,
        }
    }

    /// Opens the folder `rel` beneath the root (creating it when asked), one `O_NOFOLLOW` step
    /// at a time, as a fresh open file description (which `flock` needs).
    fn open_folder(&self, rel: &str, create: bool) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut at = rustix::fs::openat(self.root_fd(), ".", flags, Mode::empty())?;
        for folder in rel.split('/').filter(|f| !f.is_empty()) {
            let open = |at: &OwnedFd| {
                rustix::fs::openat(at, folder, flags, Mode::empty())
                    .map_err(|e| link_as_loop(at.as_fd(), folder, e))
            };
            at = match open(&at) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&at, folder, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    open(&at)?
                }
                other => other?,
            };
        }
        Ok(at)
    }

    /// Creates a locked temporary file beside `key`: its folder, its name, the open file.
    fn create_temp(&self, key: &str) -> Result<(OwnedFd, String, std::fs::File), StoreError> {
        let (folder, name) = split_key(key);
        let dir = self
            .open_folder(folder, true)
            .map_err(|e| self.fail(key, e))?;
        let tmp = format!(".{name}{TMP_MARK}{}", uuid::Uuid::new_v4().simple());
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| self.fail(key, e))?;
        // Held while the file is open: a temporary file nobody holds was left by a killed run.
        if let Err(e) = rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            return Err(self.fail(key, e));
        }
        Ok((dir, tmp, std::fs::File::from(fd)))
    }

    /// Publishes the written temporary file `tmp` (open as `file`) in `dir` under `key`
    /// according to `mode`. The caller removes `tmp` whatever happens.
    fn commit(
        &self,
        dir: BorrowedFd<'_>,
        tmp: &str,
        file: &std::fs::File,
        key: &str,
        mode: &PutMode,
    ) -> Result<ObjectMeta, StoreError> {
        let name = split_key(key).1;
        let _guard = DirLock::acquire(dir).map_err(|e| self.fail(key, e))?;
        match mode {
            PutMode::Create => {
                match rustix::fs::linkat(dir, tmp, dir, name, AtFlags::empty()) {
                    Err(Errno::EXIST) => {
                        return Err(StoreError::AlreadyExists { uri: self.uri(key) });
                    }
                    other => other.map_err(|e| self.fail(key, e))?,
                }
                // The temporary name goes now, not after: unlinking changes the inode's change
                // time, which is part of the generation returned below.
                let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
            }
            PutMode::Update(expected) => {
                let current = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .ok()
                    .map(|st| generation(&st));
                if current.as_ref() != Some(expected) {
                    return Err(StoreError::Precondition {
                        uri: self.uri(key),
                        expected: expected.clone(),
                    });
                }
                rustix::fs::renameat(dir, tmp, dir, name).map_err(|e| self.fail(key, e))?;
            }
            PutMode::Overwrite => {
                rustix::fs::renameat(dir, tmp, dir, name).map_err(|e| self.fail(key, e))?;
            }
        }
        let st = rustix::fs::fstat(file).map_err(|e| self.fail(key, e))?;
        Ok(Self::meta(key, &st))
    }

    /// Opens `key` for reading: a regular file beneath the root, reached without links, opened
    /// without blocking.
    fn open_object(&self, key: &str) -> Result<(std::fs::File, Stat), StoreError> {
        let fd =
            open_beneath(self.root_fd(), key, OFlags::RDONLY | OFlags::NONBLOCK).map_err(|e| {
                match e {
                    Errno::NOTDIR => StoreError::NotFound { uri: self.uri(key) },
                    e => self.fail(key, e),
                }
            })?;
        // fstat on the open file: the checks and the generation belong to what is read.
        let st = rustix::fs::fstat(&fd).map_err(|e| self.fail(key, e))?;
        match not_regular(&st) {
            None => {}
            // A folder is no object, as on GCS.
            Some("a folder") => return Err(StoreError::NotFound { uri: self.uri(key) }),
            Some(what) => return Err(self.not_a_regular_file(key, what)),
        }
        // A regular file never blocks; reads need no O_NONBLOCK.
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| self.fail(key, e))?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| self.fail(key, e))?;
        Ok((std::fs::File::from(fd), st))
    }

    /// Walks the folders under `prefix`, calling `visit` for each entry whose key starts with
    /// it, until `visit` returns false. Never descends into a link.
    fn walk_prefix(&self, prefix: &str, visit: &mut dyn FnMut(Found<'_>) -> bool) {
        let start = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let rel = if start.is_empty() { "." } else { start };
        let fd = match open_folder_beneath(self.root_fd(), rel) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return,
            Err(Errno::LOOP | Errno::XDEV) => {
                let source = std::io::Error::other(format!(
                    "a symbolic link, or inside a linked folder: it is not listed, as {NO_LINKS}; \
                     move the files into the bucket or point BUCKET_NAME at the real folder"
                ));
                visit(Found::Unusable(self.io(start, source)));
                return;
            }
            Err(e) => {
                visit(Found::Unusable(self.fail(start, e)));
                return;
            }
        };
        self.walk(fd, start, prefix, visit);
    }

    /// Visits the entries of the open folder `fd` (at `folder`) in name order, and the
    /// folders under it; false when `visit` asked to stop.
    fn walk(
        &self,
        fd: OwnedFd,
        folder: &str,
        prefix: &str,
        visit: &mut dyn FnMut(Found<'_>) -> bool,
    ) -> bool {
        let mut dir = match Dir::new(fd) {
            Ok(dir) => dir,
            Err(e) => return visit(Found::Unusable(self.fail(folder, e))),
        };
        // With whether each is a folder: a folder's keys follow its name and a `/`, so that
        // the listing is in key order (`a-b` before `a/x`), as Cloud Storage's.
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            match entry {
                Ok(e) if e.file_name() != c"." && e.file_name() != c".." => {
                    let folder = is_folder(&dir, &e);
                    names.push((e.file_name().to_owned(), folder));
                }
                Ok(_) => {}
                Err(e) => {
                    if !visit(Found::Unusable(self.fail(folder, e))) {
                        return false;
                    }
                    break;
                }
            }
        }
        names.sort_by(|(a, a_folder), (b, b_folder)| {
            let a = a.to_bytes().iter().chain(a_folder.then_some(&b'/'));
            let b = b.to_bytes().iter().chain(b_folder.then_some(&b'/'));
            a.cmp(b)
        });
        let Ok(dir_fd) = dir.fd() else {
            return true;
        };
        for (name, _) in &names {
            let Ok(text) = name.to_str() else {
                let key = join_key(folder, &name.to_string_lossy());
                let e = StoreError::InvalidKey {
                    key: key.clone(),
                    reason: "file name is not UTF-8".to_owned(),
                };
                if key.starts_with(prefix) && !visit(Found::Unusable(e)) {
                    return false;
                }
                continue;
            };
            let key = join_key(folder, text);
            let st = match rustix::fs::statat(dir_fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    if key.starts_with(prefix) && !visit(Found::Unusable(self.fail(&key, e))) {
                        return false;
                    }
                    continue;
                }
            };
            let found = match not_regular(&st) {
                None => Found::File {
                    dir: dir_fd,
                    name,
                    key: &key,
                    stat: &st,
                },
                // Temporary files are this backend's own business, whatever they became.
                Some(_) if key_is_temporary(&key) => continue,
                Some("a folder") => {
                    let sub = format!("{key}/");
                    if !sub.starts_with(prefix) && !prefix.starts_with(&sub) {
                        continue;
                    }
                    let flags = OFlags::RDONLY
                        | OFlags::DIRECTORY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::CLOEXEC;
                    match rustix::fs::openat(dir_fd, name.as_c_str(), flags, Mode::empty()) {
                        Ok(fd) => {
                            if !self.walk(fd, &key, prefix, visit) {
                                return false;
                            }
                            continue;
                        }
                        Err(Errno::NOENT) => continue,
                        // Swapped for a link or a file since it was looked at. Reported even
                        // when the prefix lies beyond it: the listing would miss things.
                        Err(e) => {
                            let e = match e {
                                Errno::LOOP | Errno::NOTDIR => {
                                    self.not_a_regular_file(&key, "a symbolic link")
                                }
                                e => self.fail(&key, e),
                            };
                            if !visit(Found::Unusable(e)) {
                                return false;
                            }
                            continue;
                        }
                    }
                }
                Some(what) => Found::Unusable(self.not_a_regular_file(&key, what)),
            };
            if key.starts_with(prefix) && !visit(found) {
                return false;
            }
        }
        true
    }

    /// Removes the temporary file `name` in `dir` if it is old and no writer holds it.
    fn remove_if_stale(dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> bool {
        // Removed while its lock is held, so that no writer can take it up meanwhile.
        Self::abandoned(dir, name, stat)
            .is_some_and(|_lock| rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok())
    }

    /// The file of a temporary name, locked, when no writer holds it and it is older than a
    /// write takes to lock it ([`STALE_AFTER`]): left by a killed run, or not this backend's
    /// at all.
    fn abandoned(dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Option<OwnedFd> {
        let modified =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0));
        if modified.elapsed().unwrap_or_default() < STALE_AFTER {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).ok()?;
        // Same file still, and nobody writing it (a live writer holds its lock).
        let same = rustix::fs::fstat(&fd).is_ok_and(|st| st.st_ino == stat.st_ino);
        (same && rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok())
            .then_some(fd)
    }
}

#[async_trait]
impl Store for LocalStore {
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        if let Err(e) = validate_prefix(prefix) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let this = self.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            this.walk_prefix(&prefix, &mut |found| {
                let item = match found {
                    // A write in progress is this backend's own business; a name of the
                    // pattern nobody writes is told, not skipped without a word.
                    Found::File {
                        dir,
                        name,
                        key,
                        stat,
                    } if key_is_temporary(key) => {
                        if Self::abandoned(dir, name, stat).is_none() {
                            return true;
                        }
                        Err(StoreError::InvalidKey {
                            key: key.to_owned(),
                            reason: format!(
                                "named like a temporary file of autotune's local backend (hidden, \"{TMP_MARK}\", then hex digits) that no write holds, so it is never read: rename it if it is a sample; a run holding the lock removes such files from its own folders"
                            ),
                        })
                    }
                    Found::File { key, stat, .. } => Ok(Self::meta(key, stat)),
                    Found::Unusable(e) => Err(e),
                };
                tx.blocking_send(item).is_ok()
            });
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .boxed()
    }

    async fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        validate_key(key)?;
        let this = self.clone();
        let owned_key = key.to_owned();
        // One blocking hop opens, checks and (for small objects, the common case) reads the
        // file: tokio::fs would spend a thread hand-off on each step.
        let (file, st, small) = blocking(move || {
            let key = owned_key;
            let (mut file, st) = this.open_object(&key)?;
            if size(&st) <= SMALL_READ {
                // One byte more than the size, so that reaching the end needs no reallocation.
                let mut buf = Vec::with_capacity(usize::try_from(size(&st)).unwrap_or(0) + 1);
                file.read_to_end(&mut buf).map_err(|e| this.io(&key, e))?;
                return Ok((None, st, Some(Bytes::from(buf))));
            }
            Ok((Some(file), st, None))
        })
        .await?;
        if let Some(data) = small {
            return Ok(GetResult {
                age: age(&st),
                generation: generation(&st),
                size: data.len() as u64,
                body: futures::stream::once(async move { Ok(data) }).boxed(),
            });
        }
        let file = tokio::fs::File::from_std(file.expect("a large file stays open"));
        let uri = self.uri(key);
        let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map(move |r| {
                r.map_err(|source| StoreError::Io {
                    uri: uri.clone(),
                    source,
                })
            })
            .boxed();
        Ok(GetResult {
            age: age(&st),
            generation: generation(&st),
            size: size(&st),
            body,
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let this = self.clone();
        let owned_key = key.to_owned();
        // Opened as a read would (no link followed, a regular file only), not read.
        let (_, st) = blocking(move || this.open_object(&owned_key)).await?;
        Ok(Self::meta(key, &st))
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let (dir, tmp, mut file) = this.create_temp(&key)?;
            let _remove = RemoveOnDrop {
                dir: dir.as_fd(),
                name: &tmp,
            };
            file.write_all(&data)
                .and_then(|()| file.sync_data())
                .map_err(|e| this.io(&key, e))?;
            this.commit(dir.as_fd(), &tmp, &file, &key, &mode)
        })
        .await
    }

    async fn put_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        validate_key(key)?;
        let this = self.clone();
        let owned_key = key.to_owned();
        let (dir, tmp, file) = blocking(move || this.create_temp(&owned_key)).await?;
        // Parts come in about a megabyte at a time; tokio's file copies what it writes into a
        // buffer of its own (2 MB by default). A build writes five files at once.
        let mut file = tokio::fs::File::from_std(file);
        file.set_max_buf_size(UPLOAD_BUFFER);
        Ok(Box::new(LocalUpload {
            store: self.clone(),
            key: key.to_owned(),
            file: Some(tokio::io::BufWriter::with_capacity(UPLOAD_BUFFER, file)),
            dir: Arc::new(dir),
            tmp,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let (folder, name) = split_key(&key);
            let dir = this
                .open_folder(folder, false)
                .map_err(|e| this.fail(&key, e))?;
            let _guard = DirLock::acquire(dir.as_fd()).map_err(|e| this.fail(&key, e))?;
            rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| this.fail(&key, e))
        })
        .await
    }

    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.root.join(key).display())
    }

    async fn clean_up(&self, prefix: &str) -> Result<u64, StoreError> {
        validate_prefix(prefix)?;
        let this = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut removed = 0;
            this.walk_prefix(&prefix, &mut |found| {
                if let Found::File {
                    dir,
                    name,
                    key,
                    stat,
                } = found
                    && key_is_temporary(key)
                    && Self::remove_if_stale(dir, name, stat)
                {
                    tracing::info!(
                        object = %this.uri(key),
                        "removed a temporary file left by an interrupted run"
                    );
                    removed += 1;
                }
                true
            });
            Ok(removed)
        })
        .await
    }
}

/// Whether a key names one of this backend's temporary files: hidden, the mark, then hex
/// digits only (at least 16; [`LocalStore::put`] writes a UUID's 32). Any other name is an
/// object, listed (a user's file may well contain the mark).
fn key_is_temporary(key: &str) -> bool {
    let name = split_key(key).1;
    name.starts_with('.')
        && name
            .rsplit_once(TMP_MARK)
            .is_some_and(|(_, id)| id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

struct LocalUpload {
    store: LocalStore,
    key: String,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    /// The folder of the temporary file and of the object.
    dir: Arc<OwnedFd>,
    tmp: String,
}

impl LocalUpload {
    fn remove_temp(&self) -> rustix::io::Result<()> {
        rustix::fs::unlinkat(&*self.dir, self.tmp.as_str(), AtFlags::empty())
    }
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        let f = self.file.as_mut().expect("upload is open");
        let written = f.write_all(&data).await;
        written.map_err(|e| {
            // A full disk or any other failure: the partial file goes now, not on drop.
            let _ = self.remove_temp();
            self.store.io(&self.key, e)
        })
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let mut f = self.file.take().expect("upload is open");
        let flushed = async {
            f.flush().await?;
            f.get_ref().sync_data().await?;
            Ok::<_, std::io::Error>(f.into_inner().into_std().await)
        }
        .await;
        // On every path below the temporary name goes: renamed into place, or removed by
        // `Drop` (which runs when `self` goes out of scope).
        let file = flushed.map_err(|e| self.store.io(&self.key, e))?;
        let (store, key, dir, tmp) = (
            self.store.clone(),
            self.key.clone(),
            self.dir.clone(),
            self.tmp.clone(),
        );
        blocking(move || store.commit(dir.as_fd(), &tmp, &file, &key, &PutMode::Overwrite)).await
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.file.take();
        self.remove_temp()
            .map_err(|e| self.store.fail(&self.key, e))
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Completed: the name was renamed away and this finds nothing. Aborted or failed:
        // the partial file goes.
        let _ = self.remove_temp();
    }
}

/// Whether a folder's entry is a folder, from the entry's type or, where the file system does
/// not say, from its status (the listing's key order depends on it).
fn is_folder(dir: &Dir, e: &rustix::fs::DirEntry) -> bool {
    use rustix::fs::FileType;
    match e.file_type() {
        FileType::Directory => true,
        FileType::Unknown => dir.fd().is_ok_and(|fd| {
            rustix::fs::statat(fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bucket/a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("bucket/a/b/f.txt"), "in").unwrap();
        std::fs::write(dir.path().join("outside/s.txt"), "out").unwrap();
        symlink(
            dir.path().join("outside"),
            dir.path().join("bucket/a/linked"),
        )
        .unwrap();
        symlink("f.txt", dir.path().join("bucket/a/b/rel.txt")).unwrap();
        let fd = rustix::fs::open(
            dir.path().join("bucket"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        (dir, fd)
    }

    /// openat2 and its fallback agree: files beneath the root open, links never resolve.
    #[test]
    fn both_ways_of_opening_refuse_links() {
        type Open = fn(BorrowedFd<'_>, &str, OFlags) -> rustix::io::Result<OwnedFd>;
        let (_dir, fd) = root();
        let ways: [(&str, Open); 2] = [
            ("openat2", open_beneath),
            ("O_NOFOLLOW per folder", |root, rel, flags| {
                open_by_components(root, rel, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC)
            }),
        ];
        for (way, open) in ways {
            let f = open(fd.as_fd(), "a/b/f.txt", OFlags::RDONLY).unwrap();
            let mut text = String::new();
            std::fs::File::from(f).read_to_string(&mut text).unwrap();
            assert_eq!(text, "in", "{way}");
            for linked in ["a/linked/s.txt", "a/linked", "a/b/rel.txt"] {
                let e = open(fd.as_fd(), linked, OFlags::RDONLY).unwrap_err();
                assert_eq!(e, Errno::LOOP, "{way}: {linked}");
            }
            assert_eq!(
                open(fd.as_fd(), "a/none", OFlags::RDONLY).unwrap_err(),
                Errno::NOENT,
                "{way}"
            );
        }
    }

    /// Issue 20: a file whose name merely contains the temporary mark was left out of every
    /// listing without a word; only the names this backend makes (hidden, the mark, 32 hex
    /// digits) are its temporary files.
    #[tokio::test]
    async fn only_this_backends_own_temporary_names_are_hidden() {
        use futures::TryStreamExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("raw")).unwrap();
        let ours = format!(".x.json{TMP_MARK}{}", uuid::Uuid::new_v4().simple());
        for name in [".notes.autotune-tmp-draft.txt", "a.txt", ours.as_str()] {
            std::fs::write(dir.path().join("raw").join(name), "x").unwrap();
        }
        let store = LocalStore::new(dir.path().to_str().unwrap()).unwrap();
        let mut listed: Vec<String> = store
            .list("raw/")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        listed.sort();
        assert_eq!(listed, ["raw/.notes.autotune-tmp-draft.txt", "raw/a.txt"]);
    }

    /// Issue 20: a name of the temporary pattern that no writer holds and that is older than a
    /// write takes to lock it (a user's file named so, or a leftover) was skipped without a
    /// word; it is reported as an object the backend cannot list. One its writer holds is
    /// still this backend's own business.
    #[tokio::test]
    async fn a_temporary_name_nobody_writes_is_reported_not_skipped() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::create_dir_all(&raw).unwrap();
        let old = std::time::SystemTime::now() - STALE_AFTER - Duration::from_secs(5);
        let orphan = format!(".b.txt{TMP_MARK}{}", uuid::Uuid::new_v4().simple());
        let held = format!(".c.txt{TMP_MARK}{}", uuid::Uuid::new_v4().simple());
        let fresh = format!(".d.txt{TMP_MARK}{}", uuid::Uuid::new_v4().simple());
        for name in [&orphan, &held, &fresh] {
            std::fs::write(raw.join(name), "x").unwrap();
        }
        for name in [&orphan, &held] {
            let f = std::fs::File::options()
                .write(true)
                .open(raw.join(name))
                .unwrap();
            f.set_modified(old).unwrap();
        }
        let writer = std::fs::File::open(raw.join(&held)).unwrap();
        rustix::fs::flock(&writer, FlockOperation::NonBlockingLockExclusive).unwrap();
        std::fs::write(raw.join("a.txt"), "x").unwrap();
        let store = LocalStore::new(dir.path().to_str().unwrap()).unwrap();
        let mut listed = Vec::new();
        let mut reported = Vec::new();
        let mut listing = store.list("raw/");
        while let Some(item) = listing.next().await {
            match item {
                Ok(m) => listed.push(m.key),
                Err(StoreError::InvalidKey { key, reason }) => reported.push((key, reason)),
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!(listed, ["raw/a.txt"]);
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(reported[0].0, format!("raw/{orphan}"));
        assert!(
            reported[0].1.contains("temporary file") && reported[0].1.contains("rename"),
            "{}",
            reported[0].1
        );
        drop(writer);
    }
}
