//! Log files: every line the supervisor writes starts with an RFC 3339 UTC timestamp, instance
//! logs are rotated by size, and tails are read from the end of the file.
//!
//! A log file has exactly one writer ([`LogWriter`]): for a task, the task itself; for an
//! instance, its pump task ([`spawn_pump`]), which reads the app's output pipe and takes the
//! supervisor's marker lines through a channel. One writer is what keeps rotation from losing or
//! reordering lines, and what lets a marker land after the output the app wrote before it.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::SupervisorError;

/// When an instance's log is rotated and how many old files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRotation {
    /// A line that would take the file past this size goes to a fresh file instead.
    pub max_bytes: u64,
    /// How many rotated files (`<name>.1` newest … `<name>.<keep>` oldest) are kept.
    pub keep: usize,
}

impl Default for LogRotation {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// The path of the `generation`-th rotated file of a log: `web.log` → `web.log.1`.
pub fn rotated_log_path(path: &Path, generation: usize) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{generation}"));
    path.with_file_name(name)
}

/// One line of a log file, split into the timestamp the supervisor wrote and the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// E.g. "2026-11-30T05:01:02.123Z"; None for a line written before timestamps existed.
    pub timestamp: Option<&'a str>,
    /// The app's line or a `[turnout]` marker, as written.
    pub text: &'a str,
}

/// Width of [`format_timestamp`]'s output; the separating space follows it.
const TIMESTAMP_LEN: usize = "2026-11-30T05:01:02.123Z".len();

