//! How command results look: tables and short sentences for people, JSON with `--json`.
use std::time::Instant;

use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use turnout_model::{
    AppInfo, DeployEvent, DomainEvent, DomainInfo, EnvInfo, EnvRef, ReleaseInfo, SwitchInfo,
};

fn print_json(value: &impl Serialize) {
    println!(
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
    println!("created app {} from {}", app.name, app.repo);
    println!(
        "next: turnout env create {}/ENV --branch BRANCH [--tier TIER]",
        app.name
    );
}

pub fn apps(apps: &[AppInfo], json: bool) {
    if json {
        return print_json(&apps);
    }
    if apps.is_empty() {
        println!("no apps yet: create one with `turnout app create NAME --repo PATH_OR_URL`");
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
    println!("{t}");
}

pub fn deleted(kind: &str, name: &str, json: bool) {
    if json {
        return print_json(&serde_json::json!({ "deleted": kind, "name": name }));
    }
    println!("deleted {kind} {name}");
}

pub fn env_created(env: &EnvInfo, json: bool) {
    if json {
        return print_json(env);
    }
    println!(
        "created environment {}/{} (tier {}, branch {})",
        env.app, env.name, env.tier, env.branch
    );
    println!(
        "next: turnout deploy {}/{}   (it will answer at {})",
        env.app, env.name, env.url
    );
}

pub fn envs(envs: &[EnvInfo], json: bool) {
    if json {
        return print_json(&envs);
    }
    if envs.is_empty() {
        println!("no environments: create one with `turnout env create APP/ENV --branch BRANCH`");
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
            e.status.clone(),
            e.release
                .as_ref()
                .map_or("-".into(), |r| format!("{} {}", r.id, short(&r.commit))),
            e.instance
                .as_ref()
                .map_or("-".into(), |i| i.restarts.to_string()),
            e.url.clone(),
        ]);
    }
    println!("{t}");
}

pub fn env(e: &EnvInfo, json: bool) {
    if json {
        return print_json(e);
    }
    println!("environment  {}/{}", e.app, e.name);
    println!("tier         {}", e.tier);
    println!("branch       {}", e.branch);
    println!("status       {}", e.status);
    println!("url          {}", e.url);
    match &e.release {
        Some(r) => println!(
            "release      {} ({} from {}, live since {})",
            r.id,
            short(&r.commit),
            r.git_ref,
            r.finished_at.as_deref().unwrap_or("-")
        ),
        None => println!("release      none"),
    }
    match &e.instance {
        Some(i) => {
            println!(
                "instance     {} · pid {} · port {} · started {}",
                i.state,
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.port,
                i.started_at
            );
            println!(
                "restarts     {}{}",
                i.restarts,
                i.last_exit
                    .as_ref()
                    .map_or(String::new(), |x| format!(" (last exit: {x})"))
            );
        }
        None => println!("instance     none"),
    }
    println!("directory    {}", e.dir);
    println!("created      {}", e.created_at);
}

