//! `turnout env diff`: the commits between two environments, and the configuration that differs.
use turnout_model::{CommitInfo, ConfigKind, EnvDiff, PipelineView};

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

/// The stages left to right, each environment with its release, commit, age, status and URL,
/// then what each promotion would bring.
pub fn pipeline(p: &PipelineView, json: bool) {
    if json {
        return print_json(p);
    }
    if p.stages.is_empty() {
        outln!(
            "{} has no environments: create one with `turnout env create {}/ENV --branch BRANCH --tier TIER`",
            p.app,
            p.app
        );
        return;
    }
    let stages: Vec<String> = p
        .stages
        .iter()
        .map(|s| {
            let names: Vec<String> = s.envs.iter().map(|e| e.name.to_string()).collect();
            format!("{} ({})", s.name, names.join(", "))
        })
        .collect();
    outln!("{}: {}", p.app, stages.join(" → "));
    outln!(
        "{}",
        if p.declared.is_some() {
            "promotions: as declared (`turnout pipeline reset` goes back to the tier rule)"
        } else {
            "promotions: the tier rule (declare a pipeline with `turnout pipeline set`)"
        }
    );
    if !p.unstaged.is_empty() {
        let names: Vec<&str> = p.unstaged.iter().map(|e| e.as_str()).collect();
        outln!("in no stage: {}", names.join(", "));
    }
    let now = super::jobs::now_unix();
    let mut t = table(&["STAGE", "ENV", "RELEASE", "COMMIT", "AGE", "STATUS", "URL"]);
    for s in &p.stages {
        for e in &s.envs {
            let (release, commit, age) = match &e.release {
                Some(r) => (
                    r.id.to_string(),
                    short(&r.commit).to_owned(),
                    parse_timestamp(&r.created_at)
                        .map_or("-".to_owned(), |at| age(now.saturating_sub(at))),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            t.add_row(vec![
                s.name.clone(),
                e.name.to_string(),
                release,
                commit,
                age,
                env_status(e),
                e.url.clone(),
            ]);
        }
    }
    outln!("{t}");
    if !p.promotions.is_empty() || p.more_promotions > 0 {
        promotions(p);
    }
    if !p.schedules.is_empty() {
        outln!();
        outln!("scheduled cuts:");
        for s in &p.schedules {
            outln!(
                "  {}: {} → {} at \"{}\" ({}), next {}",
                s.id,
                s.from,
                s.to,
                s.cron,
                s.tz,
                s.next_tick.as_deref().unwrap_or("never")
            );
        }
    }
}

fn promotions(p: &PipelineView) {
    outln!();
    outln!("promotions (turnout promote {}/FROM {}/TO):", p.app, p.app);
    for v in &p.promotions {
        let state = match (v.ahead, v.behind) {
            (Some(0), Some(0)) => "same commit".to_owned(),
            (Some(0), Some(_)) => format!("nothing to promote ({} runs newer commits)", v.to),
            (Some(n), Some(b)) => format!(
                "{n} commit{} to promote{}",
                if n == 1 { "" } else { "s" },
                if b > 0 {
                    format!(" ({} also runs {b} that {} lacks)", v.to, v.from)
                } else {
                    String::new()
                }
            ),
            _ => "not both deployed yet".to_owned(),
        };
        outln!("  {} → {}: {state}", v.from, v.to);
    }
    if p.more_promotions > 0 {
        outln!(
            "  … and {} more not listed: `turnout pipeline show {} --from ENV` or `--to ENV` lists those of one environment",
            p.more_promotions,
            p.app
        );
    }
}

/// `45s`, `12m`, `3h`, `5d`.
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
