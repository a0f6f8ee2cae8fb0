//! Copying a storage directory, and the file copy the SQLite engine shares: in-kernel
//! (`copy_file_range`, which XFS and btrfs turn into a reflink of the range, near-constant
//! time), in chunks so that progress is reported and a cancel noticed between them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use tokio_util::sync::CancellationToken;

use crate::offload::{self, Reporter};
use crate::{DataError, Progress};

/// Bytes per `copy_file_range` call: large enough to cost nothing, small enough that a cancel
/// is noticed within a fraction of a second.
const CHUNK: usize = 64 << 20;

/// Copies the tree at `src` into `dst` (which must not exist), preserving modes and
/// symbolic links (never following them), reflinking files where the filesystem can; bytes are
/// reported as they are copied. Copies into `dst.partial` and renames at the end, so a failure
/// or cancel leaves no `dst`. Returns the bytes copied.
///
/// Files, directories and links are copied; other kinds (sockets, fifos, devices) are skipped
/// with a line saying so. Owners are not: the copy belongs to whoever runs it, and the caller
/// hands it to the environment's user.
pub async fn copy_tree(
    src: &Path,
    dst: &Path,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<u64, DataError> {
    let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
    offload::run(progress, cancel, move |r| copy_tree_blocking(&src, &dst, r)).await
}

fn copy_tree_blocking(src: &Path, dst: &Path, r: &Reporter) -> Result<u64, DataError> {
    let meta = fs::symlink_metadata(src).map_err(DataError::io("reading", src))?;
    if !meta.is_dir() {
        return Err(DataError::Invalid(format!(
            "{} is not a directory",
            src.display()
        )));
    }
    refuse_existing(dst)?;
    let partial = partial_path(dst);
    remove_tree(&partial)?;
    let total = tree_bytes(src)?;
    let mut done = 0;
    let copied = copy_dir(src, &partial, r, &mut done, Some(total)).and_then(|()| {
        fs::rename(&partial, dst).map_err(DataError::io("renaming into", dst))?;
        sync_parent(dst)
    });
    match copied {
        Ok(()) => Ok(done),
        Err(e) => {
            remove_tree(&partial)?;
            Err(e)
        }
    }
}

/// `PATH.partial`: where a copy is written before it is renamed to `PATH`.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    suffixed(path, ".partial")
}

/// `PATH` with `suffix` appended to its last component.
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A clear error when `path` exists (as anything, a dangling link included).
pub(crate) fn refuse_existing(path: &Path) -> Result<(), DataError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(DataError::Invalid(format!(
            "{} already exists; a copy is only written to a new path",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataError::io("checking", path)(e)),
    }
}

pub(crate) fn remove_tree(path: &Path) -> Result<(), DataError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(DataError::io("removing", path))
}

