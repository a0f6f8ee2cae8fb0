//! Copying a storage directory.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::{DataError, Progress};

/// Copies the tree at `src` into `dst` (which must not exist), preserving modes and
/// symbolic links (never following them), reflinking files where the filesystem can; bytes are
/// reported as they are copied. Copies into `dst.partial` and renames at the end, so a failure
/// or cancel leaves no `dst`. Returns the bytes copied.
pub async fn copy_tree(
    src: &Path,
    dst: &Path,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<u64, DataError> {
    todo!(
        "{src:?} {dst:?} {:?} {}",
        progress.line(""),
        cancel.is_cancelled()
    )
}
