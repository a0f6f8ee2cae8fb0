-- HTTPS per domain: its settings (with the domain), and its certificate's metadata and ACME
-- renewal state. The certificate and key themselves are files in the home
-- (`<home>/certs/<domain>/fullchain.pem`, `key.pem`), never rows.
ALTER TABLE domains ADD COLUMN tls_mode TEXT NOT NULL DEFAULT 'off'
    CHECK (tls_mode IN ('off', 'acme', 'manual'));
-- Plain-HTTP requests get a 308 to https:// once a certificate is served.
ALTER TABLE domains ADD COLUMN tls_redirect INTEGER NOT NULL DEFAULT 1;
-- Strict-Transport-Security max-age in seconds; NULL sends none.
ALTER TABLE domains ADD COLUMN tls_hsts_max_age INTEGER;
ALTER TABLE domains ADD COLUMN tls_challenge TEXT NOT NULL DEFAULT 'http-01'
    CHECK (tls_challenge IN ('http-01', 'tls-alpn-01'));

-- One per domain that has a certificate or waits for its first ACME one (then the
-- certificate's columns are NULL). Times are unix seconds.
CREATE TABLE certificates (
    domain_id    INTEGER PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    source       TEXT    NOT NULL CHECK (source IN ('acme', 'manual')),
    issuer       TEXT,
    -- The names it covers (subjectAltNames), one a line.
    names        TEXT    NOT NULL DEFAULT '',
    serial       TEXT,
    not_before   INTEGER,
    not_after    INTEGER,
    -- ACME: the last failed order's error until one succeeds, failures in a row, and when the
    -- next order is due after a failure (or was asked for by `cert renew`).
    last_error   TEXT,
    failures     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER,
    updated_at   INTEGER NOT NULL
);
