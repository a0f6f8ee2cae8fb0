//! Apps wired together stage by stage (`turnout link`): each environment of the frontend calls
//! `$API_URL` from its own code (python's urllib, an ordinary client) and reaches the api's
//! environment at its stage; calls keep working through the api's deploys and domain
//! switches, and through a data plane that is killed; a link listener exists only inside the
//! linking environment's namespace; refusals say why.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, Repo, eventually, get, is_root};

/// The frontend: `/call` answers what `$API_URL/` answered (or `(unset)`), `/probe/PORT`
/// whether 127.0.0.1:PORT answers from inside the environment.
const FRONTEND_PY: &str = r#"
import os, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def fetch(url):
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.read().decode().strip()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 200
        if self.path == "/call":
            url = os.environ.get("API_URL")
            if url is None:
                body = "(unset)"
            else:
                try:
                    body = fetch(url + "/")
                except Exception as e:
                    status, body = 502, "failed: %s" % e
        elif self.path.startswith("/probe/"):
            try:
                body = "reached: " + fetch("http://127.0.0.1:%s/" % self.path[7:])
            except Exception as e:
                body = "unreachable: %s" % e
        else:
            body = "frontend %s" % os.environ["TURNOUT_ENV"]
        data = (body + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        pass
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
s.serve_forever()
"#;

fn frontend_repo(branches: &[&str]) -> Repo {
    let repo = Repo::with_app(FRONTEND_PY);
    for b in branches {
        repo.branch(b);
    }
    repo.branch("main");
    repo
}

fn api_repo(branches: &[&str]) -> Repo {
    let repo = Repo::new("api");
    for b in branches {
        repo.branch(b);
    }
    repo.branch("main");
    repo
}

/// `/call` of the frontend's environment `env`, through the proxy.
async fn call(d: &Daemon, env: &str) -> (u16, String) {
    d.get(&format!("{env}.frontend.localhost"), "/call").await
}

/// Each environment's link as `link list --json` gives it: `(to, rule, url, missing)`.
fn resolutions(d: &Daemon) -> Vec<(String, Value)> {
    let links = d.json(&["link", "list", "frontend"]);
    let [link] = links.as_array().unwrap().as_slice() else {
        panic!("one link expected: {links}");
    };
    assert_eq!(link["var"], "API_URL");
    link["envs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["env"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_of_the_frontend_reaches_the_api_at_its_stage() {
    let d = Daemon::start();
    let api = api_repo(&["feature", "lonely"]);
    let web = frontend_repo(&["feature", "lonely"]);
    d.create(
        "api",
        api.path(),
        &[
            ("development", "main", "development"),
            ("test", "main", "test"),
            ("staging", "main", "staging"),
            ("production", "main", "production"),
            ("qa-api", "main", "qa"),
            ("dev-feature", "feature", "development"),
        ],
    );
    // Same names; one pair that only matches by tier (qa); a branch environment whose branch
    // the api has, one whose branch it has not (it reaches the stage it branches from), and
    // one of a stage the api lacks.
    let envs = [
        ("development", "main", "development", Some("development")),
        ("staging", "main", "staging", Some("staging")),
        ("production", "main", "production", Some("production")),
        ("qa", "main", "qa", Some("qa-api")),
        ("feature-web", "feature", "test", Some("dev-feature")),
        ("lonely", "lonely", "test", Some("test")),
        ("release", "main", "release", None),
    ];
    let spec: Vec<_> = envs.iter().map(|(e, b, t, _)| (*e, *b, *t)).collect();
    d.create("frontend", web.path(), &spec);
    let out = d.ok(&["link", "frontend", "api"]);
    assert!(out.contains("next deploy"), "{out}");
    for env in [
        "development",
        "test",
        "staging",
        "production",
        "qa-api",
        "dev-feature",
    ] {
        d.ok(&["deploy", &format!("api/{env}")]);
    }
    for (env, ..) in &envs {
        d.ok(&["deploy", &format!("frontend/{env}")]);
    }

    let resolved = resolutions(&d);
    assert_eq!(resolved.len(), envs.len(), "{resolved:?}");
    for (env, _, _, to) in &envs {
        let (_, r) = resolved.iter().find(|(e, _)| e == env).unwrap();
        match to {
            Some(to) => {
                assert_eq!(r["to"], *to, "{env}: {r}");
                assert!(r["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
                let (status, body) = call(&d, env).await;
                assert_eq!(status, 200, "{env}: {body}");
                assert!(
                    body.starts_with(&format!("api env={to} ")),
                    "{env} reached {body}"
                );
            }
            None => {
                assert!(r["to"].is_null() && r["url"].is_null(), "{env}: {r}");
                let why = r["missing"].as_str().unwrap();
                assert!(
                    why.contains("no environment named release or of tier release"),
                    "{why}"
                );
                assert_eq!(call(&d, env).await, (200, "(unset)\n".to_owned()));
            }
        }
    }
    let rules: Vec<(&str, &str)> = resolved
        .iter()
        .map(|(e, r)| (e.as_str(), r["rule"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        rules,
        [
            ("development", "branch"),
            ("feature-web", "branch"),
            ("lonely", "tier"),
            ("production", "name"),
            ("qa", "tier"),
            ("release", "-"),
            ("staging", "name"),
        ]
    );
    let table = d.ok(&["link", "list", "frontend"]);
    assert!(
        table.contains("MISSING") && table.contains("not set"),
        "{table}"
    );
    let show = d.ok(&["env", "show", "frontend/staging"]);
    assert!(
        show.contains("API_URL → api/staging (same name), http://127.0.0.1:"),
        "{show}"
    );
    let show = d.ok(&["env", "show", "frontend/release"]);
    assert!(
        show.contains("API_URL → api MISSING, not set: no environment named release"),
        "{show}"
    );

    // The api gets an environment of the lonely branch: the running frontend environment
    // follows at once, at the URL it already has.
    d.ok(&[
        "env",
        "create",
        "api/test-lonely",
        "--branch",
        "lonely",
        "--tier",
        "test",
    ]);
    d.ok(&["deploy", "api/test-lonely"]);
    eventually(
        "lonely to follow its branch",
        Duration::from_secs(20),
        || async {
            let (status, body) = call(&d, "lonely").await;
            (status == 200 && body.starts_with("api env=test-lonely ")).then_some(())
        },
    )
    .await;
    let now = resolutions(&d);
    let (_, lonely) = now.iter().find(|(e, _)| e == "lonely").unwrap();
    let (_, before) = resolved.iter().find(|(e, _)| e == "lonely").unwrap();
    assert_eq!(
        (&lonely["to"], &lonely["rule"]),
        (&"test-lonely".into(), &"branch".into())
    );
    assert_eq!(
        lonely["url"], before["url"],
        "the URL stays the environment's own"
    );

    if is_root() {
        // The listener for api/staging exists in the linking environments' namespaces only:
        // an app without the link finds nothing at that port in its own.
        let (_, staging) = resolved.iter().find(|(e, _)| e == "staging").unwrap();
        let port = staging["url"].as_str().unwrap().rsplit(':').next().unwrap();
        d.create("outsider", web.path(), &[("staging", "main", "staging")]);
        d.ok(&["deploy", "outsider/staging"]);
        let (_, body) = d
            .get("staging.outsider.localhost", &format!("/probe/{port}"))
            .await;
        assert!(body.starts_with("unreachable"), "{body}");
        let (_, body) = d
            .get("staging.frontend.localhost", &format!("/probe/{port}"))
            .await;
        assert!(body.starts_with("reached: api env=staging"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_a_link_survive_the_apis_deploys_switches_and_turnout_restarting() {
    let mut d = Daemon::start();
    let api = api_repo(&[]);
    let web = frontend_repo(&[]);
    d.create(
        "api",
        api.path(),
        &[
            ("staging", "main", "staging"),
            ("production", "main", "production"),
        ],
    );
    d.create("frontend", web.path(), &[("staging", "main", "staging")]);
    d.ok(&["link", "frontend", "api"]);
    d.ok(&["deploy", "api/staging"]);
    d.ok(&["deploy", "api/production"]);
    d.ok(&["deploy", "frontend/staging"]);
    d.ok(&["domain", "add", "api.link.test", "api/production"]);
    assert!(call(&d, "staging").await.1.starts_with("api env=staging"));

    // A steady load of frontend → api calls, each through the link.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, proxy) = (stop.clone(), ok.clone(), failed.clone(), d.http);
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = get(proxy, "staging.frontend.localhost", "/call").await;
                if status == 200 && body.contains("env=staging ") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed call: {status} {body}");
                }
            }
        }));
    }
    let at_least = |n: usize| {
        let ok = ok.clone();
        async move {
            let from = ok.load(Ordering::Relaxed);
            eventually("calls to go through", Duration::from_secs(30), || async {
                (ok.load(Ordering::Relaxed) >= from + n).then_some(())
            })
            .await
        }
    };
    at_least(20).await;
    for round in 1..=2 {
        api.write("content.txt", &format!("api v{round}"));
        api.commit("next");
        d.ok(&["deploy", "api/staging"]);
        at_least(10).await;
        d.ok(&["domain", "switch", "api.link.test", "api/staging"]);
        at_least(10).await;
        d.ok(&["domain", "switch", "api.link.test", "api/production"]);
        at_least(10).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("link under load: {ok} calls, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {} calls failed", ok + failed);
    assert!(
        call(&d, "staging")
            .await
            .1
            .starts_with("api v2 env=staging")
    );

    // The data plane dies: the daemon starts another, which gets the links again.
    let [pid] = d.dataplanes()[..] else {
        panic!("one data plane expected")
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    reaches_staging(&d, "a data plane kill").await;
    // The daemon killed (its successor finds the listeners in the running data plane), an
    // upgrade (a new data plane takes over and is given them), a full stop and start (the
    // namespaces are made again, and the listeners in them before the instances start).
    d.kill_and_restart();
    reaches_staging(&d, "the daemon's kill").await;
    d.upgrade();
    reaches_staging(&d, "an upgrade").await;
    d.restart();
    reaches_staging(&d, "a full restart").await;
}

/// Wait until the frontend's staging reaches the api's, after `what`.
async fn reaches_staging(d: &Daemon, what: &str) {
    eventually(
        &format!("the link after {what}"),
        Duration::from_secs(60),
        || async {
            let (status, body) = call(d, "staging").await;
            (status == 200 && body.starts_with("api v2 env=staging")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_refused_with_reasons() {
    let d = Daemon::start();
    let repo = api_repo(&[]);
    d.create("frontend", repo.path(), &[]);
    d.create("api", repo.path(), &[]);

    let e = d.fails(&["link", "frontend", "frontend"]);
    assert!(e.contains("cannot be linked to itself (frontend)"), "{e}");
    let e = d.fails(&["link", "frontend", "nowhere"]);
    assert!(
        e.contains("no app named 'nowhere'") && e.contains("app create"),
        "{e}"
    );
    for (bad, says) in [
        ("9lives", "cannot name a link"),
        ("has space", "cannot name a link"),
        (&"x".repeat(61)[..], "cannot name a link"),
        ("turnout", "set by Turnout"),
        ("database", "set by Turnout"),
    ] {
        let e = d.fails(&["link", "frontend", "api", "--as", bad]);
        assert!(e.contains(says), "--as {bad:?}: {e}");
    }

    // Owners of the frontend who may also deploy the api's lower environments, nobody else.
    let mut tokens = Vec::new();
    for (name, on_frontend, on_api) in [
        ("viewer", "viewer", Some("developer")),
        ("maintainer", "maintainer", Some("developer")),
        ("stranger", "owner", None),
        ("peeker", "owner", Some("viewer")),
        ("builder", "owner", Some("developer")),
    ] {
        d.ok(&["user", "add", name]);
        d.ok(&["access", "grant", name, "frontend", on_frontend]);
        if let Some(role) = on_api {
            d.ok(&["access", "grant", name, "api", role]);
        }
        let token = d.json(&["token", "create", "--user", name])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        tokens.push((name, token));
    }
    for (name, token) in &tokens {
        let out = d.cli_as(token, &["link", "frontend", "api"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if *name == "builder" {
            assert!(out.status.success(), "{name}: {stderr}");
        } else {
            assert!(
                !out.status.success() && stderr.contains("forbidden"),
                "{name}: {stderr}"
            );
        }
    }
    let e = d.fails(&["link", "frontend", "api"]);
    assert!(e.contains("API_URL is already the link to api"), "{e}");
    let viewer = &tokens[0].1;
    let out = d.cli_as(viewer, &["link", "remove", "frontend", "api"]);
    assert!(!out.status.success(), "a viewer removed a link");
    let audit = d.ok(&["audit", "--app", "frontend"]);
    assert!(audit.contains("link.create"), "{audit}");
    d.ok(&[
        "link",
        "frontend",
        "api",
        "--as",
        "backend",
        "--default",
        "staging",
    ]);
    let e = d.fails(&["link", "remove", "frontend", "nothing"]);
    assert!(e.contains("no link named nothing"), "{e}");
    // OTHER's name is the link's name first (API_URL), else names its one link.
    d.ok(&["link", "remove", "frontend", "api"]);
    d.ok(&["link", "frontend", "api", "--as", "second"]);
    let e = d.fails(&["link", "remove", "frontend", "api"]);
    assert!(
        e.contains("2 links to api (BACKEND_URL, SECOND_URL)"),
        "{e}"
    );
    d.ok(&["link", "remove", "frontend", "--as", "backend"]);
    d.ok(&["link", "remove", "frontend", "api"]);
    assert!(d.ok(&["link", "list", "frontend"]).contains("no links"));
    assert!(
        d.ok(&["audit", "--app", "frontend"])
            .contains("link.remove")
    );
}
