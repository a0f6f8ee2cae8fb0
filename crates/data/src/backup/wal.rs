//! PostgreSQL's WAL in the repository: each archived segment of a stream (`<env>-g<N>`) stored
//! as content-defined chunks (deduplicated like a snapshot's, checked on every read), with when
//! it was archived; restores stage the segments they need from here.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::Repo;
use super::repo::{self, BATCH_CHUNKS, Put, Reader, sql};
use crate::postgres::backup::WalRange;
use crate::{DataError, files, offload};

/// FastCDC's sizes for WAL segments (16 MiB each, mostly unique, their unused tails zeros).
const CDC: (usize, usize, usize) = (16 << 10, 64 << 10, 256 << 10);

/// A stream's or a segment's name: letters, digits, `.`, `_` and `-`, at most 128 bytes.
fn check_name(what: &str, name: &str) -> Result<(), DataError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "{name:?} is not a valid {what} (letters, digits, '.', '_' and '-', at most 128 bytes)"
        )))
    }
}

impl Repo {
    /// Stores the WAL segment file at `path` as `segment` of `stream` (its archive time the
    /// file's modification time), returning the bytes it added. Storing a segment already
    /// stored with the same bytes adds nothing; with other bytes, it is an error.
    pub async fn put_wal(
        &self,
        stream: &str,
        segment: &str,
        path: &Path,
    ) -> Result<u64, DataError> {
        check_name("WAL stream", stream)?;
        check_name("WAL segment", segment)?;
        let _write = self.lock.lock().await;
        let (dir, stream, segment, path) = (
            self.dir.clone(),
            stream.to_owned(),
            segment.to_owned(),
            path.to_path_buf(),
        );
        offload::blocking(move || {
            let data = fs::read(&path).map_err(DataError::io("reading", &path))?;
            let archived_at = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(DataError::io("reading", &path))?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let (min, avg, max) = CDC;
            let pieces: Vec<&[u8]> = fastcdc::v2020::FastCDC::new(&data, min, avg, max)
                .map(|c| &data[c.offset..c.offset + c.length])
                .collect();
            let ids: Vec<_> = pieces
                .iter()
                .map(|p| *blake3::hash(p).as_bytes())
                .collect();
            let list: Vec<u8> = ids.iter().flatten().copied().collect();
            let mut conn = repo::connect(&dir)?;
            let stored: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT chunks FROM wal WHERE stream = ?1 AND segment = ?2",
                    params![stream, segment],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql)?;
            match stored {
                Some(same) if same == list => return Ok(0),
                Some(_) => {
                    return Err(DataError::Invalid(format!(
                        "WAL segment {segment} of stream {stream} is already in the backup repository with other bytes"
                    )));
                }
                None => {}
            }
            let mut put = Put::default();
            for batch in pieces.chunks(BATCH_CHUNKS) {
                repo::put_batch(&mut conn, batch, &mut put)?;
            }
            conn.execute_batch("PRAGMA synchronous = FULL")
                .map_err(sql)?;
            let tx = conn.transaction().map_err(sql)?;
            tx.execute(
                "INSERT INTO wal (stream, segment, archived_at, size, chunks) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![stream, segment, archived_at, data.len() as i64, list],
            )
            .map_err(sql)?;
            repo::add_refs(&tx, [list.as_slice()], 1)?;
            tx.commit().map_err(sql)?;
            Ok(put.stored_bytes + list.len() as u64)
        })
        .await
    }

    /// Stream `stream`'s segments, in order, with when each was archived (unix seconds).
    pub async fn wal_segments(&self, stream: &str) -> Result<Vec<(String, i64)>, DataError> {
        let (dir, stream) = (self.dir.clone(), stream.to_owned());
        offload::blocking(move || {
            let conn = repo::connect(&dir)?;
            let mut stmt = conn
                .prepare("SELECT segment, archived_at FROM wal WHERE stream = ?1 ORDER BY segment")
                .map_err(sql)?;
            let rows = stmt
                .query_map([stream], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)
        })
        .await
    }

    /// Writes segment `segment` of `stream` as the new file `dest` (through `dest.partial`,
    /// synced), every chunk checked.
    pub async fn restore_wal(
        &self,
        stream: &str,
        segment: &str,
        dest: &Path,
    ) -> Result<(), DataError> {
        let (dir, stream, segment, dest) = (
            self.dir.clone(),
            stream.to_owned(),
            segment.to_owned(),
            dest.to_path_buf(),
        );
        offload::blocking(move || {
            files::refuse_existing(&dest)?;
            let mut conn = repo::connect(&dir)?;
            let tx = conn.transaction().map_err(sql)?;
            let (size, list): (i64, Vec<u8>) = tx
                .query_row(
                    "SELECT size, chunks FROM wal WHERE stream = ?1 AND segment = ?2",
                    params![stream, segment],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sql)?
                .ok_or_else(|| {
                    DataError::Invalid(format!(
                        "WAL segment {segment} of stream {stream} is not in the backup repository"
                    ))
                })?;
            let ids: Vec<_> = repo::ids_of(&list).collect();
            let partial = files::partial_path(&dest);
            files::remove_tree(&partial)?;
            let written = (|| {
                let mut reader =
                    Reader::new(&tx, format!("WAL segment {segment} of stream {stream}"))?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&partial)
                    .map_err(DataError::io("creating", &partial))?;
                let mut n = 0;
                for batch in ids.chunks(BATCH_CHUNKS / 4) {
                    for bytes in reader.get(batch)? {
                        out.write_all(&bytes)
                            .map_err(DataError::io("writing", &partial))?;
                        n += bytes.len() as i64;
                    }
                }
                if n != size {
                    return Err(DataError::Database(format!(
                        "WAL segment {segment} of stream {stream} came out {n} bytes long, not the {size} recorded"
                    )));
                }
                out.sync_all().map_err(DataError::io("syncing", &partial))?;
                fs::rename(&partial, &dest).map_err(DataError::io("renaming into", &dest))
            })();
            if written.is_err() {
                files::remove_tree(&partial)?;
            }
            written
        })
        .await
    }

    pub(crate) async fn wal_range_of(&self, stream: &str) -> Result<Option<WalRange>, DataError> {
        let (dir, stream) = (self.dir.clone(), stream.to_owned());
        offload::blocking(move || {
            let conn = repo::connect(&dir)?;
            let first: Option<String> = conn
                .query_row(
                    "SELECT min(segment) FROM wal WHERE stream = ?1",
                    [&stream],
                    |row| row.get(0),
                )
                .map_err(sql)?;
            let Some(first) = first else {
                return Ok(None);
            };
            let (last, last_archived_at) = conn
                .query_row(
                    "SELECT segment, archived_at FROM wal WHERE stream = ?1 ORDER BY segment DESC LIMIT 1",
                    [&stream],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(sql)?;
            Ok(Some(WalRange {
                first,
                last,
                last_archived_at,
            }))
        })
        .await
    }

    pub(crate) async fn prune_wal_of(
        &self,
        stream: &str,
        keep_from: Option<&str>,
    ) -> Result<u64, DataError> {
        let _write = self.lock.lock().await;
        let (dir, stream, keep_from) = (
            self.dir.clone(),
            stream.to_owned(),
            keep_from.map(str::to_owned),
        );
        offload::blocking(move || {
            let mut conn = repo::connect(&dir)?;
            let tx = conn.transaction().map_err(sql)?;
            let doomed: Vec<(String, Vec<u8>)> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT segment, chunks FROM wal
                         WHERE stream = ?1 AND (?2 IS NULL OR segment < ?2)",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![stream, keep_from], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)?
            };
            for (segment, list) in &doomed {
                repo::add_refs(&tx, [list.as_slice()], -1)?;
                tx.execute(
                    "DELETE FROM wal WHERE stream = ?1 AND segment = ?2",
                    params![stream, segment],
                )
                .map_err(sql)?;
            }
            repo::sweep(&tx)?;
            tx.commit().map_err(sql)?;
            repo::vacuum(&conn)?;
            Ok(doomed.len() as u64)
        })
        .await
    }
}
