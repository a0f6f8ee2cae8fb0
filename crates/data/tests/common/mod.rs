//! What the PostgreSQL test binaries share: a temporary directory clusters can live in, and
//! secrets no one could guess or type in a shell without quoting.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary directory the `postgres` user can traverse (as root, clusters run as it). When
/// a test fails before removing its clusters, dropping it stops their servers (immediate
/// shutdown, by the pid in `postmaster.pid`) so none outlives the test.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Ok(clusters) = std::fs::read_dir(self.path().join("pg")) else {
            return;
        };
        for cluster in clusters.flatten() {
            let pid = std::fs::read_to_string(cluster.path().join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
        }
    }
}

pub fn tempdir() -> TestDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    TestDir(dir)
}

pub fn secret(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}-{}-{}-'q\"",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
