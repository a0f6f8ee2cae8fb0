//! Queries for HTTPS: each domain's TLS settings (columns of `domains`) and its certificate's
//! metadata and ACME renewal state (`certificates`). Changes run inside `Store::mutate` (with
//! their audit entry).
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{CertSource, DomainName, TlsSettings};

use super::{Tx, parse_text};
use crate::error::ControlError;
use crate::tls::check::CertMeta;

/// One row of `certificates`, with its domain's name.
#[derive(Debug, Clone)]
pub struct CertRow {
    pub domain_id: i64,
    pub domain: DomainName,
    pub source: CertSource,
    /// None until the first certificate (an ACME domain waiting for its first order).
    pub meta: Option<CertMeta>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub next_attempt: Option<i64>,
}

const CERT_COLS: &str = "c.domain_id, d.name, c.source, c.issuer, c.names, c.serial, \
     c.not_before, c.not_after, c.last_error, c.failures, c.next_attempt";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRow> {
    let issuer: Option<String> = r.get(3)?;
    let names: String = r.get(4)?;
    let serial: Option<String> = r.get(5)?;
    let (not_before, not_after): (Option<i64>, Option<i64>) = (r.get(6)?, r.get(7)?);
    let meta = match (issuer, serial, not_before, not_after) {
        (Some(issuer), Some(serial), Some(not_before), Some(not_after)) => Some(CertMeta {
            issuer,
            names: names.lines().map(str::to_owned).collect(),
            serial,
            not_before,
            not_after,
        }),
        _ => None,
    };
    Ok(CertRow {
        domain_id: r.get(0)?,
        domain: r.get::<_, String>(1)?.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        source: parse_text(2, r.get(2)?)?,
        meta,
        last_error: r.get(8)?,
        failures: r.get(9)?,
        next_attempt: r.get(10)?,
    })
}

/// Every domain's certificate row.
pub fn list_certs(c: &Connection) -> Result<Vec<CertRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {CERT_COLS} FROM certificates c JOIN domains d ON d.id = c.domain_id ORDER BY d.name"
    ))?;
    let rows = stmt.query_map([], cert_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The certificate rows of those of the domains `ids` that have one, in one statement.
pub fn certs_of(c: &Connection, ids: &[i64]) -> Result<Vec<CertRow>, ControlError> {
    let ids = serde_json::to_string(ids).map_err(|e| ControlError::internal(e.to_string()))?;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {CERT_COLS} FROM certificates c JOIN domains d ON d.id = c.domain_id \
         WHERE c.domain_id IN (SELECT value FROM json_each(?1))"
    ))?;
    let rows = stmt.query_map([ids], cert_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn get_cert(c: &Connection, domain_id: i64) -> Result<Option<CertRow>, ControlError> {
    Ok(c.query_row(
        &format!(
            "SELECT {CERT_COLS} FROM certificates c JOIN domains d ON d.id = c.domain_id WHERE c.domain_id = ?1"
        ),
        [domain_id],
        cert_row,
    )
    .optional()?)
}

pub fn set_settings(tx: &Tx<'_>, domain_id: i64, tls: &TlsSettings) -> Result<(), ControlError> {
    tx.execute(
        "UPDATE domains SET tls_mode = ?2, tls_redirect = ?3, tls_hsts_max_age = ?4, tls_challenge = ?5 WHERE id = ?1",
        params![
            domain_id,
            tls.mode.as_str(),
            tls.redirect,
            tls.hsts_max_age.map(|s| s as i64),
            tls.challenge.as_str()
        ],
    )?;
    Ok(())
}

/// Record a certificate now in the domain's files: its metadata, and a clean renewal state.
pub fn put_cert(
    tx: &Tx<'_>,
    domain_id: i64,
    source: CertSource,
    meta: &CertMeta,
    now: i64,
) -> Result<(), ControlError> {
    tx.execute(
        "INSERT INTO certificates (domain_id, source, issuer, names, serial, not_before, not_after, \
         last_error, failures, next_attempt, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 0, NULL, ?8) \
         ON CONFLICT (domain_id) DO UPDATE SET source = ?2, issuer = ?3, names = ?4, serial = ?5, \
         not_before = ?6, not_after = ?7, last_error = NULL, failures = 0, next_attempt = NULL, \
         updated_at = ?8",
        params![
            domain_id,
            source.as_str(),
            meta.issuer,
            meta.names.join("\n"),
            meta.serial,
            meta.not_before,
            meta.not_after,
            now
        ],
    )?;
    Ok(())
}

/// A failed ACME order: its error, one more failure, and when to try again. Returns the
/// failures in a row.
pub fn record_failure(
    tx: &Tx<'_>,
    domain_id: i64,
    error: &str,
    next_attempt: impl FnOnce(u32) -> i64,
    now: i64,
) -> Result<u32, ControlError> {
    let failures: u32 = tx
        .query_row(
            "SELECT failures FROM certificates WHERE domain_id = ?1",
            [domain_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0)
        + 1;
    tx.execute(
        "INSERT INTO certificates (domain_id, source, last_error, failures, next_attempt, updated_at) \
         VALUES (?1, 'acme', ?2, ?3, ?4, ?5) \
         ON CONFLICT (domain_id) DO UPDATE SET last_error = ?2, failures = ?3, next_attempt = ?4, \
         updated_at = ?5",
        params![domain_id, error, failures, next_attempt(failures), now],
    )?;
    Ok(failures)
}

/// Order the domain's certificate at `at` (`cert renew`), whatever its expiry.
pub fn request_order(tx: &Tx<'_>, domain_id: i64, at: i64) -> Result<(), ControlError> {
    tx.execute(
        "INSERT INTO certificates (domain_id, source, next_attempt, updated_at) VALUES (?1, 'acme', ?2, ?2) \
         ON CONFLICT (domain_id) DO UPDATE SET next_attempt = ?2, updated_at = ?2",
        params![domain_id, at],
    )?;
    Ok(())
}

pub fn delete_cert(tx: &Tx<'_>, domain_id: i64) -> Result<bool, ControlError> {
    Ok(tx.execute("DELETE FROM certificates WHERE domain_id = ?1", [domain_id])? > 0)
}
