//! SQLite snapshots: a consistent copy of the database (under a read transaction, as a clone
//! copies) into the repository's scratch directory, stored page by page (`db`), and the
//! storage directory by content-defined chunks (`storage/…`); restores write both back.

use std::io::Read;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::repo::{self, sql};
use super::{Chunking, Repo, SnapshotStats, check_name, tree};
use crate::offload::{self, Reporter};
use crate::sqlite::{self as engine, CopyMethod, SqliteDb};
use crate::{DataError, Progress, files};

/// The snapshot's database file and storage directory in its manifest.
const DB: &str = "db";
const STORAGE: &str = "storage";

pub(super) async fn snapshot(
    repo: &Repo,
    name: &str,
    db: &SqliteDb,
    storage: &Path,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<SnapshotStats, DataError> {
    check_name(name)?;
    let mut writer = repo.writer(name).await?;
    let scratch = repo.dir.join("tmp").join(format!("{name}.sqlite"));
    progress.line(&format!("copying {} as of now", db.path().display()));
    let (src, dst) = (db.path().to_path_buf(), scratch.clone());
    let copied = offload::run(progress, cancel, move |r| {
        engine::remove_files(&dst)?;
        engine::copy_blocking(&src, &dst, CopyMethod::Auto, false, r)
    })
    .await;
    let stored = match copied {
        Ok(_) => {
            progress.line("storing its pages");
            match page_size(&scratch) {
                Ok(page) => {
                    writer
                        .add_file(DB, &scratch, Chunking::Fixed(page), progress, cancel)
                        .await
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let removed = offload::blocking(move || engine::remove_files(&scratch)).await;
    stored?;
    removed?;
    if std::fs::symlink_metadata(storage).is_ok_and(|m| m.is_dir()) {
        progress.line(&format!("storing {}", storage.display()));
        writer
            .add_tree(STORAGE, storage, Chunking::Content, progress, cancel)
            .await?;
    }
    writer.set_meta("engine", "sqlite");
    writer.commit().await
}

/// The page size in a SQLite database file's header.
fn page_size(path: &Path) -> Result<u32, DataError> {
    let mut header = [0u8; 100];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(DataError::io("reading", path))?;
    let size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u32::from(n),
    };
    if !header.starts_with(b"SQLite format 3\0") || !size.is_power_of_two() || size < 512 {
        return Err(DataError::Database(format!(
            "{} is not a SQLite database",
            path.display()
        )));
    }
    Ok(size)
}

pub(super) fn restore(
    dir: &Path,
    name: &str,
    to: &Path,
    storage: &Path,
    r: &Reporter,
) -> Result<(), DataError> {
    files::refuse_existing(to)?;
    files::refuse_existing(storage)?;
    let mut conn = repo::connect(dir)?;
    // One read of the repository: a delete running alongside cannot take chunks away.
    let tx = conn.transaction().map_err(sql)?;
    let manifest = tree::manifest_id(&tx, name)?;
    let partial = files::partial_path(to);
    engine::remove_files(&partial)?;
    let mut storage_made = false;
    let restored = (|| {
        tree::write_file(&tx, name, manifest, DB, &partial, r, &mut 0, None)?;
        if tree::holds(&tx, manifest, STORAGE)? {
            tree::restore_tree(&tx, name, STORAGE, storage, r)?;
        } else {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(storage)
                .map_err(DataError::io("creating", storage))?;
        }
        storage_made = true;
        r.check()?;
        std::fs::rename(&partial, to).map_err(DataError::io("renaming into", to))?;
        files::sync_parent(to)
    })();
    if restored.is_err() {
        engine::remove_files(&partial)?;
        if storage_made {
            files::remove_tree(storage)?;
            engine::remove_files(to)?;
        }
    }
    restored
}
