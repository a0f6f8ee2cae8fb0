//! Bad input gets one clear line and changes nothing; nothing the user types reaches a shell.
use crate::support::{Daemon, Repo, find_files};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_refs_branches_and_repos_are_clear_errors() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    let repo_path = repo.path().to_str().unwrap();

    let err = d.fails(&["app", "create", "My_Shop", "--repo", repo_path]);
    assert!(
        err.contains("invalid app name 'My_Shop'")
            && err.contains("lowercase letters, digits and hyphens"),
        "{err}"
    );
    let err = d.fails(&["app", "create", &"a".repeat(41), "--repo", repo_path]);
    assert!(err.contains("1-40"), "{err}");

    // An unreadable repository: a path that is not a repository, and one that does not exist.
    let not_a_repo = tempfile::tempdir().unwrap();
    let err = d.fails(&[
        "app",
        "create",
        "shop",
        "--repo",
        not_a_repo.path().to_str().unwrap(),
    ]);
    assert!(
        err.contains("cannot read repository") && err.contains(not_a_repo.path().to_str().unwrap()),
        "{err}"
    );
    let err = d.fails(&["app", "create", "shop", "--repo", "/nonexistent/repo"]);
    assert!(
        err.contains("cannot read repository '/nonexistent/repo'"),
        "{err}"
    );
    // git's cause (its fatal: line), not the advice it prints last.
    let err = d.fails(&["app", "create", "x", "--repo", "/does/not/exist"]);
    assert!(
        err.contains("'/does/not/exist' does not appear to be a git repository")
            && !err.contains("and the repository exists"),
        "{err}"
    );
    let err = d.fails(&[
        "app",
        "create",
        "shop",
        "--repo",
        "ext::sh -c touch% /tmp/x",
    ]);
    assert!(err.contains("invalid repository"), "{err}");
    assert!(
        d.json(&["app", "list"]).as_array().unwrap().is_empty(),
        "nothing was created"
    );

    d.ok(&["app", "create", "shop", "--repo", repo_path]);
    let err = d.fails(&["app", "create", "shop", "--repo", repo_path]);
    assert!(err.contains("already exists"), "{err}");

    let err = d.fails(&["env", "create", "shop/Staging", "--branch", "main"]);
    assert!(err.contains("invalid environment name 'Staging'"), "{err}");
    let err = d.fails(&["env", "create", "shop", "--branch", "main"]);
    assert!(err.contains("APP/ENV"), "{err}");
    let err = d.fails(&[
        "env", "create", "shop/qa", "--branch", "main", "--tier", "prod",
    ]);
    assert!(
        err.contains("unknown tier 'prod'") && err.contains("production-copy"),
        "{err}"
    );
    let err = d.fails(&["env", "create", "shop/qa", "--branch", "no-such-branch"]);
    assert!(
        err.contains("branch 'no-such-branch' does not exist")
            && err.contains("existing branches: main"),
        "{err}"
    );
    let err = d.fails(&["env", "create", "shop/qa", "--branch", "a..b"]);
    assert!(err.contains("invalid branch name"), "{err}");
    let err = d.fails(&["env", "create", "nope/qa", "--branch", "main"]);
    assert!(err.contains("no app named 'nope'"), "{err}");
    assert!(
        d.json(&["env", "list"]).as_array().unwrap().is_empty(),
        "nothing was created"
    );

    d.ok(&[
        "env", "create", "shop/qa", "--branch", "main", "--tier", "qa",
    ]);
    let err = d.fails(&["deploy", "shop/qa", "--ref", "no-such-ref"]);
    assert!(err.contains("ref 'no-such-ref' does not exist"), "{err}");
    let err = d.fails(&["deploy", "shop/qa", "--ref=--upload-pack=touch pwned"]);
    assert!(err.contains("invalid ref"), "{err}");
    let err = d.fails(&["deploy", "shop/nope"]);
    assert!(err.contains("no environment 'nope'"), "{err}");
    let env = d.json(&["env", "show", "shop/qa"]);
    assert_eq!(env["status"], "not_deployed");

    // A branch deleted after the environment was created.
    repo.branch("gone");
    repo.branch("main");
    d.ok(&["env", "create", "shop/gone", "--branch", "gone"]);
    repo.git(&["branch", "-D", "gone"]);
    let err = d.fails(&["deploy", "shop/gone"]);
    assert!(err.contains("branch 'gone' does not exist"), "{err}");

    // A turnout.toml with an unknown key names the file, line and key.
    repo.write(
        "turnout.toml",
        "[run]\ncommand = \"exec python3 app.py\"\n\n[helth]\npath = \"/\"\n",
    );
    repo.commit("typo");
    let err = d.fails(&["deploy", "shop/qa"]);
    assert!(
        err.contains("turnout.toml, line 4") && err.contains("helth"),
        "{err}"
    );

    // The API itself answers bad names with 400 and a JSON error.
    let out = d.fails(&["--api", &format!("{}/", d.api), "env", "show", "shop/x_y"]);
    assert!(out.contains("invalid environment name"), "{out}");
    let unreachable = std::process::Command::new(crate::support::BIN)
        .args(["--api", "http://127.0.0.1:9", "app", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        !unreachable.status.success() && err.contains("cannot reach the Turnout API"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_in_branches_and_refs_are_never_executed() {
    let repo = Repo::new("plain");
    let evil_branch = "x;touch${IFS}pwned-branch;$(touch${IFS}pwned-subst)`touch${IFS}pwned-tick`";
    repo.branch(evil_branch);
    repo.write("content.txt", "evil branch content");
    repo.commit("on the evil branch");
    repo.branch("main");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("evil", evil_branch, "test")]);
    d.ok(&["deploy", "shop/evil"]);
    let (_, body) = d.get("evil.shop.localhost", "/").await;
    assert!(body.starts_with("evil branch content"), "{body}");
    let env = d.json(&["env", "show", "shop/evil"]);
    assert_eq!(env["branch"], evil_branch);

    let err = d.fails(&["deploy", "shop/evil", "--ref", "$(touch${IFS}pwned-ref)"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = d.fails(&["deploy", "shop/evil", "--ref", "main;touch${IFS}pwned-ref2"]);
    assert!(err.contains("does not exist"), "{err}");

    for dir in [d.home.path(), d.cwd.path(), repo.path()] {
        for name in [
            "pwned-branch",
            "pwned-subst",
            "pwned-tick",
            "pwned-ref",
            "pwned-ref2",
        ] {
            let found = find_files(dir, name);
            assert!(found.is_empty(), "a shell ran user input: {found:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_token_never_reaches_errors_or_the_store() {
    let secret = "tok_3f9a1c2bd7e8_secret";
    let d = Daemon::start_with_env(&[("SHOP_GIT_TOKEN", secret)]);
    // A token never travels over plain http.
    let err = d.fails(&[
        "app",
        "create",
        "shop",
        "--repo",
        "http://127.0.0.1:9/shop.git",
        "--token-env",
        "SHOP_GIT_TOKEN",
    ]);
    assert!(
        err.contains("refusing to send the token") && err.contains("https://"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
    // Nothing listens on port 9: git fails, and its error must not carry the token.
    let out = d.cli(&[
        "app",
        "create",
        "shop",
        "--repo",
        "https://127.0.0.1:9/shop.git",
        "--token-env",
        "SHOP_GIT_TOKEN",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(all.contains("cannot read repository"), "{all}");
    assert!(!all.contains(secret), "{all}");

    let err = d.fails(&[
        "app",
        "create",
        "shop",
        "--repo",
        "http://127.0.0.1:9/x.git",
        "--token-env",
        "MISSING_VAR",
    ]);
    assert!(err.contains("no variable 'MISSING_VAR'"), "{err}");
    let err = d.fails(&[
        "app",
        "create",
        "shop",
        "--repo",
        "http://127.0.0.1:9/x.git",
        "--token-env",
        secret,
    ]);
    assert!(
        err.contains("invalid --token-env") && !err.contains(secret),
        "{err}"
    );

    for f in find_files(d.home.path(), "turnout.db")
        .into_iter()
        .chain(find_files(d.home.path(), "turnout.db-wal"))
    {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{f:?} holds the token"
        );
    }
    let log = std::fs::read_to_string(d.cwd.path().join("serve.log")).unwrap();
    assert!(
        log.contains("cannot read repository"),
        "the daemon logs refused requests: {log}"
    );
    assert!(!log.contains(secret), "the daemon's log holds the token");
}

/// Absurd durations in turnout.toml fail the deploy with the key and its range, leave no
/// release `building`, and a fraction of a second is a valid interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnout_toml_durations_are_bounded() {
    let repo = Repo::new("fast");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    for (key, value, want) in [
        (
            "timeout = \"20s\"",
            "timeout = \"99999999999999999h\"",
            "health.timeout '99999999999999999h' is out of range: it must be between 1s and 1h",
        ),
        (
            "interval = \"50ms\"",
            "interval = \"0s\"",
            "health.interval '0s' is out of range: it must be between 10ms and 1h",
        ),
        (
            "stop_timeout = \"5s\"",
            "stop_timeout = \"99999999999999999h\"",
            "run.stop_timeout '99999999999999999h' is out of range",
        ),
    ] {
        repo.write("turnout.toml", &crate::support::TOML.replace(key, value));
        repo.commit(value);
        let err = d.fails(&["deploy", "shop/qa"]);
        assert!(
            err.contains("turnout.toml, line") && err.contains(want),
            "{err}"
        );
    }
    let releases = d.json(&["release", "list", "shop/qa"]);
    assert!(
        releases
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "building"),
        "{releases}"
    );

    repo.write(
        "turnout.toml",
        &crate::support::TOML.replace("interval = \"50ms\"", "interval = 0.05"),
    );
    repo.commit("a fraction of a second");
    d.ok(&["deploy", "shop/qa"]);
    let (status, body) = d.get("qa.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("fast")), (200, true), "{body}");
}

/// Every refusal of the API is `{"error", "code"}` with a 4xx, axum's own included (a bad query
/// string or path segment, a body over the limit, a wrong method), and a body with a field the
/// endpoint does not know is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_refusal_is_a_json_error() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    // A connection per request: the server closes one after refusing a body it did not read
    // (413), and a pooled connection could be reused in that instant.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let token = d.admin_token();
    let send = |method: reqwest::Method, path: &str, body: Option<Vec<u8>>| {
        let mut req = client
            .request(method, format!("{}{path}", d.api))
            .bearer_auth(&token);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{status} {text:?} is not JSON: {e}"));
            (status, json)
        }
    };
    use reqwest::Method;
    let cases = [
        (
            Method::POST,
            "/api/v1/apps",
            Some(br#"{"name": "web", "repo": "/x", "colour": "red"}"#.to_vec()),
            400,
            "invalid",
            "unknown field `colour`",
        ),
        (
            Method::POST,
            "/api/v1/apps/shop/envs/qa/deploy",
            Some(br#"{"git_ref": null, "force": true}"#.to_vec()),
            400,
            "invalid",
            "unknown field `force`",
        ),
        (
            Method::POST,
            "/api/v1/domains",
            Some(br#"{"domain": "127.0.0.1", "app": "shop", "env": "qa"}"#.to_vec()),
            400,
            "invalid",
            "an IP address is not a domain",
        ),
        (
            Method::POST,
            "/api/v1/apps",
            Some(vec![b' '; 3 << 20]),
            413,
            "too_large",
            "at most 2 MiB",
        ),
        (
            Method::GET,
            "/api/v1/jobs?all=maybe",
            None,
            400,
            "invalid",
            "Failed to deserialize query string",
        ),
        (
            Method::GET,
            "/api/v1/jobs/not-a-number",
            None,
            400,
            "invalid",
            "not-a-number",
        ),
        (
            Method::PUT,
            "/api/v1/apps",
            None,
            405,
            "method_not_allowed",
            "does not take that method",
        ),
    ];
    for (method, path, body, status, code, needle) in cases {
        let (got, json) = send(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {json}");
        assert_eq!(json["code"], code, "{method} {path}: {json}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(needle), "{method} {path}: {error}");
    }
    assert_eq!(d.json(&["app", "list"]).as_array().unwrap().len(), 1);
    assert!(d.json(&["domain", "list"]).as_array().unwrap().is_empty());
    let err = d.fails(&["domain", "add", "127.0.0.1", "shop/qa"]);
    assert!(err.contains("an IP address is not a domain"), "{err}");
}

/// A name that fails validation is quoted in the refusal the daemon logs, escaped: a newline in
/// it cannot start a forged line of the daemon's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_cannot_forge_daemon_log_lines() {
    let d = Daemon::start();
    let forged = "2030-01-01T00:00:00.000000Z  INFO turnout: admin token revoked";
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/apps/x%0A{}/envs",
            d.api,
            forged.replace(' ', "%20")
        ))
        .bearer_auth(d.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("x\n{forged}")),
        "{body}"
    );
    let log = std::fs::read_to_string(d.cwd.path().join("serve.log")).unwrap();
    assert!(log.contains(&format!("x\\n{forged}")), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2030-01-01")),
        "a forged line: {log}"
    );
}

/// `turnout … | head`: once the reader has closed the pipe, the CLI stops quietly (status 0, no
/// panic, no backtrace), whether it prints a table, JSON or a log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_cli_quietly() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    for args in [
        &["release", "list", "shop/qa"][..],
        &["--json", "release", "list", "shop/qa"],
        &["app", "list"],
        &["logs", "shop/qa"],
    ] {
        // The reading end is closed before the CLI starts: its first write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(crate::support::BIN)
            .arg("--api")
            .arg(&d.api)
            .arg("--home")
            .arg(d.home.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}
