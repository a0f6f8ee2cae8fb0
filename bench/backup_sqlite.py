#!/usr/bin/env python3
"""The SQLite backup benchmark's database (bench/run.sh, BENCH_ONLY=backup-sqlite).

  backup_sqlite.py make DB MB   a WAL database of about MB MiB shaped like an app's: a table
                                `notes` (author, e-mail, time, a text of ~60 words from a
                                vocabulary of 4,096), so pages compress as real rows do
"""
import random
import sqlite3
import sys


def words():
    rng = random.Random(7)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 7, 7, 6, 6, 6, 5, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 9))) for _ in range(4096)]


def make(db, mb):
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode = WAL")
    c.execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, author TEXT NOT NULL, email TEXT NOT NULL, "
        "created INTEGER NOT NULL, body TEXT NOT NULL)"
    )
    vocab = words()
    rng = random.Random(11)
    target = int(mb) << 20
    n = 0
    while True:
        rows = []
        for _ in range(20000):
            n += 1
            author = f"{rng.choice(vocab).title()} {rng.choice(vocab).title()}"
            email = f"{rng.choice(vocab)}.{rng.choice(vocab)}{n % 97}@example.com"
            body = " ".join(rng.choices(vocab, k=60))
            rows.append((n, author, email, 1_700_000_000 + n * 7, body))
        c.execute("BEGIN")
        c.executemany("INSERT INTO notes VALUES (?, ?, ?, ?, ?)", rows)
        c.execute("COMMIT")
        pages, size = c.execute("PRAGMA page_count").fetchone()[0], c.execute("PRAGMA page_size").fetchone()[0]
        if pages * size >= target:
            break
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
