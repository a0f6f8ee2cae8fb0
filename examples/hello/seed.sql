-- The demo's seed data (`[data] seed_sql`): every environment below production starts from it,
-- and `turnout data reseed` puts it back. The same file always gives the same data.
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    author TEXT NOT NULL,
    email TEXT NOT NULL,
    text TEXT NOT NULL
);
DELETE FROM notes;
INSERT INTO notes (id, author, email, text) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'Seeded: every test environment starts with these notes.'),
    (2, 'Grace Hopper', 'grace@example.com', 'Try `turnout data reseed hello/staging` after adding a note.'),
    (3, 'Alan Turing', 'alan@example.com', 'Production starts empty; `turnout data sync` brings it down masked.');
