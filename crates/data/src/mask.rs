//! Masking rules and deterministic pseudonyms.
//!
//! Rules name tables and columns (`[data.mask.TABLE]` in `turnout.toml`, `COLUMN = "RULE"`,
//! `"*"` for every column the table's other rules do not name). Strict by default: a column
//! the data has and no rule covers fails the sync ([`check_strict`]).
//!
//! Pseudonyms are derived from `d = SHA-256(key ‖ 0x1f ‖ value)` (`key` as UTF-8 bytes, then one
//! byte 0x1f, then the value as text: a text value's bytes, a number's decimal text — what a
//! cast to text gives; `key` is the app's masking key, so a pseudonym cannot be reversed by
//! hashing guesses without it), so the same value maps to the same pseudonym in every table and
//! join keys still match. NULL stays NULL. `d[i]` is byte `i` of the digest (0-based; SQL's
//! `get_byte(d, i)`). [`pseudonym`] is the definition; `postgres` computes the same in SQL, and
//! a test holds the two equal:
//!
//! - `hash`: the lowercase hex of `d[0..16]` (32 characters; SQL
//!   `encode(substring(d from 1 for 16), 'hex')`).
//! - `fake:name`: `FIRST LAST` with `FIRST = FIRST_NAMES[d[0] % 64]` and
//!   `LAST = LAST_NAMES[d[1] % 64]` ([`FIRST_NAMES`], [`LAST_NAMES`]; ASCII letters only).
//! - `fake:email`: `first.last.HHHH@example.invalid`: the same two names lowercased and
//!   `HHHH` the lowercase hex of `d[4..6]` (SQL `encode(substring(d from 5 for 2), 'hex')`).
//! - `fake:phone`: `+1-555-01AA-BBBB` with `AA = d[2] % 100` as two decimal digits and
//!   `BBBB = (d[3] * 256 + d[4]) % 10000` as four, both zero-padded.
//! - `fake:text`: `n` words joined by single spaces, word `i` (0 ≤ i < n) being
//!   `WORDS[d[i] % 64]` ([`WORDS`]), where `n` is the number of words of the value — maximal
//!   runs of bytes other than space, tab, LF, CR and form feed (0x20, 0x09, 0x0a, 0x0d, 0x0c;
//!   SQL: `count(*) FROM regexp_matches(v, E'[^ \\t\\n\\r\\f]+', 'g')`) — clamped to 1..=16.
//! - `keep` leaves the value as it is; `null` makes it NULL.
//!
//! The three lists are exported so that the SQL side builds its `ARRAY[...]` literals from the
//! very same words (SQL arrays are 1-based: `(ARRAY[...])[get_byte(d, 0) % 64 + 1]`).

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

/// The accepted spellings of a rule, for error messages.
pub const RULE_FORMS: &str =
    "\"keep\", \"null\", \"hash\", \"fake:email\", \"fake:name\", \"fake:phone\" or \"fake:text\"";

impl std::str::FromStr for MaskRule {
    type Err = String;
    /// `keep`, `null`, `hash`, `fake:email`, `fake:name`, `fake:phone`, `fake:text`.
    fn from_str(s: &str) -> Result<MaskRule, String> {
        Ok(match s {
            "keep" => MaskRule::Keep,
            "null" => MaskRule::Null,
            "hash" => MaskRule::Hash,
            "fake:email" => MaskRule::Fake(FakeKind::Email),
            "fake:name" => MaskRule::Fake(FakeKind::Name),
            "fake:phone" => MaskRule::Fake(FakeKind::Phone),
            "fake:text" => MaskRule::Fake(FakeKind::Text),
            other => {
                return Err(format!(
                    "unknown masking rule {:?}: use {RULE_FORMS}",
                    other.chars().take(64).collect::<String>()
                ));
            }
        })
    }
}

impl MaskRule {
    /// The rule as `turnout.toml` spells it (what [`str::parse`] reads back).
    pub fn as_str(self) -> &'static str {
        match self {
            MaskRule::Keep => "keep",
            MaskRule::Null => "null",
            MaskRule::Hash => "hash",
            MaskRule::Fake(FakeKind::Email) => "fake:email",
            MaskRule::Fake(FakeKind::Name) => "fake:name",
            MaskRule::Fake(FakeKind::Phone) => "fake:phone",
            MaskRule::Fake(FakeKind::Text) => "fake:text",
        }
    }
}

