#!/usr/bin/env python3
"""The SQLite clone benchmark (bench/run.sh, BENCH_ONLY=data-sqlite).

  data_sqlite.py make DB MB                  a WAL database of about MB MiB (two tables and a total)
  data_sqlite.py write DB STATS              commit forever (one row in each table and the total per
                                             commit); on SIGTERM write each commit's end time and
                                             latency to STATS
  data_sqlite.py run DB COPIER REPS LABEL OUT   REPS times each: `cp` of the idle database, Turnout's
                                             copy (COPIER DB DST) and its backup-API fallback while a
                                             writer process commits; checks every copy is one commit;
                                             writes the figures as JSON to OUT
  data_sqlite.py report JSON... MD           the Markdown table of one or more `run` outputs
"""
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

ROW = 1000  # bytes of random padding per row


def connect(db):
    c = sqlite3.connect(db, isolation_level=None, timeout=30)
    c.execute("PRAGMA journal_mode = WAL")
    return c


def make(db, mb):
    c = connect(db)
    c.executescript(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);"
        "CREATE TABLE b (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);"
        "CREATE TABLE total (n INTEGER NOT NULL); INSERT INTO total VALUES (0);"
    )
    rows = int(mb) * (1 << 20) // (2 * (ROW + 40))
    batch = 20000
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        c.executescript(
            f"BEGIN; WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
            f"INSERT INTO a (pad) SELECT randomblob({ROW}) FROM s; "
            f"INSERT INTO b (pad) SELECT randomblob({ROW}) FROM a WHERE id > {start}; "
            f"UPDATE total SET n = n + {n}; COMMIT;"
        )
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def write(db, stats):
    c = connect(db)
    c.execute("PRAGMA synchronous = NORMAL")
    done = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    pad = os.urandom(ROW)
    while not stop:
        t0 = time.monotonic()
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO a (pad) VALUES (?)", (pad,))
        c.execute("INSERT INTO b (pad) VALUES (?)", (pad,))
        c.execute("UPDATE total SET n = n + 1")
        c.execute("COMMIT")
        t1 = time.monotonic()
        done.append((t1, t1 - t0))
        if len(done) == 50:
            print("ready", flush=True)
    c.close()
    with open(stats, "w") as f:
        json.dump(done, f)


def consistent(db):
    """The copy is one commit: both tables and the total agree (max(id) is a b-tree lookup)."""
    c = sqlite3.connect(db)
    a = c.execute("SELECT max(id) FROM a").fetchone()[0]
    b = c.execute("SELECT max(id) FROM b").fetchone()[0]
    n = c.execute("SELECT n FROM total").fetchone()[0]
    mode = c.execute("PRAGMA journal_mode").fetchone()[0]
    c.close()
    if not (a == b == n) or mode != "wal":
        sys.exit(f"error: the copy {db} is not one commit: a={a} b={b} total={n} mode={mode}")
    return n


def timed(cmd):
    t0 = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - t0, out


def under_writes(db, cmd, stats):
    writer = subprocess.Popen(
        [sys.executable, __file__, "write", db, stats], stdout=subprocess.PIPE, text=True
    )
    if writer.stdout.readline().strip() != "ready":
        sys.exit("error: the writer did not start")
    t0 = time.monotonic()
    secs, out = timed(cmd)
    t1 = time.monotonic()
    time.sleep(0.2)
    writer.send_signal(signal.SIGTERM)
    writer.wait(30)
    commits = [lat for end, lat in json.load(open(stats)) if t0 <= end <= t1]
    after = [end for end, _ in json.load(open(stats)) if end > t1]
    if not commits or not after:
        sys.exit("error: the writer made no commits during or after the copy")
    return secs, out, len(commits), max(commits)


def run(db, copier, reps, label, out):
    reps = int(reps)
    work = os.path.dirname(os.path.abspath(db))
    dst = os.path.join(work, "copy.sqlite")
    stats = os.path.join(work, "writer.json")
    size = os.path.getsize(db)
    rows = {"label": label, "bytes": size, "cp": [], "cp_sync": [], "turnout": [], "backup": [],
            "writer": []}
    for _ in range(reps):
        c = connect(db)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        secs, _ = timed(["cp", db, dst])
        rows["cp"].append(secs)
        os.remove(dst)
        # As durable as Turnout's copy, which syncs the file before renaming it into place.
        secs, _ = timed(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", db, dst])
        rows["cp_sync"].append(secs)
        os.remove(dst)
        for method in ("turnout", "backup"):
            cmd = [copier, db, dst] + (["backup"] if method == "backup" else [])
            secs, printed, commits, longest = under_writes(db, cmd, stats)
            consistent(dst)
            rows[method].append(secs)
            rows["writer"].append(
                {"method": method, "commits": commits, "longest_ms": longest * 1000,
                 "copied": int(printed.split()[1])}
            )
            os.remove(dst)
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)


def report(paths, md):
    lines = [
        "| filesystem | database | `cp` (idle) | `cp` + `sync` (idle) | Turnout `copy_to` under writes | ÷ `cp` | ÷ `cp` + `sync` | backup API under writes | writer during Turnout's copies: commits, longest commit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in paths:
        r = json.load(open(p))
        cp, cps, t, b = (statistics.median(r[k]) for k in ("cp", "cp_sync", "turnout", "backup"))
        ws = [w for w in r["writer"] if w["method"] == "turnout"]
        lines.append(
            f"| {r['label']} | {r['bytes'] / (1 << 30):.2f} GiB | {cp:.2f} s | {cps:.2f} s | {t:.2f} s "
            f"| {t / cp:.2f}× | {t / cps:.2f}× "
            f"| {b:.2f} s | {sum(w['commits'] for w in ws)} in {len(ws)} copies, {max(w['longest_ms'] for w in ws):.0f} ms |"
        )
    runs = ", ".join(str(len(json.load(open(p))["cp"])) for p in paths)
    lines.append("")
    lines.append(f"Medians of {runs} runs per cell. Every copy checked to be one commit and in WAL mode.")
    open(md, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "report":
        report(args[:-1], args[-1])
    else:
        {"make": make, "write": write, "run": run}[cmd](*args)
