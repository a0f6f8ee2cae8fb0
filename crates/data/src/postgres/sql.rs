//! The SQL Turnout writes: quoting, the masking statements and functions.

use tokio_postgres::Client;

use super::db_error;
use crate::mask::{FIRST_NAMES, LAST_NAMES, WORDS};
use crate::{DataError, FakeKind, MaskRule, MaskRules};

/// One column of a base table.
pub(super) struct TableColumn {
    /// `schema.table`, or `table` in `public`.
    pub(super) table: String,
    pub(super) schema: String,
    pub(super) table_name: String,
    pub(super) column: String,
    /// text, varchar, bpchar, citext: what hash and fake rules apply to.
    pub(super) text_like: bool,
}

pub(super) async fn table_columns(client: &Client) -> Result<Vec<TableColumn>, DataError> {
    let rows = client
        .query(
            "SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.udt_name::text \
             FROM information_schema.columns c JOIN information_schema.tables t \
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE t.table_type = 'BASE TABLE' \
               AND c.table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY c.table_schema, c.table_name, c.ordinal_position",
            &[],
        )
        .await
        .map_err(db_error("listing the database's columns"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let (schema, table_name): (String, String) = (row.get(0), row.get(1));
            let udt: String = row.get(3);
            TableColumn {
                table: if schema == "public" {
                    table_name.clone()
                } else {
                    format!("{schema}.{table_name}")
                },
                schema,
                table_name,
                column: row.get(2),
                text_like: matches!(udt.as_str(), "text" | "varchar" | "bpchar" | "citext"),
            }
        })
        .collect())
}

/// One `UPDATE` per table that has a column to change (`$1` is the masking key), in order.
pub(super) fn mask_updates(
    rules: &MaskRules,
    columns: &[TableColumn],
) -> Result<Vec<(String, String)>, DataError> {
    let mut updates: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String, Vec<String>)> = None;
    let mut flush = |current: &mut Option<(String, String, Vec<String>)>| {
        if let Some((table, target, sets)) = current.take()
            && !sets.is_empty()
        {
            updates.push((table, format!("UPDATE {target} SET {}", sets.join(", "))));
        }
    };
    for c in columns {
        if current
            .as_ref()
            .is_none_or(|(table, _, _)| *table != c.table)
        {
            flush(&mut current);
            current = Some((
                c.table.clone(),
                format!("{}.{}", quote_ident(&c.schema), quote_ident(&c.table_name)),
                Vec::new(),
            ));
        }
        let rule = rules.rule(&c.table, &c.column).unwrap_or(MaskRule::Keep);
        let col = quote_ident(&c.column);
        let value = match rule {
            MaskRule::Keep => continue,
            MaskRule::Null => "NULL".to_owned(),
            MaskRule::Hash | MaskRule::Fake(_) if !c.text_like => {
                return Err(DataError::Invalid(format!(
                    "masking rule for {}.{} replaces it with text, but the column is not text: use \"null\" or \"keep\", or change the column's type",
                    c.table, c.column
                )));
            }
            MaskRule::Hash => format!("pg_temp.turnout_mask_hash($1, {col})"),
            MaskRule::Fake(kind) => {
                format!("pg_temp.turnout_mask_{}($1, {col})", fake_name(kind))
            }
        };
        if let Some((_, _, sets)) = current.as_mut() {
            sets.push(format!("{col} = {value}"));
        }
    }
    flush(&mut current);
    Ok(updates)
}

fn fake_name(kind: FakeKind) -> &'static str {
    match kind {
        FakeKind::Email => "email",
        FakeKind::Name => "name",
        FakeKind::Phone => "phone",
        FakeKind::Text => "text",
    }
}

