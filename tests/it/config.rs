//! Configuration inherited app → tier → environment over the app file's `[env]` layers, the
//! snapshot each release runs with (restart applies, rollback restores), and secrets sealed at
//! rest: never in the store file, its WAL, the audit log, a build or a process's arguments.
use std::path::Path;

use serde_json::Value;

use crate::support::{BIN, Daemon, Repo, TOML};

/// The entry of `key` in `config list --json`.
fn entry(listing: &Value, key: &str) -> Value {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} not listed: {listing}"))
}

/// Whether `needle` appears in the store file or its WAL.
fn in_store(home: &Path, needle: &str) -> bool {
    ["turnout.db", "turnout.db-wal"].iter().any(|name| {
        std::fs::read(home.join(name))
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

/// `turnout ARGS` with `stdin` written to its standard input.
fn with_stdin(d: &Daemon, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = std::process::Command::new(BIN)
        .args(["--api", &d.api, "--home"])
        .arg(d.home.path())
        .env_remove("TURNOUT_TOKEN")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// `with_stdin`, which must succeed.
fn ok_with_stdin(d: &Daemon, args: &[&str], stdin: &str) {
    let out = with_stdin(d, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_inherited_app_tier_env_over_the_app_file_by_one_rule() {
    let repo = Repo::new("v1");
    repo.write(
        "turnout.toml",
        &format!(
            "{TOML}\n[env]\nF_ONLY = \"file\"\nF_TIER = \"file\"\nF_ENV = \"file\"\nOVER_FILE = \"file\"\n\
             [tiers.staging.env]\nF_TIER = \"file-tier\"\nF_ENV = \"file-tier\"\n\
             [environments.stg.env]\nF_ENV = \"file-env\"\n"
        ),
    );
    repo.commit("config in the app file");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("stg", "main", "staging"), ("dev", "main", "development")],
    );
    d.ok(&[
        "config",
        "set",
        "shop",
        "OVER_FILE=app",
        "APP_TIER=app",
        "ALL=app",
    ]);
    d.ok(&[
        "config",
        "set",
        "shop",
        "--tier",
        "staging",
        "APP_TIER=tier",
        "ALL=tier",
    ]);
    d.ok(&["config", "set", "shop/stg", "ALL=env"]);
    // Below production the mail catcher's URL wins over any value set for it.
    d.ok(&[
        "config",
        "set",
        "shop",
        "--tier",
        "staging",
        "SMTP_URL=smtp://mail.example.com:25",
    ]);
    d.ok(&["deploy", "shop/stg"]);
    d.ok(&["deploy", "shop/dev"]);

    let expected = [
        ("F_ONLY", "file", "file", "file"),
        ("F_TIER", "file-tier", "file-tier", "file"),
        ("F_ENV", "file-env", "file-env", "file"),
        ("OVER_FILE", "app", "app", "app"),
        ("APP_TIER", "tier", "tier", "app"),
        ("ALL", "env", "env", "app"),
    ];
    let stg = d.json(&["config", "list", "shop/stg"]);
    let dev = d.json(&["config", "list", "shop/dev"]);
    for (key, stg_value, stg_level, dev_value) in expected {
        let (_, body) = d.get("stg.shop.localhost", &format!("/env/{key}")).await;
        assert_eq!(body, format!("{stg_value}\n"), "{key} in stg");
        assert_eq!(entry(&stg, key)["level"], stg_level, "{key}: {stg}");
        assert_eq!(entry(&stg, key)["value"], stg_value);
        let (_, body) = d.get("dev.shop.localhost", &format!("/env/{key}")).await;
        assert_eq!(body, format!("{dev_value}\n"), "{key} in dev");
        assert_eq!(entry(&dev, key)["value"], dev_value, "{key}: {dev}");
    }
    // What each level hides is shown too.
    assert_eq!(
        entry(&stg, "ALL")["overrides"],
        serde_json::json!(["app", "tier"])
    );
    assert_eq!(
        entry(&stg, "OVER_FILE")["overrides"],
        serde_json::json!(["file"])
    );
    assert_eq!(
        entry(&stg, "F_ENV")["overrides"],
        serde_json::json!(["file", "file-tier"])
    );
    // Turnout's own variables, on top of every level.
    assert_eq!(entry(&stg, "TURNOUT_ENV")["level"], "turnout");
    assert_eq!(entry(&stg, "TURNOUT_ENV")["value"], "stg");
    assert_eq!(entry(&stg, "PORT")["level"], "turnout");
    assert_eq!(entry(&stg, "DATABASE_URL")["level"], "turnout");
    let smtp = entry(&stg, "SMTP_URL");
    assert_eq!(smtp["level"], "turnout", "{smtp}");
    assert_eq!(smtp["overrides"], serde_json::json!(["tier"]));
    let value = smtp["value"].as_str().unwrap();
    assert!(
        value.starts_with("smtp://shop.stg:***@127.0.0.1:"),
        "{value}"
    );
    let (_, body) = d.get("stg.shop.localhost", "/env/SMTP_URL").await;
    assert!(
        body.starts_with("smtp://shop.stg:") && !body.contains("example.com"),
        "{body}"
    );
    let text = d.ok(&["config", "list", "shop/stg"]);
    assert!(text.contains("later wins"), "{text}");
    // One key resolved, and what is set at one level.
    assert_eq!(
        d.ok(&["config", "get", "shop/stg", "APP_TIER"]).trim(),
        "tier"
    );
    let tier = d.json(&["config", "list", "shop", "--tier", "staging"]);
    let keys: Vec<&str> = tier["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["ALL", "APP_TIER", "SMTP_URL"]);

    // Unset at the environment level: the tier's value shows through after a restart.
    d.ok(&["config", "unset", "shop/stg", "ALL"]);
    d.ok(&["restart", "shop/stg"]);
    let (_, body) = d.get("stg.shop.localhost", "/env/ALL").await;
    assert_eq!(body, "tier\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_applies_a_change_env_show_says_when_stale_and_rollback_restores_old_config() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("stg", "main", "staging")]);
    d.ok(&["config", "set", "shop/stg", "COLOR=blue"]);
    d.ok(&["config", "set", "shop/stg", "--secret", "TOKEN=old-token"]);
    d.ok(&["deploy", "shop/stg"]);
    let show = d.json(&["env", "show", "shop/stg"]);
    assert_eq!(show["config"]["stale"], false, "{show}");
    let v1 = show["config"]["set_version"].as_i64().unwrap();

    // A change is not applied by itself: env show says so, restart applies it.
    d.ok(&["config", "set", "shop/stg", "COLOR=green"]);
    let show = d.json(&["env", "show", "shop/stg"]);
    assert_eq!(show["config"]["stale"], true, "{show}");
    assert_eq!(show["config"]["running_version"], v1);
    let text = d.ok(&["env", "show", "shop/stg"]);
    assert!(
        text.contains(&format!("running version {v1}"))
            && text.contains("turnout restart shop/stg"),
        "{text}"
    );
    let (_, body) = d.get("stg.shop.localhost", "/env/COLOR").await;
    assert_eq!(body, "blue\n");
    d.ok(&["restart", "shop/stg"]);
    let (_, body) = d.get("stg.shop.localhost", "/env/COLOR").await;
    assert_eq!(body, "green\n");
    assert_eq!(
        d.json(&["env", "show", "shop/stg"])["config"]["stale"],
        false
    );

    // A new release with new values; rollback brings back the old code with its values.
    repo.write("content.txt", "v2");
    repo.commit("v2");
    d.ok(&["config", "set", "shop/stg", "COLOR=red"]);
    d.ok(&["config", "set", "shop/stg", "--secret", "TOKEN=new-token"]);
    d.ok(&["deploy", "shop/stg"]);
    let (_, body) = d.get("stg.shop.localhost", "/env/TOKEN").await;
    assert_eq!(body, "new-token\n");
    d.ok(&["rollback", "shop/stg"]);
    let (_, body) = d.get("stg.shop.localhost", "/").await;
    assert!(body.starts_with("v1 "), "{body}");
    let (_, body) = d.get("stg.shop.localhost", "/env/COLOR").await;
    assert_eq!(body, "green\n", "the configuration the release ran with");
    let (_, body) = d.get("stg.shop.localhost", "/env/TOKEN").await;
    assert_eq!(body, "old-token\n");
    // What is set stays set, and env show says the environment runs older configuration.
    let show = d.json(&["env", "show", "shop/stg"]);
    assert_eq!(show["config"]["stale"], true, "{show}");
    assert_eq!(
        d.json(&["config", "get", "shop/stg", "COLOR"])["value"],
        "red"
    );
    d.ok(&["restart", "shop/stg"]);
    let (_, body) = d.get("stg.shop.localhost", "/env/COLOR").await;
    assert_eq!(body, "red\n");
    let (_, body) = d.get("stg.shop.localhost", "/").await;
    assert!(
        body.starts_with("v1 "),
        "a restart keeps the release: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_hidden_from_builds_arguments_audit_and_viewers() {
    let repo = Repo::new("v1");
    // The build writes down the environment it saw.
    repo.write(
        "turnout.toml",
        &TOML.replace(
            "echo building; echo yes > built.txt",
            "env > build-env.txt; echo yes > built.txt",
        ),
    );
    repo.commit("record the build's environment");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    let secret = "sk_live_7d1e9c0ffee5a11ce";
    // From standard input: never an argument.
    ok_with_stdin(
        &d,
        &["config", "set", "shop/prod", "--secret", "API_KEY"],
        &format!("{secret}\n"),
    );
    assert!(
        !in_store(d.home.path(), secret),
        "a secret in the store in plain text"
    );
    d.ok(&["deploy", "shop/prod"]);
    let (_, body) = d.get("prod.shop.localhost", "/env/API_KEY").await;
    assert_eq!(body, format!("{secret}\n"));
    // After the snapshot of the launch too.
    assert!(!in_store(d.home.path(), secret));

    // Masked when listed; shown only to who may deploy there.
    let listed = d.ok(&["config", "list", "shop/prod"]);
    assert!(
        listed.contains("API_KEY") && listed.contains("(secret)") && !listed.contains(secret),
        "{listed}"
    );
    let shown = d.json(&["config", "list", "shop/prod", "--show-secrets"]);
    assert_eq!(entry(&shown, "API_KEY")["value"], secret);
    d.ok(&["user", "add", "vera"]);
    d.ok(&["access", "grant", "vera", "shop", "viewer"]);
    let vera = d.json(&["token", "create", "--user", "vera"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_vera = d.cli_as(&vera, &["config", "list", "shop/prod", "--show-secrets"]);
    assert!(!as_vera.status.success());
    let err = String::from_utf8_lossy(&as_vera.stderr);
    assert!(err.contains("forbidden") && !err.contains(secret), "{err}");
    let as_vera = d.cli_as(&vera, &["config", "get", "shop/prod", "API_KEY", "--show"]);
    assert!(!as_vera.status.success());
    let as_vera = d.cli_as(&vera, &["--json", "config", "list", "shop/prod"]);
    let text = String::from_utf8_lossy(&as_vera.stdout);
    assert!(
        as_vera.status.success() && text.contains("API_KEY") && !text.contains(secret),
        "{text}"
    );
    // The app level reaches production: a maintainer may set a lower tier's values, not the
    // app's (which needs the right on every tier), nor see production's secrets.
    d.ok(&["user", "add", "mona"]);
    d.ok(&["access", "grant", "mona", "shop", "maintainer"]);
    let mona = d.json(&["token", "create", "--user", "mona"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = d.cli_as(
        &mona,
        &["config", "set", "shop", "--tier", "development", "X=1"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for args in [
        &["config", "set", "shop", "X=1"][..],
        &["config", "set", "shop/prod", "API_KEY=overwritten"],
        &["config", "get", "shop/prod", "API_KEY", "--show"],
        &["config", "list", "shop", "--show-secrets"],
    ] {
        let out = d.cli_as(&mona, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("production"),
            "{args:?}: {err}"
        );
    }
    let as_vera = d.cli_as(&vera, &["config", "set", "shop", "X=1"]);
    assert!(!as_vera.status.success());

    // Not in the build's environment, any process's arguments, the audit log or the logs.
    let builds = crate::support::find_files(d.home.path(), "build-env.txt");
    assert!(!builds.is_empty());
    for b in builds {
        let text = std::fs::read_to_string(&b).unwrap();
        assert!(
            text.contains("TURNOUT_ENV=prod") && !text.contains(secret),
            "{}",
            b.display()
        );
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !cmdline
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "a process has the secret in its arguments: {}",
                entry.path().display()
            );
        }
    }
    let audit = d.ok(&["--json", "audit", "--app", "shop"]);
    assert!(audit.contains("config.set") && audit.contains("API_KEY") && !audit.contains(secret));
    assert!(!d.log().contains(secret));

    // Rotation: every sealed value (configuration, snapshots, a webhook's secret, a mail
    // relay's URL) under the new key, still correct, the old key gone.
    let hook_secret = "hook-secret-0a1b2c3d4e5f6071";
    ok_with_stdin(
        &d,
        &["hooks", "set", "shop", "gitlab", "--secret-stdin"],
        &format!("{hook_secret}\n"),
    );
    let relay_password = "relay-pass-5e6f7a8b";
    d.ok(&[
        "mail",
        "relay",
        "shop",
        "--tier",
        "staging",
        "--url",
        &format!("smtp://u:{relay_password}@127.0.0.1:2525"),
        "--allow-domain",
        "example.test",
    ]);
    let old_key = std::fs::read(d.home.path().join("secret.key")).unwrap();
    let rotated = d.json(&["secrets", "rotate-key"]);
    let key_id = rotated["key_id"].as_str().unwrap().to_owned();
    assert!(rotated["resealed"].as_u64().unwrap() >= 4, "{rotated}");
    let new_key = std::fs::read(d.home.path().join("secret.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert!(!d.home.path().join("secret.key.new").exists());
    let db = rusqlite::Connection::open(d.home.path().join("turnout.db")).unwrap();
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    for sql in [
        "SELECT value FROM config_values WHERE secret = 1",
        "SELECT content FROM config_snapshots",
        "SELECT secret FROM hooks",
        "SELECT url FROM mail_relays",
    ] {
        let mut stmt = db.prepare(sql).unwrap();
        sealed.extend(
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    assert!(sealed.len() >= 4);
    for s in &sealed {
        let id: String = s[3..11].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id, key_id);
    }
    drop(db);
    for s in [secret, hook_secret, relay_password] {
        assert!(
            !in_store(d.home.path(), s),
            "in plain text after the rotation"
        );
    }
    d.ok(&["restart", "shop/prod"]);
    let (_, body) = d.get("prod.shop.localhost", "/env/API_KEY").await;
    assert_eq!(body, format!("{secret}\n"));
    let shown = d.json(&["config", "get", "shop/prod", "API_KEY", "--show"]);
    assert_eq!(shown["value"], secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_an_older_version_kept_in_plain_text_are_sealed_at_start_up() {
    let repo = Repo::new("v1");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("stg", "main", "staging")]);
    d.stop();
    // What an older version left: the `secrets` table with a value in plain text, and a
    // webhook's secret stored as text.
    let secret = "legacy-plain-4b1d3a77e0";
    let hook_secret = "legacy-hook-secret-90f1e2d3c4b5a697";
    {
        let db = rusqlite::Connection::open(d.home.path().join("turnout.db")).unwrap();
        db.execute_batch(include_str!(
            "../../crates/control/migrations/0004_secrets.sql"
        ))
        .unwrap();
        db.execute(
            "INSERT INTO secrets (env_id, key, value, updated_at, updated_by) \
             SELECT id, 'LEGACY', ?1, 0, 'admin' FROM environments",
            [secret],
        )
        .unwrap();
        db.execute(
            "INSERT INTO hooks (app_id, provider, secret, user_id, updated_at) \
             SELECT a.id, 'gitlab', ?1, u.id, 0 FROM apps a, users u LIMIT 1",
            [hook_secret],
        )
        .unwrap();
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    assert!(in_store(d.home.path(), secret), "the test's setup");
    d.start_again();
    for s in [secret, hook_secret] {
        assert!(
            !in_store(d.home.path(), s),
            "still in plain text after the upgrade"
        );
    }
    let listed = d.json(&["secret", "list", "shop/stg", "--show"]);
    assert_eq!(entry(&listed, "LEGACY")["value"], secret);
    d.ok(&["deploy", "shop/stg"]);
    let (_, body) = d.get("stg.shop.localhost", "/env/LEGACY").await;
    assert_eq!(body, format!("{secret}\n"));
    let audit = d.ok(&["--json", "audit"]);
    assert!(audit.contains("secrets.sealed") && !audit.contains(secret));
    // The webhook's secret still authenticates deliveries (a wrong token is refused, the
    // right one gets past authentication).
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/hooks/gitlab/shop", d.api);
    let wrong = client
        .post(&url)
        .header("X-Gitlab-Token", "not-the-secret-at-all-0000")
        .header("X-Gitlab-Event", "Push Hook")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .post(&url)
        .header("X-Gitlab-Token", hook_secret)
        .header("X-Gitlab-Event", "Push Hook")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_ne!(right.status(), 401, "{:?}", right.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("stg", "main", "staging")]);
    d.ok(&["config", "set", "shop/stg", "KEEP=1"]);
    let before = d.json(&["config", "list", "shop/stg"]);
    for (args, says) in [
        (
            vec!["shop/stg", "GOOD=1", "1BAD=2"],
            "'1BAD' is not allowed",
        ),
        (vec!["shop/stg", "GOOD=1", "A-B=2"], "'A-B' is not allowed"),
        (
            vec!["shop/stg", "GOOD=1", "PORT=2"],
            "PORT and TURNOUT_* are set by Turnout",
        ),
        (vec!["shop/stg", "TURNOUT_X=2"], "'TURNOUT_X' is reserved"),
        (
            vec!["shop/stg", "DATABASE_URL=x"],
            "'DATABASE_URL' is reserved",
        ),
        (vec!["shop", "--tier", "prod", "A=1"], "production-copy"),
        (vec!["shop/nope", "A=1"], "nope"),
        (vec!["shop/stg", "--tier", "staging", "A=1"], "not both"),
        (vec!["shop/stg", "NOVALUE"], "KEY=VALUE"),
    ] {
        let mut all = vec!["config", "set"];
        all.extend(args.iter());
        let err = d.fails(&all);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let big = "x".repeat(64 * 1024 + 1);
    let out = with_stdin(&d, &["config", "set", "shop/stg", "--secret", "BIG"], &big);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("64 KiB") && !err.contains(&big[..100]),
        "{err}"
    );
    // A NUL byte, through the API itself.
    let (status, body) = api_post(
        &d,
        "/api/v1/apps/shop/config",
        serde_json::json!({"env": "stg", "values": {"GOOD": "1", "NUL": "a\u{0}b"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("NUL"), "{body}");
    let err = d.fails(&["config", "unset", "shop/stg", "KEEP", "MISSING"]);
    assert!(err.contains("'MISSING' is not set"), "{err}");
    assert_eq!(
        d.json(&["config", "list", "shop/stg"]),
        before,
        "nothing changed"
    );
}

async fn api_post(d: &Daemon, path: &str, body: Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", d.api))
        .bearer_auth(d.admin_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