impl std::fmt::Display for MaskRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for MaskRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MaskRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MaskRule, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Every table's rules: table → column (or `"*"`) → rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
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

/// Fails with every column of `columns` (table, column) that `rules` does not cover, sorted by
/// table then column, each once.
pub fn check_strict(rules: &MaskRules, columns: &[(String, String)]) -> Result<(), Vec<Unmasked>> {
    let mut unmasked: Vec<Unmasked> = columns
        .iter()
        .filter(|(table, column)| rules.rule(table, column).is_none())
        .map(|(table, column)| Unmasked {
            table: table.clone(),
            column: column.clone(),
        })
        .collect();
    if unmasked.is_empty() {
        return Ok(());
    }
    unmasked.sort_by(|a, b| (&a.table, &a.column).cmp(&(&b.table, &b.column)));
    unmasked.dedup();
    Err(unmasked)
}

/// How many unmasked columns an error names before it says "and N more".
const LISTED: usize = 50;

/// The error text for unmasked columns: each `table.column`, and how to fix it.
pub fn describe_unmasked(unmasked: &[Unmasked]) -> String {
    let mut names: Vec<String> = unmasked
        .iter()
        .take(LISTED)
        .map(|u| format!("{}.{}", u.table, u.column))
        .collect();
    if unmasked.len() > LISTED {
        names.push(format!("and {} more", unmasked.len() - LISTED));
    }
    let (table, column) = unmasked.first().map_or(("TABLE", "COLUMN"), |u| {
        (u.table.as_str(), u.column.as_str())
    });
    format!(
        "masking is strict and no rule covers {} column{}: {}; add a rule for each under [data.mask.TABLE] in turnout.toml, e.g. [data.mask.{table}] {column} = \"keep\" (rules: {RULE_FORMS}; \"*\" covers the table's other columns)",
        unmasked.len(),
        if unmasked.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

/// The pseudonym of `value` under `rule` (Hash or Fake; Keep returns the value, Null None).
pub fn pseudonym(rule: MaskRule, key: &str, value: &str) -> Option<String> {
    match rule {
        MaskRule::Keep => Some(value.to_owned()),
        other => pseudonym_of_bytes(other, key, value.as_bytes()),
    }
}

/// [`pseudonym`] of a value's bytes (a SQLite value cast to text need not be UTF-8).
pub(crate) fn pseudonym_of_bytes(rule: MaskRule, key: &str, value: &[u8]) -> Option<String> {
    let fake = match rule {
        MaskRule::Keep => return Some(String::from_utf8_lossy(value).into_owned()),
        MaskRule::Null => return None,
        MaskRule::Hash => return Some(hex(&digest(key, value)[..16])),
        MaskRule::Fake(kind) => kind,
    };
    let d = digest(key, value);
    let first = FIRST_NAMES[usize::from(d[0] % 64)];
    let last = LAST_NAMES[usize::from(d[1] % 64)];
    Some(match fake {
        FakeKind::Email => format!(
            "{}.{}.{}@example.invalid",
            first.to_lowercase(),
            last.to_lowercase(),
            hex(&d[4..6])
        ),
        FakeKind::Name => format!("{first} {last}"),
        FakeKind::Phone => format!(
            "+1-555-01{:02}-{:04}",
            d[2] % 100,
            u16::from_be_bytes([d[3], d[4]]) % 10000
        ),
        FakeKind::Text => {
            let words = value
                .split(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c))
                .filter(|w| !w.is_empty())
                .count()
                .clamp(1, 16);
            d[..words]
                .iter()
                .map(|b| WORDS[usize::from(b % 64)])
                .collect::<Vec<_>>()
                .join(" ")
        }
    })
}

/// `SHA-256(key ‖ 0x1f ‖ value)`.
fn digest(key: &str, value: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(key.as_bytes());
    ctx.update(&[0x1f]);
    ctx.update(value);
    let mut d = [0; 32];
    d.copy_from_slice(ctx.finish().as_ref());
    d
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// First names of fake names and emails, indexed by `d[0] % 64`.
pub const FIRST_NAMES: [&str; 64] = [
    "Alice", "Bruno", "Chloe", "Daniel", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
    "Kara", "Liam", "Maya", "Nora", "Oscar", "Paula", "Quinn", "Rosa", "Simon", "Tara", "Umar",
    "Vera", "Wade", "Xenia", "Yusuf", "Zoe", "Amir", "Bella", "Carlos", "Dana", "Emil", "Fiona",
    "Gabe", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Marco", "Nina", "Omar", "Pia", "Raj", "Sara",
    "Theo", "Uma", "Victor", "Wen", "Yara", "Zane", "Anna", "Ben", "Clara", "David", "Eva", "Finn",
    "Gina", "Henry", "Ida", "Jack", "Kim", "Leo", "Mia", "Noah",
];

/// Last names of fake names and emails, indexed by `d[1] % 64`.
pub const LAST_NAMES: [&str; 64] = [
    "Adams", "Baker", "Carter", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jensen",
    "Khan", "Lopez", "Martin", "Nguyen", "Olsen", "Patel", "Quint", "Rossi", "Silva", "Tanaka",
    "Urban", "Varga", "Walker", "Xu", "Young", "Zhang", "Abbott", "Becker", "Costa", "Dubois",
    "Ellis", "Ferreira", "Gray", "Hansen", "Ivanov", "Jones", "Kowalski", "Larsen", "Moreau",
    "Novak", "Ortiz", "Perez", "Reyes", "Schmidt", "Torres", "Ueda", "Vogel", "Weber", "Yilmaz",
    "Ziegler", "Andersen", "Brown", "Chen", "Dahl", "Engel", "Flores", "Green", "Hall", "Iyer",
    "Lee", "Mills", "Nakamura", "Owens", "Price",
];

/// The words of fake text, word `i` indexed by `d[i] % 64`.
pub const WORDS: [&str; 64] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "vitae",
    "porta",
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALL: [MaskRule; 7] = [
        MaskRule::Keep,
        MaskRule::Null,
        MaskRule::Hash,
        MaskRule::Fake(FakeKind::Email),
        MaskRule::Fake(FakeKind::Name),
        MaskRule::Fake(FakeKind::Phone),
        MaskRule::Fake(FakeKind::Text),
    ];

    fn rules(toml_like: &[(&str, &str, &str)]) -> MaskRules {
        let mut r = MaskRules::default();
        for (t, c, rule) in toml_like {
            r.tables
                .entry(t.to_string())
                .or_default()
                .insert(c.to_string(), rule.parse().unwrap());
        }
        r
    }

    fn cols(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(t, c)| (t.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for rule in ALL {
            assert_eq!(rule.as_str().parse::<MaskRule>().unwrap(), rule);
            assert_eq!(rule.to_string(), rule.as_str());
        }
        for bad in ["", "Keep", "fake", "fake:", "fake:address", "hash ", "drop"] {
            let err = bad.parse::<MaskRule>().unwrap_err();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains("\"fake:phone\""),
                "{err}"
            );
        }
    }

    #[test]
    fn strict_check_lists_every_uncovered_column_sorted() {
        let r = rules(&[
            ("users", "id", "keep"),
            ("users", "email", "fake:email"),
            ("orders", "*", "keep"),
        ]);
        let columns = cols(&[
            ("users", "id"),
            ("users", "name"),
            ("users", "email"),
            ("orders", "id"),
            ("orders", "note"),
            ("audit", "who"),
            ("audit", "at"),
        ]);
        let unmasked = check_strict(&r, &columns).unwrap_err();
        let names: Vec<_> = unmasked
            .iter()
            .map(|u| format!("{}.{}", u.table, u.column))
            .collect();
        assert_eq!(names, ["audit.at", "audit.who", "users.name"]);
        let text = describe_unmasked(&unmasked);
        assert!(
            text.contains("audit.at, audit.who, users.name")
                && text.contains("[data.mask.TABLE]")
                && text.contains("turnout.toml")
                && text.contains("[data.mask.audit] at = \"keep\""),
            "{text}"
        );
        let fixed = rules(&[
            ("users", "*", "hash"),
            ("orders", "*", "keep"),
            ("audit", "at", "keep"),
            ("audit", "who", "fake:name"),
        ]);
        assert_eq!(check_strict(&fixed, &columns), Ok(()));
    }

    #[test]
    fn long_lists_are_cut_short() {
        let many: Vec<Unmasked> = (0..80)
            .map(|i| Unmasked {
                table: "t".into(),
                column: format!("c{i:02}"),
            })
            .collect();
        let text = describe_unmasked(&many);
        assert!(
            text.contains("80 columns") && text.contains("and 30 more"),
            "{text}"
        );
        assert!(!text.contains("t.c50"), "{text}");
    }

    #[test]
    fn pseudonyms_have_their_documented_shapes() {
        let key = "k";
        assert_eq!(pseudonym(MaskRule::Keep, key, "x y"), Some("x y".into()));
        assert_eq!(pseudonym(MaskRule::Null, key, "x"), None);
        let d = digest(key, b"alice@example.com");
        let hash = pseudonym(MaskRule::Hash, key, "alice@example.com").unwrap();
        assert_eq!(hash.len(), 32);
        assert_eq!(hash, hex(&d[..16]));
        let email = pseudonym(MaskRule::Fake(FakeKind::Email), key, "alice@example.com").unwrap();
        assert_eq!(
            email,
            format!(
                "{}.{}.{:02x}{:02x}@example.invalid",
                FIRST_NAMES[usize::from(d[0] % 64)].to_lowercase(),
                LAST_NAMES[usize::from(d[1] % 64)].to_lowercase(),
                d[4],
                d[5]
            )
        );
        let name = pseudonym(MaskRule::Fake(FakeKind::Name), key, "alice@example.com").unwrap();
        let (first, last) = name.split_once(' ').unwrap();
        assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last));
        let phone = pseudonym(MaskRule::Fake(FakeKind::Phone), key, "+44 20 7946 0000").unwrap();
        let digits = &phone["+1-555-01".len()..];
        assert!(
            phone.starts_with("+1-555-01") && phone.len() == 16,
            "{phone}"
        );
        assert_eq!(&digits[2..3], "-");
        assert!(
            digits
                .chars()
                .filter(|c| *c != '-')
                .all(|c| c.is_ascii_digit())
        );
        for (value, words) in [
            ("", 1),
            ("one", 1),
            ("  two\twords\n", 2),
            ("a b c d e f g h i j k l m n o p q r s t", 16),
        ] {
            let text = pseudonym(MaskRule::Fake(FakeKind::Text), key, value).unwrap();
            let got: Vec<_> = text.split(' ').collect();
            assert_eq!(got.len(), words, "{value:?} → {text:?}");
            assert!(got.iter().all(|w| WORDS.contains(w)));
        }
    }

    #[test]
    fn the_lists_are_distinct_ascii_words() {
        for list in [FIRST_NAMES, LAST_NAMES, WORDS] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 64);
            assert!(
                list.iter()
                    .all(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
            );
        }
    }

    #[test]
    fn rules_round_trip_through_serde() {
        let r = rules(&[("users", "email", "fake:email"), ("users", "*", "keep")]);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"users":{"*":"keep","email":"fake:email"}}"#);
        assert_eq!(serde_json::from_str::<MaskRules>(&json).unwrap(), r);
        assert!(serde_json::from_str::<MaskRules>(r#"{"t":{"c":"fake:x"}}"#).is_err());
    }

    proptest! {
        #[test]
        fn pseudonyms_are_deterministic_and_keyed(
            key in "[a-z0-9]{8,32}",
            other in "[a-z0-9]{8,32}",
            value in ".{0,64}",
        ) {
            for rule in ALL {
                let a = pseudonym(rule, &key, &value);
                prop_assert_eq!(&a, &pseudonym(rule, &key, &value));
                if matches!(rule, MaskRule::Hash) && key != other {
                    prop_assert_ne!(a, pseudonym(rule, &other, &value));
                }
            }
        }

        #[test]
        fn fake_emails_never_contain_the_input(
            key in "[a-z0-9]{8,32}",
            local in "[a-z][a-z0-9.]{2,20}",
            domain in "[a-z]{3,12}\\.(com|org|net)",
        ) {
            let value = format!("{local}@{domain}");
            let email = pseudonym(MaskRule::Fake(FakeKind::Email), &key, &value).unwrap();
            prop_assert!(!email.contains(&value));
            prop_assert!(!email.contains(&domain));
            prop_assert!(email.ends_with("@example.invalid"));
        }
    }
}
