//! `turnout demo`: the daemon in the foreground with the example app from `examples/hello`
//! deployed into two environments, production (branch `main`) and staging (branch `staging`),
//! from a git repository the demo creates in its home. Running it again reuses what is there,
//! and every command it suggests works however often it is run.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use turnout_client::Client;
use turnout_model::endpoint as ep;
use turnout_model::{AddDomain, CreateApp, CreateEnv, DeployRequest, DomainName, EnvRef, Tier};

use crate::cli::ServeArgs;

const APP: &str = "hello";
/// Bound to production by the demo, so the suggested switches have something to move.
const DOMAIN: &str = "hello.localhost";
const FILES: &[(&str, &str)] = &[
    ("app.py", include_str!("../examples/hello/app.py")),
    (
        "turnout.toml",
        include_str!("../examples/hello/turnout.toml"),
    ),
    ("message.txt", include_str!("../examples/hello/message.txt")),
    ("migrate.py", include_str!("../examples/hello/migrate.py")),
    ("seed.sql", include_str!("../examples/hello/seed.sql")),
];

/// The demo keeps its own home beside the default one, so it never mixes with real apps.
pub fn default_home() -> PathBuf {
    turnout_control::home::default_home().with_file_name("turnout-demo")
}

/// Where the demo's daemon writes its log (kept off the terminal, where the deploy steps and
/// the instructions go).
pub fn log_path(home: &Path) -> PathBuf {
    home.join("turnout.log")
}

pub async fn run(home: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    let repo = home.join("demo-repo");
    ensure_repo(&repo).await?;

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let daemon_home = home.clone();
    // The demo is one person's sandbox: without root, its production and staging run as that
    // person's user (the daemon says so), rather than being refused.
    let daemon_args = ServeArgs {
        single_user: true,
        ..args.clone()
    };
    let daemon = tokio::spawn(async move {
        // The demo is not a service: SIGTERM stops it fully, as Ctrl-C does.
        crate::daemon::run_daemon(daemon_home, &daemon_args, false, false, move |info| {
            let _ = ready_tx.send(info.clone());
        })
        .await
    });
    let info = match ready_rx.await {
        Ok(info) => info,
        // The daemon failed before binding (port taken, home locked): report its error.
        Err(_) => return daemon.await.context("the daemon task failed")?,
    };

    // The demo's own daemon: its owner token, whatever TURNOUT_TOKEN says.
    let token = std::fs::read_to_string(home.join("admin.token"))
        .context("the demo daemon wrote no admin.token")?;
    let client = Client::new(&info.api, Some(&token))?;
    outln!(
        "daemon log: {} (API {}, proxy {})",
        log_path(&home).display(),
        info.api,
        info.http
    );
    if let Err(e) = set_up(&client, &repo).await {
        eprintln!("error: the demo could not deploy: {e:#}");
        eprintln!("the daemon keeps running; press Ctrl-C to stop it");
    } else {
        let port = info.http.rsplit(':').next().unwrap_or("8080");
        outln!();
        outln!("The Turnout demo is running (Ctrl-C stops it and its instances).");
        outln!();
        outln!("  production  http://production.{APP}.localhost:{port}/   (branch main)");
        outln!("  staging     http://staging.{APP}.localhost:{port}/      (branch staging)");
        outln!();
        let exe = std::env::current_exe().context("cannot find the turnout binary's path")?;
        let bin_dir = exe.parent().unwrap_or(Path::new("/"));
        let repo = sh_quote(&repo.display().to_string());
        outln!(
            "Try, in another terminal (TURNOUT_HOME lets the CLI find this daemon and its owner token):"
        );
        outln!(
            "  export PATH={}:\"$PATH\"",
            sh_quote(&bin_dir.display().to_string())
        );
        outln!(
            "  export TURNOUT_HOME={}",
            sh_quote(&home.display().to_string())
        );
        outln!("  curl http://staging.{APP}.localhost:{port}/");
        outln!("  curl -H 'Host: production.{APP}.localhost' http://127.0.0.1:{port}/");
        outln!("  turnout env list");
        outln!("  turnout env show {APP}/staging");
        outln!("  turnout logs {APP}/production -f");
        outln!("  # change staging and redeploy it with zero downtime:");
        outln!("  git -C {repo} checkout -q staging");
        outln!("  echo \"Hello again from staging at $(date +%T)\" > {repo}/message.txt");
        outln!("  git -C {repo} commit -qam 'New greeting'");
        outln!("  turnout deploy {APP}/staging");
        outln!("  turnout jobs {APP}");
        outln!(
            "  # each environment has its own data: staging's is seeded, production's starts empty"
        );
        outln!("  turnout data show {APP}/staging");
        outln!("  curl -d text=hello http://staging.{APP}.localhost:{port}/notes");
        outln!("  turnout data sync {APP}/staging --from {APP}/production   # masked on the way");
        outln!("  turnout data reseed {APP}/staging   # back to the seed");
        outln!(
            "  # third parties: the note above was mailed, and caught; staging calls nothing outside"
        );
        outln!("  turnout mail list {APP}/staging");
        outln!("  curl http://staging.{APP}.localhost:{port}/outbound");
        outln!("  turnout egress log {APP}/staging");
        outln!("  # configuration, inherited app -> tier -> environment, applied by a restart:");
        outln!("  turnout config set {APP} --tier staging BANNER=set-by-turnout-config");
        outln!("  turnout restart {APP}/staging");
        outln!("  turnout config list {APP}/staging");
        outln!("  # move the demo's public name between the environments, and back:");
        outln!("  curl -H 'Host: {DOMAIN}' http://127.0.0.1:{port}/");
        outln!("  turnout domain switch {DOMAIN} {APP}/staging");
        outln!("  turnout domain switch {DOMAIN} {APP}/production");
        outln!("  turnout domain history {DOMAIN}");
        outln!("  turnout audit --app {APP}");
    }
    daemon.await.context("the daemon task failed")?
}