pub fn releases(releases: &[ReleaseInfo], json: bool) {
    if json {
        return print_json(&releases);
    }
    if releases.is_empty() {
        println!("no releases yet");
        return;
    }
    let mut t = table(&["ID", "COMMIT", "REF", "STATUS", "BUILD", "CREATED", "ERROR"]);
    for r in releases {
        t.add_row(vec![
            r.id.to_string(),
            short(&r.commit).to_owned(),
            r.git_ref.clone(),
            r.status.clone(),
            if r.reused_build { "reused" } else { "built" }.to_owned(),
            r.created_at.clone(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
}

pub fn domain_added(d: &DomainInfo, json: bool) {
    if json {
        return print_json(d);
    }
    println!("{} -> {}/{}  ({})", d.domain, d.app, d.env, d.url);
    if !d.serving {
        println!(
            "{}/{} is not running yet: requests get 503 until `turnout deploy {}/{}`",
            d.app, d.env, d.app, d.env
        );
    }
}

pub fn domains(domains: &[DomainInfo], json: bool) {
    if json {
        return print_json(&domains);
    }
    if domains.is_empty() {
        println!("no domains: add one with `turnout domain add DOMAIN APP/ENV`");
        return;
    }
    let mut t = table(&["DOMAIN", "APP", "ENV", "STATE", "URL"]);
    for d in domains {
        let state = match (&d.maintenance, d.serving) {
            (Some(_), _) => "maintenance",
            (None, true) => "serving",
            (None, false) => "not running",
        };
        t.add_row(vec![
            d.domain.to_string(),
            d.app.to_string(),
            d.env.to_string(),
            state.to_owned(),
            d.url.clone(),
        ]);
    }
    println!("{t}");
}

pub fn switched(s: &SwitchInfo, json: bool) {
    if json {
        return print_json(s);
    }
    if s.action == "unchanged" {
        println!(
            "{} already points to {}/{}; nothing changed",
            s.domain, s.app, s.to
        );
        return;
    }
    let verb = if s.action == "rollback" {
        "rolled back"
    } else {
        "switched"
    };
    println!(
        "{} {verb}: {}/{} -> {}/{} (health check {:.1} ms, route live in {:.0} µs)",
        s.domain, s.app, s.from, s.app, s.to, s.health_check_ms, s.apply_us
    );
    println!(
        "{}/{} keeps running: `turnout domain rollback {}` moves it back",
        s.app, s.from, s.domain
    );
}

pub fn domain_history(events: &[DomainEvent], json: bool) {
    if json {
        return print_json(&events);
    }
    let mut t = table(&["WHEN", "WHO", "ACTION", "FROM", "TO"]);
    for e in events {
        let action = if e.rolled_back {
            format!("{} (rolled back)", e.action)
        } else {
            e.action.clone()
        };
        t.add_row(vec![
            e.at.clone(),
            e.actor.clone(),
            action,
            e.from.clone().unwrap_or_else(|| "-".into()),
            e.to.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{t}");
}

pub fn maintenance(d: &DomainInfo, json: bool) {
    if json {
        return print_json(d);
    }
    match &d.maintenance {
        Some(message) => println!(
            "{} is in maintenance: visitors get 503 with \"{message}\"",
            d.domain
        ),
        None => println!("{} serves {}/{} again", d.domain, d.app, d.env),
    }
}

/// Prints a deploy's events as they stream in: numbered steps with elapsed time, build output
/// indented under its step, and the outcome.
pub struct DeployProgress {
    target: String,
    json: bool,
    started: Instant,
    outcome: Option<bool>,
}

impl DeployProgress {
    pub fn new(target: &EnvRef, json: bool) -> DeployProgress {
        DeployProgress {
            target: target.to_string(),
            json,
            started: Instant::now(),
            outcome: None,
        }
    }

    pub fn event(&mut self, event: &DeployEvent) {
        match event {
            DeployEvent::Live { .. } => self.outcome = Some(true),
            DeployEvent::Failed { .. } => self.outcome = Some(false),
            _ => {}
        }
        if self.json {
            println!("{}", serde_json::to_string(event).unwrap_or_default());
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        match event {
            DeployEvent::Step {
                index,
                total,
                step,
                detail,
            } => {
                if *index == 0 {
                    println!("        {detail}");
                } else {
                    println!("[{index}/{total}] {step:<9}{detail}  ({elapsed:.1}s)");
                }
            }
            DeployEvent::Output { line } => println!("        | {line}"),
            DeployEvent::Live { release, url } => println!(
                "live: {} release {} ({}) at {url} in {elapsed:.1}s",
                self.target,
                release.id,
                short(&release.commit)
            ),
            DeployEvent::Failed {
                step,
                error,
                log_tail,
            } => {
                if !log_tail.is_empty() {
                    eprintln!("--- last lines of the {step} log ---");
                    for l in log_tail {
                        eprintln!("  {l}");
                    }
                    eprintln!("---");
                }
                eprintln!("error: deploy of {} failed at {step}: {error}", self.target);
                eprintln!("{} keeps serving what it served before.", self.target);
            }
        }
    }

    /// Whether the release went live; an error if the stream ended without an outcome.
    pub fn finish(self) -> anyhow::Result<bool> {
        self.outcome.ok_or_else(|| {
            anyhow::anyhow!(
                "the deploy stream of {} ended without an outcome (did the daemon stop?); see `turnout release list {}`",
                self.target,
                self.target
            )
        })
    }
}