impl<'a> LogLine<'a> {
    /// Splits off a leading timestamp of exactly the form the supervisor writes. Anything else
    /// is all text, so a line from an older log (or an app that prints its own dates) is kept
    /// whole rather than cut in the wrong place.
    pub fn parse(line: &'a str) -> Self {
        const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ ";
        let bytes = line.as_bytes();
        let stamped = bytes.len() >= SHAPE.len()
            && SHAPE.iter().zip(bytes).all(|(&want, &got)| {
                if want == b'd' {
                    got.is_ascii_digit()
                } else {
                    got == want
                }
            });
        if stamped {
            Self {
                timestamp: Some(&line[..TIMESTAMP_LEN]),
                text: &line[SHAPE.len()..],
            }
        } else {
            Self {
                timestamp: None,
                text: line,
            }
        }
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. "2026-11-30T05:01:02.123Z": fixed width, so it sorts
/// as text and [`LogLine::parse`] can find where it ends.
pub(crate) fn format_timestamp(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch). Not worth a date crate for one format.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The only writer of one log file: stamps each line and rotates the file by size.
pub(crate) struct LogWriter {
    path: PathBuf,
    rotation: Option<LogRotation>,
    file: BufWriter<tokio::fs::File>,
    /// Bytes in the current file, including what is still buffered.
    size: u64,
}

impl LogWriter {
    /// Opens the log for appending, creating its directory. Without `rotation` the file only grows.
    pub(crate) async fn open(
        path: &Path,
        rotation: Option<LogRotation>,
    ) -> Result<Self, SupervisorError> {
        let open = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let file = append_to(path).await?;
            let size = file.metadata().await?.len();
            Ok((file, size))
        };
        let (file, size) = open.await.map_err(|source| SupervisorError::Log {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            rotation,
            file: BufWriter::new(file),
            size,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `<timestamp> <text>\n`, first moving to a fresh file if this line would take the
    /// current one past its size limit. Buffered: call [`LogWriter::flush`].
    pub(crate) async fn write_line(&mut self, text: &str) -> std::io::Result<()> {
        let line = format!("{} {text}\n", format_timestamp(SystemTime::now()));
        let len = line.len() as u64;
        if let Some(rotation) = self.rotation
            && self.size > 0
            && self.size + len > rotation.max_bytes
        {
            self.rotate(rotation.keep).await?;
        }
        self.file.write_all(line.as_bytes()).await?;
        self.size += len;
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().await
    }

    /// `<name>.<keep-1>` → `<name>.<keep>` … `<name>` → `<name>.1`, then a fresh `<name>`. The
    /// buffer is flushed first, so every line lands in the file it was written to.
    async fn rotate(&mut self, keep: usize) -> std::io::Result<()> {
        self.file.flush().await?;
        if keep == 0 {
            remove_if_present(&self.path).await?;
        } else {
            for generation in (1..keep).rev() {
                rename_if_present(
                    &rotated_log_path(&self.path, generation),
                    &rotated_log_path(&self.path, generation + 1),
                )
                .await?;
            }
            rename_if_present(&self.path, &rotated_log_path(&self.path, 1)).await?;
        }
        self.file = BufWriter::new(append_to(&self.path).await?);
        self.size = 0;
        Ok(())
    }
}

async fn append_to(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

async fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match tokio::fs::rename(from, to).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A line longer than this is written in pieces, so an app that never prints a newline cannot
/// make the pump hold its output in memory without bound.
const MAX_LINE: usize = 64 * 1024;

/// Splits bytes read from an output pipe into lines, keeping a partial last line for later.
#[derive(Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds `bytes` and returns the complete lines, without their line endings.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            lines.push(text_of(&self.pending[start..start + end]));
            start += end + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE {
            lines.push(text_of(&self.pending[..MAX_LINE]));
            self.pending.drain(..MAX_LINE);
        }
        lines
    }

    /// The partial last line, if any: at end of output, or before a marker that must come after it.
    pub(crate) fn take_partial(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| text_of(&std::mem::take(&mut self.pending)))
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\r')
        .to_owned()
}

/// The most a pipe holds unless raised past Linux's default `/proc/sys/fs/pipe-max-size`.
const PIPE_MAX_BYTES: usize = 1024 * 1024;

type Ack = oneshot::Sender<()>;

enum LogEvent {
    /// Write a `[turnout]` line after all output already in the pipe.
    Marker(String, Ack),
    /// Write all output already in the pipe, then answer.
    Sync(Ack),
    /// Write what is in the pipe and end, even if a process outside the group still holds the
    /// pipe open.
    Close,
}

/// Sends marker lines to an instance's log pump. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LogHandle {
    events: mpsc::UnboundedSender<LogEvent>,
}

impl LogHandle {
    /// Appends `[turnout] <message>` and waits until it is in the file. A pump that has ended
    /// (its instance is gone) drops the line: markers must never disturb the app.
    pub(crate) async fn marker(&self, message: &str) {
        let (ack, written) = oneshot::channel();
        if self
            .events
            .send(LogEvent::Marker(format!("[turnout] {message}"), ack))
            .is_ok()
        {
            let _ = written.await;
        }
    }

    /// Returns once everything the app wrote before this call is in the file, so a tail read
    /// next shows the output that explains an exit.
    pub(crate) async fn sync(&self) {
        let (ack, written) = oneshot::channel();
        if self.events.send(LogEvent::Sync(ack)).is_ok() {
            let _ = written.await;
        }
    }

    /// Asks the pump to write what is left and end; await its join handle to know it has.
    pub(crate) fn close(&self) {
        let _ = self.events.send(LogEvent::Close);
    }
}

/// Starts the task that copies an instance's output pipe into its log, one stamped line at a time.
pub(crate) fn spawn_pump(writer: LogWriter, output: pipe::Receiver) -> (LogHandle, JoinHandle<()>) {
    let (events, receiver) = mpsc::unbounded_channel();
    let pump = Pump {
        writer,
        output,
        lines: LineSplitter::default(),
        buf: vec![0; 64 * 1024],
        failing: false,
    };
    (LogHandle { events }, tokio::spawn(pump.run(receiver)))
}

struct Pump {
    writer: LogWriter,
    output: pipe::Receiver,
    lines: LineSplitter,
    buf: Vec<u8>,
    /// Whether the last write failed; a full disk is reported once, not per line.
    failing: bool,
}

impl Pump {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<LogEvent>) {
        let mut open = true;
        loop {
            tokio::select! {
                read = self.output.read(&mut self.buf), if open => {
                    match read {
                        Ok(n) if n > 0 => {
                            let lines = self.lines.push(&self.buf[..n]);
                            self.write(lines).await;
                            // Flushing once no more output is waiting keeps the file current
                            // without a write per line for chatty apps.
                            self.drain().await;
                        }
                        _ => {
                            open = false;
                            let partial = self.lines.take_partial();
                            self.write(partial).await;
                        }
                    }
                    self.flush().await;
                }
                event = events.recv() => {
                    self.drain().await;
                    match event {
                        Some(LogEvent::Marker(text, ack)) => {
                            let partial = self.lines.take_partial();
                            self.write(partial.into_iter().chain([text])).await;
                            self.flush().await;
                            let _ = ack.send(());
                        }
                        Some(LogEvent::Sync(ack)) => {
                            self.flush().await;
                            let _ = ack.send(());
                        }
                        Some(LogEvent::Close) | None => {
                            let partial = self.lines.take_partial();
                            self.write(partial).await;
                            self.flush().await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Writes the output that can be read without waiting, up to what a pipe can hold: that is
    /// all of what was written before this call, and the bound keeps an app that writes faster
    /// than the log is written from holding a marker (and so a stop) back for ever.
    async fn drain(&mut self) {
        let mut left = PIPE_MAX_BYTES;
        while left > 0 {
            let want = left.min(self.buf.len());
            match self.output.try_read(&mut self.buf[..want]) {
                Ok(n) if n > 0 => {
                    left -= n;
                    let lines = self.lines.push(&self.buf[..n]);
                    self.write(lines).await;
                }
                _ => break,
            }
        }
    }

    async fn write(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            let written = self.writer.write_line(&line).await;
            self.report(written);
        }
    }

    async fn flush(&mut self) {
        let flushed = self.writer.flush().await;
        self.report(flushed);
    }

    fn report(&mut self, outcome: std::io::Result<()>) {
        match outcome {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(log = %self.writer.path().display(), error = %e, "could not write to instance log; dropping output");
            }
            Err(_) => {}
        }
    }
}

/// How far back [`tail_lines`] reads at most, so a file with no line endings cannot make it read
/// hundreds of megabytes; the oldest line it returns may then be cut.
const MAX_TAIL_BYTES: u64 = 8 * 1024 * 1024;

/// The last `n` lines of a log, oldest first, read backwards from the end of the file in blocks.
/// When the file has fewer than `n` lines (it was just rotated) the rest come from `<name>.1`.
/// A missing file has no lines; bytes that are not UTF-8 are replaced.
pub async fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = last_lines(path, n).await;
    if lines.len() < n {
        let mut older = last_lines(&rotated_log_path(path, 1), n - lines.len()).await;
        older.append(&mut lines);
        lines = older;
    }
    lines
}

async fn last_lines(path: &Path, n: usize) -> Vec<String> {
    const BLOCK: u64 = 64 * 1024;
    if n == 0 {
        return Vec::new();
    }
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().await.map(|m| m.len()) else {
        return Vec::new();
    };
    let floor = len.saturating_sub(MAX_TAIL_BYTES);
    let mut start = len;
    // Blocks read so far, newest first, and the line endings in them (not counting one that
    // ends the file).
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    while start > floor && newlines < n {
        let from = start.saturating_sub(BLOCK).max(floor);
        let mut block = vec![0; (start - from) as usize];
        if file.seek(SeekFrom::Start(from)).await.is_err()
            || file.read_exact(&mut block).await.is_err()
        {
            // The file shrank under us (rotated and truncated): use what was read.
            break;
        }
        let counted = if start == len && block.last() == Some(&b'\n') {
            &block[..block.len() - 1]
        } else {
            &block[..]
        };
        newlines += counted.iter().filter(|&&b| b == b'\n').count();
        blocks.push(block);
        start = from;
    }
    let bytes: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // Unless the read reached the start of the file, its first line is only the end of a line.
    if start > 0 && lines.len() > n {
        lines.remove(0);
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}

/// Turns each run of identical consecutive lines into its first line followed by ` … ×N`, so a
/// traceback printed on every retry shows once. Lines are compared without their timestamps.
pub fn collapse_repeats(lines: Vec<String>) -> Vec<String> {
    fn close_run(out: &mut [String], count: usize) {
        if count > 1
            && let Some(last) = out.last_mut()
        {
            last.push_str(&format!(" … ×{count}"));
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut count = 0;
    for line in lines {
        if let Some(last) = out.last()
            && LogLine::parse(last).text == LogLine::parse(&line).text
        {
            count += 1;
            continue;
        }
        close_run(&mut out, count);
        out.push(line);
        count = 1;
    }
    close_run(&mut out, count);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let at = |secs: u64, millis: u64| {
            format_timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_000_000_000, 7), "2001-09-09T01:46:40.007Z");
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(1_796_014_862, 123), "2026-11-30T05:01:02.123Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn parse_splits_only_a_timestamp_of_our_own_form() {
        let stamped = format!("{} hello world", format_timestamp(SystemTime::now()));
        let line = LogLine::parse(&stamped);
        assert_eq!(line.text, "hello world");
        assert_eq!(line.timestamp, Some(&stamped[..TIMESTAMP_LEN]));

        let line = LogLine::parse("2026-11-30T05:01:02.123Z [turnout] healthy");
        assert_eq!(line.timestamp, Some("2026-11-30T05:01:02.123Z"));
        assert_eq!(line.text, "[turnout] healthy");
        assert_eq!(LogLine::parse("2026-11-30T05:01:02.123Z ").text, "");

        for whole in [
            "",
            "plain line",
            "2026-11-30T05:01:02.123Z",
            "2026-11-30 05:01:02.123Z app's own date",
            "2026-11-30T05:01:02Z seconds only",
            "2026-11-30T05:01:02.123+00:00 offset",
            "[turnout] starting",
        ] {
            assert_eq!(
                LogLine::parse(whole),
                LogLine {
                    timestamp: None,
                    text: whole
                },
                "{whole:?}"
            );
        }
    }

    #[test]
    fn collapse_turns_runs_into_one_line_with_a_count() {
        let lines = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut input = lines(&["start"]);
        input.extend(std::iter::repeat_n(
            "Traceback (most recent call last):".to_owned(),
            20,
        ));
        input.extend(lines(&["a", "b", "b", "a"]));
        assert_eq!(
            collapse_repeats(input),
            lines(&[
                "start",
                "Traceback (most recent call last): … ×20",
                "a",
                "b … ×2",
                "a"
            ])
        );
        assert_eq!(collapse_repeats(Vec::new()), Vec::<String>::new());
        assert_eq!(
            collapse_repeats(lines(&[
                "2026-11-30T05:01:02.123Z retrying",
                "2026-11-30T05:01:03.456Z retrying",
                "2026-11-30T05:01:04.789Z retrying",
                "retrying",
            ])),
            lines(&["2026-11-30T05:01:02.123Z retrying … ×4"])
        );
    }

    #[test]
    fn splitter_keeps_partial_lines_and_bounds_long_ones() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"one\ntw"), ["one"]);
        assert_eq!(lines.push(b"o\r\n\nthree"), ["two", ""]);
        assert_eq!(lines.take_partial().as_deref(), Some("three"));
        assert_eq!(lines.take_partial(), None);
        let long = vec![b'x'; MAX_LINE + 10];
        let pieces = lines.push(&long);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].len(), MAX_LINE);
        assert_eq!(lines.take_partial().map(|s| s.len()), Some(10));
    }

    #[test]
    fn rotated_paths_append_the_generation() {
        assert_eq!(
            rotated_log_path(Path::new("/var/logs/release-7.log"), 2),
            Path::new("/var/logs/release-7.log.2")
        );
    }
}
