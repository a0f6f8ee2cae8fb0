//! `turnout env diff`: the commits between two environments, and the configuration that differs.
use turnout_model::{CommitInfo, ConfigKind, EnvDiff};

use super::*;

pub fn env_diff(d: &EnvDiff, json: bool) {
    if json {
        return print_json(d);
    }
    let short = |c: &Option<String>| match c {
        Some(c) => c[..12.min(c.len())].to_owned(),
        None => "nothing deployed".to_owned(),
    };
    outln!(
        "{app}/{a} runs {}, {app}/{b} runs {}",
        short(&d.a_commit),
        short(&d.b_commit),
        app = d.app,
        a = d.a,
        b = d.b
    );
    match (&d.a_commit, &d.b_commit) {
        (Some(a), Some(b)) if a == b => outln!("same commit"),
        (Some(_), Some(_)) => {
            commits(&format!("in {} and not in {}", d.b, d.a), &d.only_in_b);
            commits(&format!("in {} and not in {}", d.a, d.b), &d.only_in_a);
            if d.truncated {
                outln!("(more commits differ than shown)");
            }
        }
        _ => outln!("no commits to compare until both are deployed"),
    }
    if d.config.is_empty() {
        outln!("configuration: the same");
        return;
    }
    outln!();
    let mut t = table(&["KEY", "KIND", &d.a.to_string(), &d.b.to_string()]);
    for c in &d.config {
        let kind = match c.kind {
            ConfigKind::Env => "env",
            ConfigKind::Secret => "secret",
        };
        let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".to_owned());
        t.add_row(vec![
            c.key.clone(),
            kind.to_owned(),
            value(&c.a),
            value(&c.b),
        ]);
    }
    outln!("{t}");
}

fn commits(title: &str, list: &[CommitInfo]) {
    outln!();
    if list.is_empty() {
        outln!("no commits {title}");
        return;
    }
    outln!(
        "{} commit{} {title}:",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    for c in list {
        outln!(
            "  {}  {}  ({})",
            &c.commit[..12.min(c.commit.len())],
            c.subject,
            c.author
        );
    }
}
