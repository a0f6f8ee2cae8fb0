//! `turnout demo`: the daemon in the foreground with the example app from `examples/hello`
//! deployed into two environments, production (branch `main`) and staging (branch `staging`),
//! from a git repository the demo creates in its home. Running it again reuses what is there.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use turnout_model::{AppInfo, CreateApp, CreateEnv, EnvInfo, EnvRef, Tier};

use crate::cli::ServeArgs;
use crate::client::Client;

const APP: &str = "hello";
const FILES: &[(&str, &str)] = &[
    ("app.py", include_str!("../examples/hello/app.py")),
    (
        "turnout.toml",
        include_str!("../examples/hello/turnout.toml"),
    ),
    ("message.txt", include_str!("../examples/hello/message.txt")),
];

/// The demo keeps its own home beside the default one, so it never mixes with real apps.
pub fn default_home() -> PathBuf {
    turnout_control::home::default_home().with_file_name("turnout-demo")
}

pub async fn run(home: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&home)
        .with_context(|| format!("cannot create the demo home {}", home.display()))?;
    let repo = home.join("demo-repo");
    ensure_repo(&repo).await?;

    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let daemon_home = home.clone();
    let daemon_args = args.clone();
    let daemon = tokio::spawn(async move {
        crate::run_daemon(daemon_home, &daemon_args, false, move |info| {
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
    let client = Client::new(&info.api, Some(token))?;
    if let Err(e) = set_up(&client, &repo).await {
        eprintln!("error: the demo could not deploy: {e:#}");
        eprintln!("the daemon keeps running; press Ctrl-C to stop it");
    } else {
        let port = info.http.rsplit(':').next().unwrap_or("8080");
        println!();
        println!("The Turnout demo is running (Ctrl-C stops it and its instances).");
        println!();
        println!("  production  http://production.{APP}.localhost:{port}/   (branch main)");
        println!("  staging     http://staging.{APP}.localhost:{port}/      (branch staging)");
        println!();
        println!(
            "Try, in another terminal (TURNOUT_HOME lets the CLI find this daemon and its owner token):"
        );
        println!("  export TURNOUT_HOME={}", home.display());
        println!("  curl http://staging.{APP}.localhost:{port}/");
        println!("  curl -H 'Host: production.{APP}.localhost' http://127.0.0.1:{port}/");
        println!("  turnout env list");
        println!("  turnout env show {APP}/staging");
        println!("  turnout logs {APP}/production -f");
        println!("  # change staging and redeploy it with zero downtime:");
        println!("  git -C {} checkout -q staging", repo.display());
        println!(
            "  echo 'Hello again from staging' > {}/message.txt",
            repo.display()
        );
        println!("  git -C {} commit -qam 'New greeting'", repo.display());
        println!("  turnout deploy {APP}/staging");
        println!("  # give the demo a public name and move it between the environments:");
        println!("  turnout domain add hello.localhost {APP}/production");
        println!("  turnout domain switch hello.localhost {APP}/staging");
        println!("  turnout domain rollback hello.localhost");
        println!("  turnout audit --app {APP}");
    }
    daemon.await.context("the daemon task failed")?
}

/// Create the app and its two environments unless they exist, then deploy both.
async fn set_up(client: &Client, repo: &Path) -> anyhow::Result<()> {
    let apps: Vec<AppInfo> = client.get("/apps").await?;
    if !apps.iter().any(|a| a.name.as_str() == APP) {
        let body = CreateApp {
            name: APP.parse()?,
            repo: repo.display().to_string(),
            token_env: None,
        };
        let _: AppInfo = client.post("/apps", &body).await?;
    }
    let envs: Vec<EnvInfo> = client.get(&format!("/apps/{APP}/envs")).await?;
    for (env, branch, tier) in [
        ("production", "main", Tier::Production),
        ("staging", "staging", Tier::Staging),
    ] {
        if !envs.iter().any(|e| e.name.as_str() == env) {
            let body = CreateEnv {
                name: env.parse()?,
                branch: branch.to_owned(),
                tier: Some(tier),
            };
            let _: EnvInfo = client.post(&format!("/apps/{APP}/envs"), &body).await?;
        }
        let target: EnvRef = format!("{APP}/{env}").parse()?;
        println!("deploying {target} from branch {branch}");
        if !crate::deploy(client, &target, None, false).await? {
            bail!("the deploy of {target} failed (see above)");
        }
    }
    Ok(())
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
