//! Domains: bind, switch, roll back, maintenance; health-gated, durable, visible in metrics.
use std::time::Duration;

use crate::support::{Daemon, Repo, eventually, get};

/// A daemon with app `shop` and three running environments, blue, green and red.
async fn three_environments(repo: &Repo) -> Daemon {
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("blue", "main", "production"),
            ("green", "main", "staging"),
            ("red", "main", "qa"),
        ],
    );
    for env in ["blue", "green", "red"] {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }
    d
}

async fn env_behind(d: &Daemon, host: &str) -> String {
    let (status, body) = d.get(host, "/").await;
    assert_eq!(status, 200, "{host}: {body}");
    body.split(" env=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_rollback_walk_through_the_history() {
    let repo = Repo::new("shop");
    let d = three_environments(&repo).await;
    let out = d.ok(&["domain", "add", "Shop.Example.TEST", "shop/blue"]);
    assert!(out.contains("shop.example.test -> shop/blue"), "{out}");
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");
    assert_eq!(
        env_behind(&d, &format!("shop.example.test:{}", d.http.port())).await,
        "blue"
    );

    let s = d.json(&["domain", "switch", "shop.example.test", "shop/green"]);
    assert_eq!(
        (s["from"].as_str(), s["to"].as_str(), s["action"].as_str()),
        (Some("blue"), Some("green"), Some("switch"))
    );
    assert!(
        s["health_check_ms"].as_f64().unwrap() > 0.0 && s["apply_us"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert_eq!(env_behind(&d, "shop.example.test").await, "green");
    // The old environment keeps running and serving its own URL.
    assert_eq!(env_behind(&d, "blue.shop.localhost").await, "blue");
    let human = d.ok(&["domain", "switch", "shop.example.test", "shop/red"]);
    assert!(
        human.contains("switched: shop/green -> shop/red"),
        "{human}"
    );
    assert_eq!(env_behind(&d, "shop.example.test").await, "red");

    let r = d.json(&["domain", "rollback", "shop.example.test"]);
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str(), r["action"].as_str()),
        (Some("red"), Some("green"), Some("rollback"))
    );
    assert_eq!(env_behind(&d, "shop.example.test").await, "green");
    d.ok(&["domain", "rollback", "shop.example.test"]);
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");
    let err = d.fails(&["domain", "rollback", "shop.example.test"]);
    assert!(
        err.contains("nothing to roll back") && err.contains("shop/blue"),
        "{err}"
    );
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");

    // Switching to where it already points changes nothing and records nothing.
    let same = d.json(&["domain", "switch", "shop.example.test", "shop/blue"]);
    assert_eq!(same["action"], "unchanged");

    let history = d.json(&["domain", "history", "shop.example.test"]);
    let rows: Vec<(String, String, String, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["from"].as_str().unwrap_or("-").to_owned(),
                e["to"].as_str().unwrap().to_owned(),
                e["rolled_back"].as_bool().unwrap(),
            )
        })
        .collect();
    let expect =
        |a: &str, f: &str, t: &str, rb: bool| (a.to_owned(), f.to_owned(), t.to_owned(), rb);
    assert_eq!(
        rows,
        [
            expect("rollback", "green", "blue", false),
            expect("rollback", "red", "green", false),
            expect("switch", "green", "red", true),
            expect("switch", "blue", "green", true),
            expect("add", "-", "blue", false),
        ]
    );
    // "Who" is the authenticated user: the owner token of the first start.
    assert_eq!(history[0]["actor"], "admin", "{history}");
    let table = d.ok(&["domain", "history", "shop.example.test"]);
    assert!(table.contains("switch (rolled back)"), "{table}");

    // After rollbacks, a new switch is what the next rollback undoes.
    d.ok(&["domain", "switch", "shop.example.test", "shop/red"]);
    d.ok(&["domain", "rollback", "shop.example.test"]);
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_are_health_gated_and_refusals_change_nothing() {
    let repo = Repo::new("shop");
    let d = three_environments(&repo).await;
    d.ok(&["env", "create", "shop/idle", "--branch", "main"]);
    d.ok(&["domain", "add", "shop.example.test", "shop/blue"]);

    // green is running but fails its health check now.
    let green = d.json(&["env", "show", "shop/green"]);
    let storage = std::path::Path::new(green["dir"].as_str().unwrap()).join("data/g1/storage");
    std::fs::write(storage.join("health-status.txt"), "500").unwrap();
    let err = d.fails(&["domain", "switch", "shop.example.test", "shop/green"]);
    assert!(
        err.contains("refused: shop/green failed a fresh health check") && err.contains("500"),
        "{err}"
    );
    assert!(err.contains("still points to shop/blue"), "{err}");
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");
    std::fs::remove_file(storage.join("health-status.txt")).unwrap();

    let err = d.fails(&["domain", "switch", "shop.example.test", "shop/idle"]);
    assert!(
        err.contains("shop/idle has no running instance")
            && err.contains("turnout deploy shop/idle"),
        "{err}"
    );
    let err = d.fails(&["domain", "switch", "shop.example.test", "shop/nope"]);
    assert!(err.contains("no environment 'nope'"), "{err}");
    let other = Repo::new("other");
    d.create("other", other.path(), &[("prod", "main", "production")]);
    let err = d.fails(&["domain", "switch", "shop.example.test", "other/prod"]);
    assert!(err.contains("belongs to app 'shop'"), "{err}");
    let history = d.json(&["domain", "history", "shop.example.test"]);
    assert_eq!(
        history.as_array().unwrap().len(),
        1,
        "refusals are not history: {history}"
    );
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");

    // Invalid and taken domains; environments that serve a domain cannot be deleted.
    for bad in [
        "shop_example.test",
        "x-.test",
        "a..b",
        "*.test",
        "blue.shop.localhost",
        "x.test:80",
    ] {
        let err = d.fails(&["domain", "add", bad, "shop/blue"]);
        assert!(
            err.contains(&format!("invalid domain '{bad}'")),
            "{bad}: {err}"
        );
    }
    let err = d.fails(&["domain", "add", "shop.example.test", "shop/green"]);
    assert!(err.contains("already bound to shop/blue"), "{err}");
    let err = d.fails(&["env", "delete", "shop/blue"]);
    assert!(err.contains("shop/blue serves shop.example.test"), "{err}");
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");

    // A domain bound to an environment that is not running answers 503, not someone else's
    // page; so does the environment's own URL, saying nothing is deployed there yet.
    d.ok(&["domain", "add", "idle.example.test", "shop/idle"]);
    for host in ["idle.example.test", "idle.shop.localhost"] {
        let (status, body) = d.get(host, "/").await;
        assert_eq!(status, 503, "{host}");
        assert!(
            body.contains("shop/idle has nothing deployed yet") && !body.contains("env="),
            "{host}: {body}"
        );
    }
    d.ok(&["domain", "remove", "idle.example.test"]);
    let (status, _) = d.get("idle.example.test", "/").await;
    assert_eq!(status, 404);

    // Wildcards route every subdomain; an exact domain beats them.
    d.ok(&["domain", "add", "*.shop.test", "shop/red"]);
    assert_eq!(env_behind(&d, "anything.shop.test").await, "red");
    assert_eq!(env_behind(&d, "a.b.shop.test").await, "red");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_bindings_and_metrics_survive_a_restart() {
    let repo = Repo::new("shop");
    let mut d = three_environments(&repo).await;
    d.ok(&["domain", "add", "shop.example.test", "shop/blue"]);
    d.ok(&["domain", "switch", "shop.example.test", "shop/green"]);
    for _ in 0..5 {
        env_behind(&d, "shop.example.test").await;
    }

    let out = d.ok(&[
        "domain",
        "maintenance",
        "shop.example.test",
        "on",
        "--message",
        "Upgrading the <database>",
    ]);
    assert!(out.contains("is in maintenance"), "{out}");
    let mut conn = crate::support::Conn::open(d.http).await;
    let (status, body) = conn.get("shop.example.test", "/cart").await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("Upgrading the &lt;database&gt;") && !body.contains("env="),
        "{body}"
    );
    let (status, body) = conn.get("shop.example.test", "/healthz").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "health green\n"),
        "health checks pass through"
    );
    let list = d.json(&["domain", "list"]);
    assert_eq!(list[0]["maintenance"], "Upgrading the <database>");

    let metrics = metrics(&d).await;
    for line in [
        "turnout_http_responses_total{host=\"shop.example.test\",app=\"shop\",env=\"green\",class=\"2xx\"} 6",
        "turnout_http_responses_total{host=\"shop.example.test\",app=\"shop\",env=\"green\",class=\"5xx\"} 1",
        "turnout_domain_switches_total{domain=\"shop.example.test\",action=\"switch\"} 1",
        "turnout_http_request_duration_seconds_count{host=\"shop.example.test\",app=\"shop\",env=\"green\"} 7",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }

    d.restart();
    let http = d.http;
    // Still in maintenance after the restart, on green, once green is back.
    eventually(
        "green to come back behind the domain",
        Duration::from_secs(30),
        || async move {
            let (status, body) = get(http, "shop.example.test", "/healthz").await;
            (status == 200 && body == "health green\n").then_some(())
        },
    )
    .await;
    let (status, body) = d.get("shop.example.test", "/").await;
    assert_eq!(status, 503, "{body}");
    eventually(
        "blue to come back",
        Duration::from_secs(30),
        || async move {
            let (status, _) = get(http, "blue.shop.localhost", "/").await;
            (status == 200).then_some(())
        },
    )
    .await;
    d.ok(&["domain", "maintenance", "shop.example.test", "off"]);
    assert_eq!(env_behind(&d, "shop.example.test").await, "green");
    // The binding history survived too: a rollback goes back to blue.
    d.ok(&["domain", "rollback", "shop.example.test"]);
    assert_eq!(env_behind(&d, "shop.example.test").await, "blue");
    let actions: Vec<String> = d
        .json(&["domain", "history", "shop.example.test"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "rollback",
            "maintenance-off",
            "maintenance-on",
            "switch",
            "add"
        ]
    );
}

