//! How command results look: tables and short sentences for people, JSON with `--json`.
use std::collections::HashMap;
use std::time::Instant;

use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
pub mod backup;
pub mod certs;
pub mod config;
pub mod data;
pub mod diff;
mod domains;
pub mod egress;
mod jobs;
pub mod link;
pub mod mail;
pub mod pipeline;

pub use domains::{domain_added, domain_history, domains, maintenance, switched};
pub use jobs::{JobProgress, approved, env_stopped, job, job_cancelled, job_detached, jobs};

use turnout_model::plan::format_bytes;
use turnout_model::{
    AppInfo, ApprovalInfo, AuditInfo, AuditVerification, DomainEvent, DomainInfo, EnvInfo,
    JobEvent, JobInfo, JobKind, JobState, JobStep, PolicyEntry, ReleaseInfo, ReleaseStatus,
    ResourceUsage, SleepAfter, StepState, SwitchInfo, Tier, TokenCreated, TokenInfo, UserInfo,
    parse_timestamp,
};

fn print_json(value: &impl Serialize) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    t
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

pub fn app_created(app: &AppInfo, json: bool) {
    if json {
        return print_json(app);
    }
    outln!("created app {} from {}", app.name, app.repo);
    outln!(
        "next: turnout env create {}/ENV --branch BRANCH [--tier TIER]",
        app.name
    );
}

pub fn app_updated(app: &AppInfo, json: bool) {
    if json {
        return print_json(app);
    }
    outln!(
        "app {}: branch environments {}",
        app.name,
        if app.branch_envs { "on" } else { "off" }
    );
    for tier in Tier::ALL {
        let own = app.sleep_after.get(&tier);
        let effective = own
            .copied()
            .unwrap_or_else(|| SleepAfter::tier_default(tier));
        outln!(
            "  {tier} environments sleep after {effective}{}",
            if own.is_some() { "" } else { " (default)" }
        );
    }
}

pub fn apps(apps: &[AppInfo], json: bool) {
    if json {
        return print_json(&apps);
    }
    if apps.is_empty() {
        outln!("no apps yet: create one with `turnout app create NAME --repo PATH_OR_URL`");
        return;
    }
    let mut t = table(&["APP", "REPOSITORY", "ENVIRONMENTS", "CREATED"]);
    for a in apps {
        t.add_row(vec![
            a.name.to_string(),
            a.repo.clone(),
            a.environments.to_string(),
            a.created_at.clone(),
        ]);
    }
    outln!("{t}");
}

pub fn deleted(kind: &str, name: &str, json: bool) {
    if json {
        return print_json(&serde_json::json!({ "deleted": kind, "name": name }));
    }
    outln!("deleted {kind} {name}");
}

pub fn env_created(env: &EnvInfo, json: bool) {
    if json {
        return print_json(env);
    }
    outln!(
        "created environment {}/{} (tier {}, branch {})",
        env.app,
        env.name,
        env.tier,
        env.branch
    );
    outln!(
        "next: turnout deploy {}/{}   (it will answer at {})",
        env.app,
        env.name,
        env.url
    );
}

pub fn envs(envs: &[EnvInfo], json: bool) {
    if json {
        return print_json(&envs);
    }
    if envs.is_empty() {
        outln!("no environments: create one with `turnout env create APP/ENV --branch BRANCH`");
        return;
    }
    let mut t = table(&[
        "APP", "ENV", "TIER", "BRANCH", "STATUS", "RELEASE", "RESTARTS", "URL",
    ]);
    for e in envs {
        t.add_row(vec![
            e.app.to_string(),
            e.name.to_string(),
            e.tier.to_string(),
            e.branch.clone(),
            env_status(e),
            e.release
                .as_ref()
                .map_or("-".into(), |r| format!("{} {}", r.id, short(&r.commit))),
            e.instance
                .as_ref()
                .map_or("-".into(), |i| i.restarts.to_string()),
            e.url.clone(),
        ]);
    }
    outln!("{t}");
}

