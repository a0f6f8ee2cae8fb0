"""The demo app's schema, brought up to date before each release starts (`[data] migrate`)."""
import os
import sqlite3

with sqlite3.connect(os.environ["TURNOUT_SQLITE_PATH"]) as conn:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS notes (
            id INTEGER PRIMARY KEY,
            author TEXT NOT NULL,
            email TEXT NOT NULL,
            text TEXT NOT NULL
        )"""
    )