/// The session's masking functions (in `pg_temp`, gone with the connection): the formula of
/// `mask::pseudonym` in SQL. `d = sha256(convert_to(key || chr(31) || value, 'UTF8'))`;
/// `get_byte(d, i)` is `d[i]`. NULL stays NULL (STRICT).
pub(super) fn mask_functions() -> String {
    let array = |words: &[&str]| {
        let items: Vec<String> = words.iter().map(|w| quote_literal(w)).collect();
        format!("(ARRAY[{}]::text[])", items.join(", "))
    };
    let (first, last, words) = (array(&FIRST_NAMES), array(&LAST_NAMES), array(&WORDS));
    let d = "sha256(convert_to(k || chr(31) || v, 'UTF8'))";
    let define = |name: &str, body: String| {
        format!(
            "CREATE FUNCTION pg_temp.turnout_mask_{name}(k text, v text) RETURNS text \
             LANGUAGE sql IMMUTABLE STRICT AS {};\n",
            quote_literal(&body)
        )
    };
    let mut sql = String::new();
    sql.push_str(&define(
        "hash",
        format!("SELECT encode(substring({d} from 1 for 16), 'hex')"),
    ));
    sql.push_str(&define(
        "email",
        format!(
            "SELECT lower({first}[get_byte(d, 0) % 64 + 1]) || '.' || lower({last}[get_byte(d, 1) % 64 + 1]) \
             || '.' || encode(substring(d from 5 for 2), 'hex') || '@example.invalid' FROM (SELECT {d} AS d) s"
        ),
    ));
    sql.push_str(&define(
        "name",
        format!(
            "SELECT {first}[get_byte(d, 0) % 64 + 1] || ' ' || {last}[get_byte(d, 1) % 64 + 1] FROM (SELECT {d} AS d) s"
        ),
    ));
    sql.push_str(&define(
        "phone",
        format!(
            "SELECT '+1-555-01' || lpad((get_byte(d, 2) % 100)::text, 2, '0') || '-' \
             || lpad((((get_byte(d, 3) << 8) | get_byte(d, 4)) % 10000)::text, 4, '0') FROM (SELECT {d} AS d) s"
        ),
    ));
    // As many words as the value has (runs of characters other than space, tab, LF, CR, FF),
    // from 1 to 16.
    sql.push_str(&define(
        "text",
        format!(
            "SELECT string_agg({words}[get_byte(d, i) % 64 + 1], ' ' ORDER BY i) \
             FROM (SELECT {d} AS d, least(greatest((SELECT count(*) FROM regexp_matches(v, \
             '[^ ' || chr(9) || chr(10) || chr(13) || chr(12) || ']+', 'g')), 1), 16)::int AS n) s, \
             generate_series(0, n - 1) AS i"
        ),
    ));
    sql
}

/// `name` as a PostgreSQL identifier: in double quotes, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a PostgreSQL string literal (standard_conforming_strings, the default since 9.1:
/// backslashes are plain characters): in single quotes, inner quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes all but unreserved characters (and `/` in a path, when `slash` is true).
pub(super) fn percent_encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
        assert_eq!(quote_literal("pw"), "'pw'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "'a\\''b'");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("a b:c@d/e", false), "a%20b%3Ac%40d%2Fe");
        assert_eq!(percent_encode("/run/x y", true), "/run/x%20y");
        assert_eq!(percent_encode("Zz09-._~", false), "Zz09-._~");
    }

    fn column(table: &str, name: &str, text_like: bool) -> TableColumn {
        let (schema, table_name) = table.split_once('.').unwrap_or(("public", table));
        TableColumn {
            table: table.into(),
            schema: schema.into(),
            table_name: table_name.into(),
            column: name.into(),
            text_like,
        }
    }

    #[test]
    fn updates_quote_names_and_refuse_fakes_of_non_text() {
        let mut rules = MaskRules::default();
        let users = rules.tables.entry("users".into()).or_default();
        users.insert("e\"mail".into(), MaskRule::Fake(FakeKind::Email));
        users.insert("*".into(), MaskRule::Keep);
        let audit = rules.tables.entry("log.audit".into()).or_default();
        audit.insert("who".into(), MaskRule::Null);
        audit.insert("id".into(), MaskRule::Keep);
        let cols = vec![
            column("log.audit", "id", false),
            column("log.audit", "who", false),
            column("users", "e\"mail", true),
            column("users", "id", false),
        ];
        let updates = mask_updates(&rules, &cols).unwrap();
        assert_eq!(
            updates,
            [
                ("log.audit".to_owned(), "UPDATE \"log\".\"audit\" SET \"who\" = NULL".to_owned()),
                (
                    "users".to_owned(),
                    "UPDATE \"public\".\"users\" SET \"e\"\"mail\" = pg_temp.turnout_mask_email($1, \"e\"\"mail\")".to_owned()
                ),
            ]
        );
        rules
            .tables
            .get_mut("users")
            .unwrap()
            .insert("id".into(), MaskRule::Hash);
        let err = mask_updates(&rules, &cols).unwrap_err();
        assert!(
            matches!(&err, DataError::Invalid(m) if m.contains("users.id") && m.contains("not text")),
            "{err}"
        );
    }
}