/// `live`, or `down: <why> (next retry at <time>)`.
fn env_status(e: &EnvInfo) -> String {
    let status = match &e.status_reason {
        Some(why) => format!("{}: {why}", e.status),
        None => e.status.to_string(),
    };
    match &e.next_retry_at {
        Some(at) => format!("{status} (next retry at {at})"),
        None => status,
    }
}

/// The configuration an environment runs with against what is set.
fn config_state(e: &EnvInfo, c: &turnout_model::ConfigState) -> String {
    let running = c
        .running_version
        .map_or("a version from before snapshots".to_owned(), |v| {
            format!("version {v}")
        });
    if c.stale {
        format!(
            "running {running}, set version {}: `turnout restart {}/{}` applies it",
            c.set_version, e.app, e.name
        )
    } else {
        format!("version {} (what is set)", c.set_version)
    }
}

pub fn env(e: &EnvInfo, json: bool) {
    if json {
        return print_json(e);
    }
    outln!("environment  {}/{}", e.app, e.name);
    outln!("tier         {}", e.tier);
    outln!("branch       {}", e.branch);
    outln!("deploys on   {}", e.deploy_on);
    outln!("sleeps after {}", e.sleep_after);
    if e.made_for_branch {
        outln!(
            "made for     branch {} by a push: deleted with it",
            e.branch
        );
    }
    outln!("status       {}", env_status(e));
    outln!("url          {}", e.url);
    match &e.release {
        Some(r) => outln!(
            "release      {} ({} from {}, live since {})",
            r.id,
            short(&r.commit),
            r.git_ref,
            r.finished_at.as_deref().unwrap_or("-")
        ),
        None => outln!("release      none"),
    }
    match &e.instance {
        Some(i) => {
            outln!(
                "instance     {} · pid {} · port {} · started {}",
                i.state,
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.port,
                i.started_at
            );
            outln!(
                "restarts     {}{}",
                i.restarts,
                i.last_exit
                    .as_ref()
                    .map_or(String::new(), |x| format!(" (last exit: {x})"))
            );
        }
        None => outln!("instance     none"),
    }
    if let Some(c) = &e.config {
        outln!("config       {}", config_state(e, c));
    }
    for (i, l) in e.links.iter().flatten().enumerate() {
        let label = if i == 0 { "links" } else { "" };
        let leads = match (&l.to, &l.missing) {
            (Some(to), _) => format!(
                "{} → {}/{to} ({}), {}",
                l.var,
                l.other,
                l.rule.map_or("", |r| r.as_str()),
                l.url.as_deref().unwrap_or("-")
            ),
            (None, why) => format!(
                "{} → {} MISSING, not set: {}",
                l.var,
                l.other,
                why.as_deref().unwrap_or("")
            ),
        };
        outln!("{label:<12} {leads}");
    }
    outln!("plan         {}", e.plan.describe());
    if let Some(why) = e
        .instance
        .as_ref()
        .and_then(|i| i.limits_not_enforced.as_ref())
    {
        outln!("             not enforced: {why}");
    }
    outln!("usage        {}", usage(e.usage.as_ref()));
    outln!(
        "isolation    {}",
        match e.isolation.mode {
            turnout_model::IsolationMode::User => format!("its own user (uid {})", e.isolation.uid),
            turnout_model::IsolationMode::Sandbox => format!(
                "a sandbox of its own (user namespace; sees no other environment's files or processes; uid {} is the daemon's)",
                e.isolation.uid
            ),
            turnout_model::IsolationMode::SingleUser => format!(
                "single user (uid {}): not isolated from other environments or Turnout",
                e.isolation.uid
            ),
        }
    );
    outln!(
        "network      {}",
        match &e.isolation.network {
            Some(ns) => format!("namespace {ns}: its ports are reachable only through the proxy"),
            None => "the host's, shared: other environments can reach its instance port".to_owned(),
        }
    );
    outln!("directory    {}", e.dir);
    outln!("created      {}", e.created_at);
}

