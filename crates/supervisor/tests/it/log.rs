use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use turnout_supervisor::{
    Instance, LogLine, LogRotation, SupervisorError, rotated_log_path, tail_lines,
};

use crate::support::Fixture;

/// The text of every line of a log and its rotated files, oldest first, and how many files.
fn all_lines(path: &Path) -> (Vec<String>, usize) {
    let mut files = Vec::new();
    let mut generation = 1;
    while rotated_log_path(path, generation).exists() {
        files.push(rotated_log_path(path, generation));
        generation += 1;
    }
    files.reverse();
    files.push(path.to_owned());
    let mut lines = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let parsed = LogLine::parse(line);
            assert!(parsed.timestamp.is_some(), "unstamped line {line:?}");
            lines.push(parsed.text.to_owned());
        }
    }
    (lines, files.len())
}

fn numbered(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("line-")?.parse().ok())
        .collect()
}

#[tokio::test]
async fn instance_output_and_markers_are_stamped_in_order() {
    let fx = Fixture::new();
    let spec = fx.spec(
        "echo out1; echo err1 >&2; echo out2; exec python3 server.py",
        &[],
    );
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    instance.stop().await;

    let log = fx.log();
    let stamps: Vec<&str> = log
        .lines()
        .map(|line| LogLine::parse(line).timestamp.expect(line))
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "timestamps go backwards:\n{log}");
    let texts: Vec<&str> = log.lines().map(|line| LogLine::parse(line).text).collect();
    assert!(
        texts[0].starts_with("[turnout] starting `echo out1;"),
        "{log}"
    );
    assert_eq!(&texts[1..4], ["out1", "err1", "out2"], "{log}");
    assert!(texts.contains(&"[turnout] healthy"), "{log}");
    assert!(
        texts.last().unwrap().starts_with("[turnout] stopped ("),
        "{log}"
    );
}

#[tokio::test]
async fn rotation_loses_and_reorders_nothing() {
    let fx = Fixture::new();
    let mut spec = fx.spec("seq -f line-%g 1 3000; exec python3 server.py", &[]);
    spec.log_rotation = LogRotation {
        max_bytes: 4096,
        keep: 1000,
    };
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    instance.stop().await;

    let (lines, files) = all_lines(&fx.log_path());
    assert_eq!(numbered(&lines), (1..=3000).collect::<Vec<_>>());
    assert!(files > 10, "only {files} files");
    for generation in 1..files {
        let len = std::fs::metadata(rotated_log_path(&fx.log_path(), generation))
            .unwrap()
            .len();
        assert!(len <= 4096, "rotated file {generation} has {len} bytes");
    }
}

#[tokio::test]
async fn rotation_keeps_only_the_newest_files() {
    let fx = Fixture::new();
    let mut spec = fx.spec("seq -f line-%g 1 3000; exec python3 server.py", &[]);
    spec.log_rotation = LogRotation {
        max_bytes: 4096,
        keep: 2,
    };
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    instance.stop().await;

    assert!(rotated_log_path(&fx.log_path(), 2).exists());
    assert!(!rotated_log_path(&fx.log_path(), 3).exists());
    let (lines, files) = all_lines(&fx.log_path());
    assert_eq!(files, 3);
    let kept = numbered(&lines);
    assert_eq!(kept.last(), Some(&3000));
    let first = kept[0];
    assert!(first > 1, "old lines were not dropped");
    assert_eq!(kept, (first..=3000).collect::<Vec<_>>());
}

#[tokio::test]
async fn tail_lines_reads_across_blocks_and_into_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.log");
    // About 170 KB: the tail crosses the 64 KiB blocks it reads backwards in.
    let all: Vec<String> = (1..=15_000).map(|i| format!("line-{i}")).collect();
    std::fs::write(&path, all.join("\n") + "\n").unwrap();
    for n in [0, 1, 2, 5_000, 14_999, 15_000, 20_000] {
        let from = all.len().saturating_sub(n);
        assert_eq!(tail_lines(&path, n).await, all[from..], "last {n} lines");
    }

    std::fs::rename(&path, rotated_log_path(&path, 1)).unwrap();
    std::fs::write(&path, "new-1\nnew-2 without newline").unwrap();
    assert_eq!(
        tail_lines(&path, 4).await,
        ["line-14999", "line-15000", "new-1", "new-2 without newline"]
    );
    assert_eq!(tail_lines(&path, 1).await, ["new-2 without newline"]);
    assert!(
        tail_lines(&dir.path().join("missing.log"), 3)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn tail_lines_does_not_read_a_huge_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.log");
    // A sparse 4 GiB file: reading it whole would take seconds and gigabytes of memory.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(4 << 30).unwrap();
    drop(file);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"\nfirst\nsecond\nthird\n").unwrap();
    let started = Instant::now();
    assert_eq!(tail_lines(&path, 2).await, ["second", "third"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failed_health_check_shows_a_repeated_line_once() {
    let fx = Fixture::new();
    let mut spec = fx.spec(
        "for i in $(seq 1 30); do echo 'Traceback: database is down'; done; echo giving up; exec sleep 60",
        &[],
    );
    spec.health.timeout = Duration::from_millis(500);
    let instance = Instance::start(spec).await.unwrap();
    let err = instance.wait_healthy().await.unwrap_err();
    instance.stop().await;
    assert!(
        matches!(err, SupervisorError::NeverHealthy { .. }),
        "{err:?}"
    );
    let tail: Vec<&str> = err.log_tail().unwrap().lines().collect();
    assert_eq!(
        &tail[tail.len() - 2..],
        ["Traceback: database is down … ×30", "giving up"],
        "{tail:?}"
    );
    assert!(tail[0].starts_with("[turnout] starting"), "{tail:?}");
}

#[tokio::test]
async fn an_app_that_never_stops_writing_can_still_be_stopped() {
    let fx = Fixture::new();
    let mut spec = fx.spec("yes spam & exec python3 server.py", &[]);
    spec.log_rotation = LogRotation {
        max_bytes: 1 << 20,
        keep: 1,
    };
    let instance = Instance::start(spec).await.unwrap();
    let limit = Duration::from_secs(20);
    tokio::time::timeout(limit, instance.wait_healthy())
        .await
        .expect("the healthy marker waited for output that never ends")
        .unwrap();
    tokio::time::timeout(limit, instance.stop())
        .await
        .expect("stop waited for output that never ends");
    let (lines, _) = all_lines(&fx.log_path());
    assert!(lines.iter().any(|line| line == "spam"));
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("[turnout] stopped ("))
    );
}
