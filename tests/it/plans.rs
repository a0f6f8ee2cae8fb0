//! Resource plans: set, shown and cleared through the CLI; the app file's plan per tier, which
//! the environment's own plan overrides field by field; bounds; who may change a plan.
use serde_json::{Value, json};

use crate::support::{Daemon, Repo, TOML};

/// POST a plan update with `token`: (status, body).
async fn post_plan(d: &Daemon, token: &str, env: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/apps/shop/envs/{env}/plan", d.api))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The `plan` line of `env show`.
fn plan_line(d: &Daemon, env: &str) -> String {
    d.ok(&["env", "show", env])
        .lines()
        .find_map(|l| l.strip_prefix("plan"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_plan_is_set_shown_and_cleared_through_the_cli() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    assert_eq!(plan_line(&d, "shop/dev"), "none");

    let out = d.ok(&[
        "env", "update", "shop/dev", "--memory", "512M", "--cpu", "0.5",
    ]);
    assert!(
        out.contains("plan of shop/dev: memory 512 MiB, cpu 0.5, pids none")
            && out.contains("turnout restart shop/dev"),
        "{out}"
    );
    assert_eq!(
        plan_line(&d, "shop/dev"),
        "memory 512 MiB, cpu 0.5, pids none"
    );

    // Storage: the bytes under the storage directory of the environment's data (made by its
    // first deploy), symbolic links not followed.
    assert_eq!(
        d.json(&["env", "show", "shop/dev"])["usage"]["storage"],
        0,
        "no data before the first deploy"
    );
    d.ok(&["deploy", "shop/dev"]);
    let env = d.json(&["env", "show", "shop/dev"]);
    let storage = std::path::Path::new(env["dir"].as_str().unwrap()).join("data/g1/storage");
    std::fs::create_dir_all(storage.join("db")).unwrap();
    std::fs::write(storage.join("db/data"), vec![7u8; 3000]).unwrap();
    std::os::unix::fs::symlink(repo.path(), storage.join("elsewhere")).unwrap();
    let env = d.json(&["env", "show", "shop/dev"]);
    assert_eq!(
        env["plan"],
        json!({"memory": 512 << 20, "cpu": 0.5, "pids": null})
    );
    assert_eq!(env["usage"]["storage"], 3000, "{env}");
    let shown = d.ok(&["env", "show", "shop/dev"]);
    assert!(shown.contains("storage 2.9 KiB"), "{shown}");
    let listed = d.json(&["env", "list", "shop"]);
    assert_eq!(listed[0]["plan"], env["plan"], "{listed}");

    // One field cleared, one set, one left.
    d.ok(&[
        "env", "update", "shop/dev", "--memory", "none", "--pids", "64",
    ]);
    let env = d.json(&["env", "show", "shop/dev"]);
    assert_eq!(env["plan"], json!({"memory": null, "cpu": 0.5, "pids": 64}));
    d.ok(&[
        "env", "update", "shop/dev", "--cpu", "none", "--pids", "none",
    ]);
    assert_eq!(plan_line(&d, "shop/dev"), "none");

    let audit = d.json(&["audit", "--app", "shop"]);
    let changes: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "env.plan")
        .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [
            ("memory none, cpu 0.5, pids 64", "none"),
            (
                "memory 512 MiB, cpu 0.5, pids none",
                "memory none, cpu 0.5, pids 64"
            ),
            ("none", "memory 512 MiB, cpu 0.5, pids none"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_absurd_values_are_clear_errors_and_change_nothing() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["env", "update", "shop/dev", "--pids", "100"]);

    // The CLI checks its flags by the server's rules: a usage error, exit 2, nothing sent.
    for (flag, value, hint) in [
        ("--memory", "512X", "write it like 512M or 2G (4M to 16T)"),
        ("--memory", "99999999999999999999T", "(4M to 16T)"),
        ("--memory", "17T", "(4M to 16T)"),
        ("--cpu", "0", "(0.01 to 1024)"),
        ("--cpu", "1e9", "(0.01 to 1024)"),
        ("--pids", "-1", "(1 to 4194304)"),
        ("--pids", "4194305", "(1 to 4194304)"),
    ] {
        let out = d.cli(&["env", "update", "shop/dev", flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")) && err.contains(hint),
            "{flag} {value}: {err}"
        );
    }
    let out = d.cli(&["env", "update", "shop/dev"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--memory"),
        "{out:?}"
    );

    // The API checks them again (400, exit 1 for a client that did not check), naming the
    // field; a body with one bad field changes none.
    let admin = d.admin_token();
    for (body, needle) in [
        (
            json!({"memory": "512X"}),
            "invalid memory '512X': write it like 512M or 2G (4M to 16T)",
        ),
        (
            json!({"memory": "1G", "cpu": "0"}),
            "invalid cpu '0': write it like 0.5 or 2, in cores (0.01 to 1024)",
        ),
        (
            json!({"pids": "99999999999999999999999"}),
            "invalid pids '99999999999999999999999'",
        ),
        (json!({"cpu": "NaN"}), "invalid cpu 'NaN'"),
        (json!({}), "give at least one of memory, cpu or pids"),
        (json!({"memory": 512}), "invalid type"),
    ] {
        let (status, text) = post_plan(&d, &admin, "dev", body.clone()).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    assert_eq!(plan_line(&d, "shop/dev"), "memory none, cpu none, pids 100");
    let (status, text) = post_plan(&d, &admin, "nope", json!({"cpu": "1"})).await;
    assert_eq!(status, 404, "{text}");
}

#[test]
fn the_app_file_plan_shows_after_a_deploy_and_the_cli_overrides_it_field_by_field() {
    let repo = Repo::new("x");
    repo.write(
        "turnout.toml",
        &format!(
            "{TOML}\n[plan]\nmemory = \"256M\"\ncpu = 0.5\n\n\
             [tiers.staging.plan]\ncpu = 0.25\npids = 100\n\n\
             [environments.special.plan]\nmemory = \"1G\"\n"
        ),
    );
    repo.commit("plans");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("stg", "main", "staging"),
            ("special", "main", "staging"),
            ("dev", "main", "development"),
        ],
    );
    // Before a deploy there is no app file yet: only the environment's own plan (none).
    assert_eq!(plan_line(&d, "shop/stg"), "none");
    for env in ["shop/stg", "shop/special", "shop/dev"] {
        d.ok(&["deploy", env]);
    }
    assert_eq!(
        plan_line(&d, "shop/stg"),
        "memory 256 MiB, cpu 0.25, pids 100"
    );
    assert_eq!(
        plan_line(&d, "shop/special"),
        "memory 1 GiB, cpu 0.25, pids 100"
    );
    assert_eq!(
        plan_line(&d, "shop/dev"),
        "memory 256 MiB, cpu 0.5, pids none"
    );

    // The environment's own value wins for its field only; cleared, the file's is back.
    let out = d.ok(&["env", "update", "shop/stg", "--cpu", "2"]);
    assert!(
        out.contains("plan of shop/stg: memory 256 MiB, cpu 2, pids 100"),
        "{out}"
    );
    assert_eq!(plan_line(&d, "shop/stg"), "memory 256 MiB, cpu 2, pids 100");
    d.ok(&["env", "update", "shop/stg", "--cpu", "none"]);
    assert_eq!(
        plan_line(&d, "shop/stg"),
        "memory 256 MiB, cpu 0.25, pids 100"
    );

    // A bad [plan] fails the deploy naming the file, line and value, and changes nothing.
    repo.write(
        "turnout.toml",
        &format!("{TOML}\n[tiers.staging.plan]\nmemory = \"512X\"\n"),
    );
    repo.commit("bad plan");
    let out = d.cli(&["deploy", "shop/stg"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("turnout.toml, line")
            && text.contains("invalid memory '512X': write it like 512M or 2G (4M to 16T)"),
        "{text}"
    );
    assert_eq!(
        plan_line(&d, "shop/stg"),
        "memory 256 MiB, cpu 0.25, pids 100"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_may_plan_development_but_not_production() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("dev", "main", "development"),
            ("prod", "main", "production"),
        ],
    );
    d.ok(&["user", "add", "dana"]);
    d.ok(&["access", "grant", "dana", "shop", "developer"]);
    let token = d.json(&["token", "create", "--user", "dana"])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = d.cli_as(&token, &["env", "update", "shop/dev", "--memory", "64M"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        plan_line(&d, "shop/dev"),
        "memory 64 MiB, cpu none, pids none"
    );

    let out = d.cli_as(&token, &["env", "update", "shop/prod", "--memory", "64M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("owner"),
        "the error names the role needed: {err}"
    );
    let (status, text) = post_plan(&d, &token, "prod", json!({"memory": "64M"})).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(plan_line(&d, "shop/prod"), "none");
}
