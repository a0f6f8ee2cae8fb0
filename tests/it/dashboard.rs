//! The web dashboard (`/ui/`), on a real daemon with real apps, environments and domains:
//! sessions and their cookie, CSRF refusals, a viewer refused through the UI routes as through
//! the API, every page rendered for an owner and a viewer; then the browser test
//! (`tests/browser/`, Debian's chromium driven by playwright-core) that clicks through it.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};

use crate::data::sqlite_repo;
use crate::support::{Daemon, Repo};

const DOMAIN: &str = "shop.example.test";

/// App `shop`: production `prod` and `staging` deployed, `test` (test tier, seeded data)
/// deployed, `slow` (development) whose build takes a minute, and `shop.example.test` bound to
/// prod. Plus user `vic`, a viewer of the app; returns the daemon, the repository and vic's
/// token.
fn shop() -> (Daemon, Repo, String) {
    let repo = sqlite_repo("[environments.slow.build]\ncommand = \"sleep 60\"\n");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("staging", "main", "staging"),
            ("test", "main", "test"),
            ("slow", "main", "development"),
        ],
    );
    for env in ["prod", "staging", "test"] {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }
    d.ok(&["domain", "add", DOMAIN, "shop/prod"]);
    d.ok(&["user", "add", "vic"]);
    d.ok(&["access", "grant", "vic", "shop", "viewer"]);
    let viewer = d.json(&["token", "create", "--user", "vic"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (d, repo, viewer)
}

/// A browser's session, kept by hand: its cookie and the CSRF token its pages carry.
struct Session {
    client: Client,
    base: String,
    cookie: String,
}

impl Session {
    async fn sign_in(d: &Daemon, token: &str) -> Session {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = d.api.trim_end_matches('/').to_owned();
        let res = client
            .post(format!("{base}/ui/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "sign-in answers a redirect"
        );
        assert_eq!(res.headers()[LOCATION], "/ui/apps");
        let set = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
            assert!(set.contains(flag), "{flag} missing from {set}");
        }
        assert!(
            !set.contains(token),
            "the cookie never carries the token: {set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        Session {
            client,
            base,
            cookie,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        let csp = res
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            csp.is_some_and(|c| c.contains("script-src 'self'")),
            "{path} has its CSP"
        );
        (res.status(), res.text().await.unwrap())
    }

    async fn csrf(&self) -> String {
        let (_, page) = self.get("/ui/apps").await;
        let at = page
            .find("name=\"_csrf\" value=\"")
            .expect("a form with its CSRF token")
            + 20;
        page[at..at + 64].to_owned()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }
}

fn bound_to(d: &Daemon) -> String {
    let domains = d.json(&["domain", "list"]);
    domains.as_array().unwrap()[0]["env"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_roles_hold_on_every_page_and_action() {
    let (d, _repo, viewer_token) = shop();
    let owner = Session::sign_in(&d, &d.admin_token()).await;
    let viewer = Session::sign_in(&d, &viewer_token).await;

    // Not signed in: every page sends you to sign in; a wrong token is refused there.
    let anon = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = anon
        .get(format!("{}/ui/apps", owner.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/ui/login");
    let res = anon
        .post(format!("{}/ui/login", owner.base))
        .form(&[("token", "tnt_0000000000000000000000000000000000000000")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("the token is not known"));
    let res = anon.get(format!("{}/", owner.base)).send().await.unwrap();
    assert_eq!(res.headers()[LOCATION], "/ui/");

    // Every page renders for both; the owner's carries the actions, the viewer's none.
    let job = d.json(&["jobs", "shop", "--all"])[0]["id"]
        .as_i64()
        .unwrap();
    let pages = [
        ("/ui/apps", "shop"),
        ("/ui/apps/shop", "staging"),
        ("/ui/apps/shop/envs/test", "Releases"),
        ("/ui/domains", DOMAIN),
        (&format!("/ui/domains/{DOMAIN}") as &str, "Binding history"),
        ("/ui/jobs", "Job "),
        (&format!("/ui/jobs/{job}") as &str, "Steps"),
        ("/ui/certificates", DOMAIN),
        ("/ui/audit?app=shop", "domain.add"),
    ];
    for (path, text) in pages {
        let (status, page) = owner.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert!(page.contains(text), "{path} shows {text}");
        let (status, page) = viewer.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path} for a viewer: {page}");
        for action in [
            "Deploy",
            "Promote",
            "Rollback",
            "Roll back",
            "Reseed",
            "Restart",
            "Edit",
            "Cancel job",
            "Back up now",
        ] {
            assert!(
                !page.contains(&format!(">{action}")),
                "{path} shows a viewer the {action} control"
            );
        }
    }
    // The live parts: a job's events (the API's stream, replayed from the first) and an
    // environment's log tail, for the session's user; another page is a page that says so.
    let res = owner
        .client
        .get(format!("{}/ui/jobs/{job}/events", owner.base))
        .header(COOKIE, &owner.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events = res.text().await.unwrap();
    assert!(
        events.contains("event: step") && events.contains("event: end"),
        "{events}"
    );
    let res = viewer
        .client
        .get(format!("{}/ui/apps/shop/envs/test/logs", viewer.base))
        .header(COOKIE, &viewer.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    drop(res);
    let (status, page) = owner.get("/ui/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("no dashboard page at /ui/nowhere"), "{page}");

    let (_, pipeline) = owner.get("/ui/apps/shop").await;
    for control in ["Deploy staging", "Promote to prod", "Deploy test"] {
        assert!(pipeline.contains(control), "owner sees {control}");
    }
    let (_, domains) = owner.get("/ui/domains").await;
    assert!(domains.contains(">Edit<") && domains.contains(">Rollback<"));
    // The viewer's audit log without an app is the plane's refusal, said on the page.
    let (status, page) = viewer.get("/ui/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("owner role on every app"), "{page}");

    // Forged posts change nothing: no token, another session's token, a viewer's own token
    // (refused by the plane, as through the API), a post from another site.
    let switch = format!("/ui/domains/{DOMAIN}/switch");
    let (status, page) = owner.post(&switch, &[("env", "staging")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("CSRF token"), "{page}");
    let viewer_csrf = viewer.csrf().await;
    let (status, _) = owner
        .post(&switch, &[("env", "staging"), ("_csrf", &viewer_csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page) = viewer
        .post(&switch, &[("env", "staging"), ("_csrf", &viewer_csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("needs the owner role"), "{page}");
    let (status, _) = viewer
        .post("/ui/apps/shop/envs/test/seed", &[("_csrf", &viewer_csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let owner_csrf = owner.csrf().await;
    let res = owner
        .client
        .post(format!("{}{switch}", owner.base))
        .header(COOKIE, &owner.cookie)
        .header("origin", "http://evil.example")
        .form(&[("env", "staging"), ("_csrf", &owner_csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(bound_to(&d), "prod", "no forged post moved the domain");
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(
        audit.contains("denied"),
        "the viewer's attempt is audited: {audit}"
    );

    // The owner's own post switches, with the API's guarantees, and says so on the next page.
    let (status, _) = owner
        .post(&switch, &[("env", "staging"), ("_csrf", &owner_csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(bound_to(&d), "staging");
    let (_, page) = owner.get("/ui/domains").await;
    assert!(page.contains("switch from prod to staging"), "{page}");
    let (status, _) = owner
        .post(
            &format!("/ui/domains/{DOMAIN}/rollback"),
            &[("_csrf", &owner_csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(bound_to(&d), "prod");

    // Maintenance on and off from the domain's page: the proxy answers the page, then the app.
    let maintenance = format!("/ui/domains/{DOMAIN}/maintenance");
    let (status, _) = owner
        .post(
            &maintenance,
            &[
                ("on", "on"),
                ("message", "Back <soon>"),
                ("_csrf", &owner_csrf),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = d.get(DOMAIN, "/env/TURNOUT_ENV").await;
    assert_eq!(status, 503, "{body}");
    let (_, page) = owner.get(&format!("/ui/domains/{DOMAIN}")).await;
    assert!(
        page.contains("In maintenance: Back &#60;soon&#62;")
            || page.contains("In maintenance: Back &lt;soon&gt;"),
        "escaped: {page}"
    );
    assert!(page.contains("maintenance-on"), "in the history: {page}");
    let (status, _) = owner
        .post(&maintenance, &[("on", "off"), ("_csrf", &owner_csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        d.get(DOMAIN, "/env/TURNOUT_ENV").await,
        (200, "prod".to_owned())
    );

    // Signing out ends the session: its cookie and CSRF token are worth nothing after.
    let (status, _) = owner.post("/ui/logout", &[("_csrf", &owner_csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = owner
        .post(&switch, &[("env", "staging"), ("_csrf", &owner_csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let res = owner
        .client
        .get(format!("{}/ui/apps", owner.base))
        .header(COOKIE, &owner.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()[LOCATION], "/ui/login");
    assert_eq!(bound_to(&d), "prod");
}

/// Where the browser test lives, and whether its tools are here; a missing one fails the test
/// with what to install (as the pebble and PostgreSQL tests do): `.ci/run` installs them.
fn browser_dir() -> &'static Path {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let dir: &'static Path = Box::leak(dir.into_boxed_path());
    for (tool, package) in [
        ("/usr/bin/chromium", "chromium"),
        ("node", "nodejs"),
        ("npm", "npm"),
    ] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new(tool).arg("--version").output().is_ok()
        };
        assert!(
            found,
            "the browser test needs {tool}: run .ci/run, or apt-get install {package}"
        );
    }
    if !dir.join("node_modules/playwright-core").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "npm ci in tests/browser: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_switches_production_rolls_back_reseeds_and_cancels() {
    let dir = browser_dir();
    let (d, _repo, viewer_token) = shop();
    // Saved under the target directory on every run; into the README's copies only when asked,
    // so running the tests leaves the tree as it was.
    let shots = match std::env::var_os("TURNOUT_UPDATE_SCREENSHOTS") {
        Some(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(dir)
        .env("TURNOUT_UI", d.api.trim_end_matches('/'))
        .env("OWNER_TOKEN", d.admin_token())
        .env("VIEWER_TOKEN", &viewer_token)
        .env("PROXY", d.http.to_string())
        .env("DOMAIN", DOMAIN)
        .env("SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("the browser test finishes within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\n--- daemon log ---\n{}",
        d.log()
    );
    eprintln!("{stdout}browser test: {:?}", started.elapsed());
    // What the browser did is what the daemon did.
    assert_eq!(bound_to(&d), "prod", "rolled back to prod");
    let history = d.json(&["domain", "history", DOMAIN]);
    let actions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"switch") && actions.contains(&"rollback"),
        "{history}"
    );
    let jobs = d.json(&["jobs", "shop", "--all"]);
    let find = |kind: &str, env: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == kind && j["env"] == env)
            .map(|j| j["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(find("seed", "test").as_deref(), Some("succeeded"), "{jobs}");
    assert_eq!(
        find("clone", "test").as_deref(),
        Some("succeeded"),
        "{jobs}"
    );
    assert_eq!(
        find("deploy", "slow").as_deref(),
        Some("cancelled"),
        "{jobs}"
    );
    assert!(
        stdout.contains("\"axe\""),
        "accessibility checked: {stdout}"
    );
}

/// With many branch environments the tier rule allows every development environment to go to
/// every test one (21 × 10 here): `pipeline show` lists the first 200, those within one branch
/// first, counts the rest and says how to narrow; `--from` and `--to` narrow (an unknown
/// environment is named); the app's page writes the long list of sources once, not per card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_branch_environments_list_the_first_promotions_and_narrow_by_environment() {
    let repo = Repo::new("many");
    let mut envs: Vec<(String, String, &str)> = Vec::new();
    for i in 0..21 {
        envs.push((format!("dev{i:02}"), format!("b{i:02}"), "development"));
    }
    for i in 0..10 {
        envs.push((format!("test{i:02}"), format!("b{:02}", i * 2), "test"));
    }
    for (_, branch, _) in &envs {
        repo.branch(branch);
    }
    let d = Daemon::start();
    let refs: Vec<(&str, &str, &str)> = envs
        .iter()
        .map(|(n, b, t)| (n.as_str(), b.as_str(), *t))
        .collect();
    d.create("shop", repo.path(), &refs);

    let p = d.json(&["pipeline", "show", "shop"]);
    let listed = p["promotions"].as_array().unwrap();
    assert_eq!(listed.len(), 200, "{p}");
    assert_eq!(p["more_promotions"], 10, "{p}");
    // The ten within one branch (dev00 → test00, dev02 → test01, …) come first.
    for (i, v) in listed.iter().take(10).enumerate() {
        assert_eq!(v["from"], format!("dev{:02}", i * 2), "{v}");
        assert_eq!(v["to"], format!("test{i:02}"), "{v}");
    }
    let stages = p["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "every environment is still shown: {p}");
    let text = d.ok(&["pipeline", "show", "shop"]);
    assert!(
        text.contains("… and 10 more not listed: `turnout pipeline show shop --from ENV`"),
        "{text}"
    );

    let from = d.json(&["pipeline", "show", "shop", "--from", "dev03"]);
    let pairs: Vec<(&str, &str)> = from["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["from"].as_str().unwrap(), v["to"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs.len(), 10, "{from}");
    assert!(pairs.iter().all(|(f, _)| *f == "dev03"), "{pairs:?}");
    assert_eq!(from["more_promotions"], 0);
    let into = d.json(&["pipeline", "show", "shop", "--to", "test04"]);
    assert_eq!(into["promotions"].as_array().unwrap().len(), 21, "{into}");
    assert_eq!(into["promotions"][0]["from"], "dev08", "its branch's first");
    let one = d.json(&[
        "pipeline", "show", "shop", "--from", "dev05", "--to", "test09",
    ]);
    assert_eq!(
        one["promotions"],
        serde_json::json!([{"from": "dev05", "to": "test09", "ahead": null, "behind": null}])
    );
    let none = d.json(&["pipeline", "show", "shop", "--from", "test01"]);
    assert_eq!(none["promotions"], serde_json::json!([]), "{none}");
    let e = d.fails(&["pipeline", "show", "shop", "--to", "nope"]);
    assert!(
        e.contains("'shop/nope' not found") && e.contains("turnout env list shop"),
        "{e}"
    );

    // The app's page: a text field with suggestions on each test card, one list of the 21
    // (a source needs a release).
    for i in 0..21 {
        d.ok(&["deploy", &format!("shop/dev{i:02}"), "--detach"]);
    }
    crate::support::eventually(
        "every dev environment deployed",
        Duration::from_secs(300),
        || async {
            let list = d.json(&["env", "list", "shop"]);
            let deployed = list
                .as_array()?
                .iter()
                .filter(|e| !e["release"].is_null())
                .count();
            (deployed == 21).then_some(())
        },
    )
    .await;
    let owner = Session::sign_in(&d, &d.admin_token()).await;
    let (status, page) = owner.get("/ui/apps/shop").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("<datalist").count(), 1, "{page}");
    assert_eq!(page.matches("list=\"promotable-0\"").count(), 10, "{page}");
    assert_eq!(page.matches("<option value=\"dev").count(), 21, "{page}");
    assert!(!page.contains("<option value=\"test"), "{page}");
}