/// A new environment's URL says it has nothing deployed yet (503, not a 404 that looks like a
/// wrong address), across a daemon restart too, until its first release goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_environment_says_it_has_nothing_deployed_yet() {
    let repo = Repo::new("first");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("fresh", "main", "qa")]);
    for when in ["after create", "after a restart"] {
        let (status, body) = d.get("fresh.shop.localhost", "/").await;
        assert_eq!(status, 503, "{when}: {body}");
        assert!(
            body.contains("shop/fresh has nothing deployed yet")
                && body.contains("turnout deploy shop/fresh"),
            "{when}: {body}"
        );
        if when == "after create" {
            d.restart();
        }
    }
    d.ok(&["deploy", "shop/fresh"]);
    let (status, body) = d.get("fresh.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("first ")), (200, true), "{body}");
    d.ok(&["env", "delete", "shop/fresh"]);
    let (status, _) = d.get("fresh.shop.localhost", "/").await;
    assert_eq!(status, 404, "a deleted environment's URL is gone");
}

/// `/metrics`, as the administrator reads it.
async fn metrics(d: &Daemon) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", d.api))
        .bearer_auth(d.admin_token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `turnout_route_updates_total`: how many host routes the control plane has handed to the
/// data plane.
async fn route_updates(d: &Daemon) -> u64 {
    let metrics = metrics(d).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("turnout_route_updates_total "))
        .unwrap_or_else(|| panic!("/metrics lacks turnout_route_updates_total:\n{metrics}"))
        .parse()
        .unwrap()
}