/// Create the app, its two environments and the domain unless they exist, then deploy both
/// environments.
async fn set_up(client: &Client, repo: &Path) -> anyhow::Result<()> {
    let app = APP.parse()?;
    let apps = client.call(&ep::ListApps).await?;
    if !apps.iter().any(|a| a.name == app) {
        let body = CreateApp {
            name: app.clone(),
            repo: repo.display().to_string(),
            token_env: None,
        };
        client.call(&ep::CreateApp { body }).await?;
    }
    let envs = client.call(&ep::ListAppEnvs { app: app.clone() }).await?;
    for (env, branch, tier) in [
        ("production", "main", Tier::Production),
        ("staging", "staging", Tier::Staging),
    ] {
        if !envs.iter().any(|e| e.name.as_str() == env) {
            let body = CreateEnv {
                name: env.parse()?,
                branch: branch.to_owned(),
                tier: Some(tier),
                deploy_on: turnout_model::DeployOn::Manual,
            };
            client
                .call(&ep::CreateEnv {
                    app: app.clone(),
                    body,
                })
                .await?;
        }
        let target: EnvRef = format!("{APP}/{env}").parse()?;
        outln!("deploying {target} from branch {branch}");
        let job = client
            .call(&ep::Deploy {
                target: target.clone(),
                body: DeployRequest::default(),
            })
            .await?;
        if crate::jobs::watch(client, &job, false).await? != std::process::ExitCode::SUCCESS {
            bail!("the deploy of {target} did not finish (see above)");
        }
    }
    let domain: DomainName = DOMAIN.parse()?;
    let domains = client.call(&ep::ListDomains).await?;
    if !domains.iter().any(|d| d.domain == domain) {
        let body = AddDomain {
            domain,
            app,
            env: "production".parse()?,
            tls: None,
        };
        client.call(&ep::AddDomain { body }).await?;
    }
    Ok(())
}

/// `text` as one shell word: as is when it has nothing a shell would read, else single-quoted.
fn sh_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A git repository with the example app on `main` and a changed greeting on `staging`.
async fn ensure_repo(repo: &Path) -> anyhow::Result<()> {
    if repo.join(".git").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(repo)?;
    git(repo, &["init", "--quiet", "--initial-branch=main"]).await?;
    for (name, text) in FILES {
        std::fs::write(repo.join(name), text)?;
    }
    git(repo, &["add", "--all"]).await?;
    git(repo, &["commit", "--quiet", "-m", "The example app"]).await?;
    git(repo, &["checkout", "--quiet", "-b", "staging"]).await?;
    std::fs::write(repo.join("message.txt"), "Hello from the staging branch\n")?;
    git(
        repo,
        &[
            "commit",
            "--quiet",
            "-am",
            "A new greeting, to review in staging",
        ],
    )
    .await?;
    git(repo, &["checkout", "--quiet", "main"]).await?;
    Ok(())
}

async fn git(repo: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Turnout demo",
            "-c",
            "user.email=demo@turnout.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .await
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn paths_are_quoted_only_when_a_shell_would_split_or_expand_them() {
        assert_eq!(
            sh_quote("/home/a/.local/share/turnout-demo"),
            "/home/a/.local/share/turnout-demo"
        );
        assert_eq!(sh_quote("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(sh_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
    }
}
