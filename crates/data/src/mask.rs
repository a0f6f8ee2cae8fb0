//! Masking rules and deterministic pseudonyms.
//!
//! Rules name tables and columns (`[data.mask.TABLE]` in `turnout.toml`, `COLUMN = "RULE"`,
//! `"*"` for every column the table's other rules do not name). Strict by default: a column
//! the data has and no rule covers fails the sync ([`check_strict`]).
//!
//! Pseudonyms are derived from `d = SHA-256(key ‖ 0x1f ‖ value)` (UTF-8; `key` is the app's
//! masking key, so a pseudonym cannot be reversed by hashing guesses without it), so the same
//! value maps to the same pseudonym in every table and join keys still match. NULL stays NULL.
//! [`pseudonym`] is the definition; `postgres` computes the same in SQL, and a test holds the
//! two equal.

use std::collections::BTreeMap;

/// A kind of fake value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FakeKind {
    Email,
    Name,
    Phone,
    Text,
}

/// What happens to one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskRule {
    /// Copied as is (an explicit decision that the column is not sensitive).
    Keep,
    /// Set to NULL.
    Null,
    /// Replaced by the hex of the first 16 bytes of `d`.
    Hash,
    /// Replaced by a fake value of the kind, picked by `d`.
    Fake(FakeKind),
}

impl std::str::FromStr for MaskRule {
    type Err = String;
    /// `keep`, `null`, `hash`, `fake:email`, `fake:name`, `fake:phone`, `fake:text`.
    fn from_str(s: &str) -> Result<MaskRule, String> {
        todo!("{s}")
    }
}

/// Every table's rules: table → column (or `"*"`) → rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskRules {
    pub tables: BTreeMap<String, BTreeMap<String, MaskRule>>,
}

impl MaskRules {
    /// The rule for one column: its own, else its table's `"*"`, else none (unmasked).
    pub fn rule(&self, table: &str, column: &str) -> Option<MaskRule> {
        let t = self.tables.get(table)?;
        t.get(column).or_else(|| t.get("*")).copied()
    }
}

/// A column the data has and no rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmasked {
    pub table: String,
    pub column: String,
}

/// What masking did: tables and rows changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskReport {
    pub tables: Vec<(String, u64)>,
}

/// Fails with every column of `columns` (table, column) that `rules` does not cover.
pub fn check_strict(rules: &MaskRules, columns: &[(String, String)]) -> Result<(), Vec<Unmasked>> {
    todo!("{rules:?} {columns:?}")
}

/// The error text for unmasked columns: each `table.column`, and how to fix it.
pub fn describe_unmasked(unmasked: &[Unmasked]) -> String {
    todo!("{unmasked:?}")
}

/// The pseudonym of `value` under `rule` (Hash or Fake; Keep returns the value, Null None).
pub fn pseudonym(rule: MaskRule, key: &str, value: &str) -> Option<String> {
    todo!("{rule:?} {key} {value}")
}