/// A deploy, a stop and a start change the environment's own route and those of its domains in
/// maintenance, not one route per domain: the others follow the environment's route, so all of
/// them reach the new instance (or its stopped page) the moment it changes. A switch moves
/// only its own domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_is_one_route_change_however_many_domains_follow_the_environment() {
    let repo = Repo::new("v1");
    let d = three_environments(&repo).await;
    let domains: Vec<String> = (0..60).map(|i| format!("d{i}.shop.test")).collect();
    for name in &domains {
        d.ok(&["domain", "add", name, "shop/blue"]);
    }
    d.ok(&["domain", "maintenance", "d0.shop.test", "on"]);
    let before = route_updates(&d).await;

    repo.write("content.txt", "v2");
    repo.commit("v2");
    d.ok(&["deploy", "shop/blue"]);
    assert_eq!(
        route_updates(&d).await - before,
        2,
        "the environment's own host and its one domain in maintenance"
    );
    for name in &domains[1..] {
        let (status, body) = d.get(name, "/").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "v2 env=blue tier=production built=yes\n"),
            "{name}"
        );
    }
    let (status, body) = d.get("d0.shop.test", "/").await;
    assert_eq!(status, 503, "{body}");

    // Leaving and coming back to service reaches every domain, as a switch does the one, and
    // is no more route changes than a deploy: the domains follow the stopped page too.
    let before = route_updates(&d).await;
    d.ok(&["env", "stop", "shop/blue"]);
    assert_eq!(route_updates(&d).await - before, 2, "a stop");
    for name in &domains[1..] {
        let (status, body) = d.get(name, "/").await;
        assert!(
            status == 503 && body.contains("shop/blue is stopped"),
            "{name}: {status} {body}"
        );
    }
    let before = route_updates(&d).await;
    d.ok(&["env", "start", "shop/blue"]);
    assert_eq!(route_updates(&d).await - before, 2, "a start");
    for name in &domains[1..] {
        let (status, _) = d.get(name, "/").await;
        assert_eq!(status, 200, "{name}");
    }
    d.ok(&["domain", "switch", "d1.shop.test", "shop/green"]);
    assert_eq!(env_behind(&d, "d1.shop.test").await, "green");
    for name in &domains[2..] {
        assert_eq!(env_behind(&d, name).await, "blue", "{name}");
    }
}