/// `memory 80 MiB, pids 3, cpu 1.2 s, storage 1.2 MiB`: what is known, `-` if nothing.
fn usage(u: Option<&ResourceUsage>) -> String {
    let Some(u) = u else { return "-".into() };
    let parts: Vec<String> = [
        u.memory.map(|m| format!("memory {}", format_bytes(m))),
        u.pids.map(|p| format!("pids {p}")),
        u.cpu_seconds.map(|c| format!("cpu {c:.1} s")),
        u.storage.map(|s| format!("storage {}", format_bytes(s))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

pub fn trigger_set(e: &EnvInfo, json: bool) {
    if json {
        return print_json(e);
    }
    outln!("{}/{} deploys on {}", e.app, e.name, e.deploy_on);
}

pub fn sleep_set(e: &EnvInfo, json: bool) {
    if json {
        return print_json(e);
    }
    match e.sleep_after {
        turnout_model::SleepAfter::Never => outln!("{}/{} never sleeps", e.app, e.name),
        after => outln!(
            "{}/{} sleeps after {after} without a request",
            e.app,
            e.name
        ),
    }
}

pub fn ci_outcome(o: &turnout_model::CiOutcome, json: bool) {
    if json {
        return print_json(o);
    }
    if o.deploys.is_empty() && o.skipped.is_empty() {
        outln!("no environment of this app follows that branch");
    }
    for d in &o.deploys {
        outln!("deploying to {}: job {}", d.env, d.job.id);
    }
    for s in &o.skipped {
        outln!("skipped {}: {}", s.env, s.why);
    }
}

/// An app's webhooks with the full URL to paste into GitHub or GitLab (`base` is the API's
/// address as this CLI reaches it).
pub fn hooks(base: &str, hooks: &[turnout_model::HookInfo], json: bool) {
    let url = |h: &turnout_model::HookInfo| format!("{}{}", base.trim_end_matches('/'), h.path);
    if json {
        let out: Vec<serde_json::Value> = hooks
            .iter()
            .map(|h| {
                let mut v = serde_json::to_value(h).unwrap_or_default();
                v["url"] = url(h).into();
                v
            })
            .collect();
        return print_json(&out);
    }
    if hooks.is_empty() {
        outln!("no webhooks: set one with `turnout hooks set APP github|gitlab --secret-stdin`");
        return;
    }
    let mut t = table(&["PROVIDER", "URL", "SECRET", "ACTS AS", "UPDATED"]);
    for h in hooks {
        t.add_row(vec![
            h.provider.to_string(),
            url(h),
            h.secret_env
                .as_ref()
                .map_or_else(|| "stored".to_owned(), |v| format!("${v}")),
            h.acts_as.clone(),
            h.updated_at.clone(),
        ]);
    }
    outln!("{t}");
}

pub fn plan_updated(e: &EnvInfo, json: bool) {
    if json {
        return print_json(e);
    }
    outln!("plan of {}/{}: {}", e.app, e.name, e.plan.describe());
    outln!(
        "it applies to the next instance: `turnout deploy {0}/{1}` or `turnout restart {0}/{1}`",
        e.app,
        e.name
    );
}

pub fn releases(releases: &[ReleaseInfo], json: bool) {
    if json {
        return print_json(&releases);
    }
    if releases.is_empty() {
        outln!("no releases yet");
        return;
    }
    let mut t = table(&["ID", "COMMIT", "REF", "STATUS", "BUILD", "CREATED", "ERROR"]);
    for r in releases {
        t.add_row(vec![
            r.id.to_string(),
            short(&r.commit).to_owned(),
            r.git_ref.clone(),
            r.status.to_string(),
            build_column(r).to_owned(),
            r.created_at.clone(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    outln!("{t}");
}

/// Whether the release's build exists: `reused` or `built` only when it does; `failed` when
/// the build step failed; `-` while building or when it never got that far.
fn build_column(r: &ReleaseInfo) -> &'static str {
    match r.status {
        _ if r.reused_build => "reused",
        ReleaseStatus::Live | ReleaseStatus::Superseded => "built",
        ReleaseStatus::Failed if r.error.as_deref().is_some_and(|e| e.starts_with("build ")) => {
            "failed"
        }
        ReleaseStatus::Failed | ReleaseStatus::Building => "-",
    }
}

/// A one-line confirmation, or the request's JSON.
pub fn done(text: &str, value: &impl Serialize, json: bool) {
    if json {
        return print_json(value);
    }
    outln!("{text}");
}

pub fn users(users: &[UserInfo], json: bool) {
    if json {
        return print_json(&users);
    }
    let mut t = table(&["USER", "ROLES", "CREATED"]);
    for u in users {
        let roles: Vec<String> = u
            .roles
            .iter()
            .map(|g| match &g.app {
                Some(app) => format!("{} of {app}", g.role),
                None => format!("{} of every app", g.role),
            })
            .collect();
        t.add_row(vec![
            u.name.clone(),
            if roles.is_empty() {
                "-".into()
            } else {
                roles.join(", ")
            },
            u.created_at.clone(),
        ]);
    }
    outln!("{t}");
}

pub fn token_created(t: &TokenCreated, json: bool) {
    if json {
        return print_json(t);
    }
    outln!("{}", t.token);
    eprintln!(
        "token {} for {} ({}); it is shown only now: store it (e.g. in TURNOUT_TOKEN)",
        t.id,
        t.user,
        t.expires_at
            .as_ref()
            .map_or("never expires".to_owned(), |e| format!("expires {e}"))
    );
}

pub fn tokens(tokens: &[TokenInfo], json: bool) {
    if json {
        return print_json(&tokens);
    }
    let mut t = table(&["ID", "USER", "TOKEN", "STATE", "CREATED", "EXPIRES"]);
    for k in tokens {
        t.add_row(vec![
            k.id.to_string(),
            k.user.clone(),
            format!("{}…", k.prefix),
            k.state.clone(),
            k.created_at.clone(),
            k.expires_at.clone().unwrap_or_else(|| "never".into()),
        ]);
    }
    outln!("{t}");
}

/// The matrix: one row per action, one column per tier; overrides marked with `*`.
pub fn policy(entries: &[PolicyEntry], json: bool) {
    if json {
        return print_json(&entries);
    }
    let mut header = vec!["ACTION"];
    header.extend(Tier::ALL.iter().map(|t| t.as_str()));
    let mut t = table(&header);
    let mut actions: Vec<_> = entries.iter().map(|e| e.action).collect();
    actions.dedup();
    for action in actions {
        let mut row = vec![action.to_string()];
        for tier in Tier::ALL {
            if let Some(e) = entries
                .iter()
                .find(|e| e.action == action && e.tier == tier)
            {
                row.push(format!("{}{}", e.role, if e.default { "" } else { "*" }));
            }
        }
        t.add_row(row);
    }
    outln!("{t}");
    outln!("(* changed from the default for this app)");
}

pub fn approvals(list: &[ApprovalInfo], json: bool) {
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        outln!("no requests waiting for approval");
        return;
    }
    let mut t = table(&["ID", "APP", "REQUEST", "BY", "STATUS", "EXPIRES", "RESULT"]);
    for a in list {
        t.add_row(vec![
            a.id.to_string(),
            a.app.clone(),
            a.summary.clone(),
            a.requested_by.clone(),
            match &a.decided_by {
                Some(by) => format!("{} by {by}", a.status),
                None => a.status.clone(),
            },
            a.expires_at.clone(),
            a.result.clone().unwrap_or_default(),
        ]);
    }
    outln!("{t}");
}

pub fn audit(entries: &[AuditInfo], json: bool) {
    if json {
        return print_json(&entries);
    }
    let mut t = table(&[
        "ID", "WHEN", "WHO", "ACTION", "TARGET", "FROM", "TO", "RESULT",
    ]);
    for e in entries {
        t.add_row(audit_row(e));
    }
    outln!("{t}");
}

/// One audit entry as table cells: commit ids shortened, every cell cut to a width that keeps
/// the row under 160 columns (`--json` has everything).
fn audit_row(e: &AuditInfo) -> Vec<String> {
    let target = [e.app.clone(), e.env.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("/");
    let target = match &e.domain {
        Some(d) => format!("{d} ({target})"),
        None => target,
    };
    let cell = |text: &str, width: usize| cut(&short_commits(text), width);
    vec![
        e.id.to_string(),
        e.at.clone(),
        cell(&e.actor, 16),
        cell(e.action.as_str(), 16),
        cell(&target, 26),
        cell(e.from.as_deref().unwrap_or_default(), 14),
        cell(e.to.as_deref().unwrap_or_default(), 14),
        cell(&e.result, 28),
    ]
}

/// Every word of 40 (SHA-1) or 64 (SHA-256) hex digits cut to its first 12.
fn short_commits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        let commit = matches!(word.len(), 40 | 64) && word.bytes().all(|b| b.is_ascii_hexdigit());
        out.push_str(if commit { short(word) } else { word });
        let gap = tail.find(char::is_alphanumeric).unwrap_or(tail.len());
        out.push_str(&tail[..gap]);
        rest = &tail[gap..];
    }
    out
}

/// At most `width` characters, the last one `…` when cut; on one line.
fn cut(text: &str, width: usize) -> String {
    let text = text.replace(['\n', '\r'], " ");
    if text.chars().count() <= width {
        return text;
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn audit_verification(v: &AuditVerification, json: bool) {
    if json {
        return print_json(v);
    }
    match (&v.broken_at, &v.reason) {
        (Some(id), Some(reason)) => {
            eprintln!("error: the audit log is broken at entry {id}: {reason}")
        }
        _ => outln!(
            "the audit log is intact: {} entries, each chained to the one before",
            v.entries
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::jobs::duration;
    use super::*;

    fn release(status: ReleaseStatus, reused: bool, error: Option<&str>) -> ReleaseInfo {
        ReleaseInfo {
            id: 1,
            commit: "a".repeat(40),
            git_ref: "main".into(),
            status,
            job: None,
            reused_build: reused,
            error: error.map(Into::into),
            created_at: String::new(),
            finished_at: None,
        }
    }

    #[test]
    fn the_build_column_says_built_only_when_the_build_succeeded() {
        use ReleaseStatus::*;
        let cases = [
            (release(Live, false, None), "built"),
            (release(Superseded, true, None), "reused"),
            (
                release(Failed, false, Some("build failed: exit 1")),
                "failed",
            ),
            (release(Failed, false, Some("checkout failed: no")), "-"),
            (release(Failed, true, Some("launch failed: port")), "reused"),
            (release(Building, false, None), "-"),
        ];
        for (r, want) in cases {
            assert_eq!(build_column(&r), want, "{:?} {:?}", r.status, r.error);
        }
    }

    #[test]
    fn audit_rows_stay_narrow_and_ids_short() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let e = AuditInfo {
            id: 123_456,
            at: "2026-11-24T15:50:41Z".into(),
            actor: "alice-with-a-long-name (approved by bob-with-a-long-name)".into(),
            action: turnout_model::AuditAction::ReleaseCreate,
            app: Some("a".repeat(40)),
            env: Some("b".repeat(40)),
            domain: Some(format!("{}.example.com", "c".repeat(60))),
            from: Some(sha.into()),
            to: Some(sha.into()),
            result: format!("failed: build failed: {}", "x".repeat(300)),
            hash: String::new(),
        };
        let row = audit_row(&e);
        assert_eq!(row[5], "0123456789ab");
        assert!(row[7].ends_with('…'), "{}", row[7]);
        let mut t = table(&[
            "ID", "WHEN", "WHO", "ACTION", "TARGET", "FROM", "TO", "RESULT",
        ]);
        t.add_row(row);
        for line in t.to_string().lines() {
            assert!(
                line.chars().count() < 160,
                "{} columns: {line}",
                line.chars().count()
            );
        }
    }

    #[test]
    fn only_whole_hex_words_of_commit_length_are_shortened() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            short_commits(&format!("main -> {sha}, release 5")),
            "main -> 0123456789ab, release 5"
        );
        let longer = format!("{sha}ff");
        assert_eq!(short_commits(&longer), longer);
        let word = format!("x{sha}");
        assert_eq!(short_commits(&word), word);
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(7_500_000), "2h05m");
    }
}