pub(crate) fn tree_bytes(dir: &Path) -> Result<u64, DataError> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(DataError::io("reading", dir))? {
        let entry = entry.map_err(DataError::io("reading", dir))?;
        let meta = entry
            .metadata()
            .map_err(DataError::io("reading", entry.path()))?;
        if meta.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    r: &Reporter,
    done: &mut u64,
    total: Option<u64>,
) -> Result<(), DataError> {
    r.check()?;
    fs::create_dir(dst).map_err(DataError::io("creating", dst))?;
    for entry in fs::read_dir(src).map_err(DataError::io("reading", src))? {
        let entry = entry.map_err(DataError::io("reading", src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        // DirEntry::metadata does not follow links.
        let meta = entry.metadata().map_err(DataError::io("reading", &from))?;
        if meta.is_dir() {
            copy_dir(&from, &to, r, done, total)?;
        } else if meta.is_file() {
            copy_file(&from, &to, meta.permissions().mode(), None, r, done, total)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&from).map_err(DataError::io("reading", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(DataError::io("creating", &to))?;
        } else {
            r.line(format!(
                "skipping {}: not a file, directory or link",
                from.display()
            ));
        }
    }
    // Last, so that a read-only directory could still be filled.
    let mode = fs::symlink_metadata(src)
        .map_err(DataError::io("reading", src))?
        .permissions()
        .mode();
    fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(DataError::io("setting the mode of", dst))
}

/// Copies one regular file to `dst` (a new file, given `mode`), at most its first `limit`
/// bytes, adding its bytes to `done` and reporting after each chunk. In-kernel where the system
/// can, else through a buffer.
pub(crate) fn copy_file(
    src: &Path,
    dst: &Path,
    mode: u32,
    limit: Option<u64>,
    r: &Reporter,
    done: &mut u64,
    total: Option<u64>,
) -> Result<(), DataError> {
    let mut from = File::open(src).map_err(DataError::io("opening", src))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(DataError::io("creating", dst))?;
    let mut in_kernel = true;
    let mut buf = Vec::new();
    let mut left = limit.unwrap_or(u64::MAX);
    loop {
        r.check()?;
        let want = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        if want == 0 {
            break;
        }
        let n = if in_kernel {
            match nix::fcntl::copy_file_range(&from, None, &to, None, want) {
                Ok(n) => n,
                // Across filesystems on old kernels, or a filesystem without it: both
                // descriptors' offsets are where the in-kernel copy left them.
                Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                    in_kernel = false;
                    continue;
                }
                Err(e) => return Err(DataError::io("copying", src)(e.into())),
            }
        } else {
            if buf.is_empty() {
                buf = vec![0; 1 << 20];
            }
            let n = from
                .read(&mut buf[..want.min(1 << 20)])
                .map_err(DataError::io("reading", src))?;
            to.write_all(&buf[..n])
                .map_err(DataError::io("writing", dst))?;
            n
        };
        if n == 0 {
            break;
        }
        left -= n as u64;
        *done += n as u64;
        r.bytes(*done, total);
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(DataError::io("setting the mode of", dst))
}

/// Makes a rename into `path`'s directory durable.
pub(crate) fn sync_parent(path: &Path) -> Result<(), DataError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(DataError::io("syncing", parent))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::Mutex;

    use super::*;
    use crate::Quiet;

    #[derive(Default)]
    struct Seen(Mutex<Vec<(u64, Option<u64>)>>);

    impl Progress for Seen {
        fn line(&self, _: &str) {}
        fn bytes(&self, done: u64, total: Option<u64>) {
            self.0.lock().unwrap().push((done, total));
        }
        fn table_masked(&self, _: &str, _: u64) {}
    }

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("uploads/2026")).unwrap();
        fs::write(root.join("uploads/2026/a.bin"), vec![7u8; 3 << 20]).unwrap();
        fs::write(root.join("script.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir(root.join("private")).unwrap();
        fs::write(root.join("private/key"), "k").unwrap();
        fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("uploads/2026/a.bin", root.join("latest")).unwrap();
        symlink("/etc/passwd", root.join("outside")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
    }

    #[tokio::test]
    async fn a_tree_is_copied_with_modes_and_links_as_links() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        tree(&src);
        let seen = Seen::default();
        let bytes = copy_tree(&src, &dst, &seen, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(bytes, (3 << 20) + 10 + 1);
        assert_eq!(seen.0.lock().unwrap().last(), Some(&(bytes, Some(bytes))));
        assert_eq!(
            fs::read(dst.join("uploads/2026/a.bin")).unwrap(),
            vec![7u8; 3 << 20]
        );
        let mode = |p: &str| {
            fs::symlink_metadata(dst.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("script.sh"), 0o750);
        assert_eq!(mode("private"), 0o700);
        assert_eq!(
            fs::read_link(dst.join("latest")).unwrap(),
            Path::new("uploads/2026/a.bin")
        );
        assert_eq!(
            fs::read_link(dst.join("outside")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(
            fs::symlink_metadata(dst.join("outside"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("missing")
        );
        assert!(!partial_path(&dst).exists());
    }

    #[tokio::test]
    async fn an_existing_target_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        tree(&src);
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("mine"), "x").unwrap();
        let err = copy_tree(&src, &dst, &Quiet, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(fs::read(dst.join("mine")).unwrap(), b"x");
        let err = copy_tree(
            &src.join("script.sh"),
            &tmp.path().join("x"),
            &Quiet,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[tokio::test]
    async fn a_cancelled_or_failed_copy_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        tree(&src);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = copy_tree(&src, &dst, &Quiet, &cancel).await.unwrap_err();
        assert!(matches!(err, DataError::Cancelled), "{err}");
        assert!(!dst.exists() && !partial_path(&dst).exists());
        // Cancelled in the middle: after the first directory and file chunks.
        for checks in 2..5 {
            let err = copy_tree_blocking(&src, &dst, &offload::cancelling_at(checks)).unwrap_err();
            assert!(matches!(err, DataError::Cancelled), "{err}");
            assert!(!dst.exists() && !partial_path(&dst).exists());
        }

        // A file that cannot be read fails the copy (unless we are root, who reads anything).
        if !nix::unistd::geteuid().is_root() {
            fs::set_permissions(src.join("private/key"), fs::Permissions::from_mode(0o000))
                .unwrap();
            let err = copy_tree(&src, &dst, &Quiet, &CancellationToken::new())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("key"), "{err}");
            assert!(!dst.exists() && !partial_path(&dst).exists());
        }
        // A partial copy a crash left behind is replaced.
        fs::set_permissions(src.join("private/key"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir(partial_path(&dst)).unwrap();
        fs::write(partial_path(&dst).join("stale"), "x").unwrap();
        copy_tree(&src, &dst, &Quiet, &CancellationToken::new())
            .await
            .unwrap();
        assert!(!dst.join("stale").exists() && dst.join("private/key").exists());
    }
}
