//! Access control: who may do what where, tokens, approvals, protected internal URLs, and the
//! tamper-evident audit log.
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use turnout_model::{Action, Role, Tier};

use crate::support::{Daemon, Repo, eventually, get};

/// A raw API client with one user's token.
struct As {
    api: String,
    token: Option<String>,
}

impl As {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", self.api);
        let mut req = client.request(method.parse().unwrap(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }
}

/// Wait until job `id` has ended; its final state.
async fn job_end(who: &As, id: &str) -> Value {
    let path = format!("/api/v1/jobs/{id}");
    eventually("a job to end", Duration::from_secs(60), || async {
        let (_, body) = who.call("GET", &path, None).await;
        let job: Value = serde_json::from_str(&body).ok()?;
        (job["state"] != "queued" && job["state"] != "running").then_some(job)
    })
    .await
}

/// Users `none` (no role), `viewer` … `owner` (roles on app `shop`), and their tokens.
fn users(d: &Daemon) -> Vec<(Option<Role>, String, String)> {
    let mut out = Vec::new();
    for (name, role) in [
        ("none", None),
        ("viewer", Some(Role::Viewer)),
        ("developer", Some(Role::Developer)),
        ("maintainer", Some(Role::Maintainer)),
        ("owner", Some(Role::Owner)),
    ] {
        d.ok(&["user", "add", name]);
        if let Some(role) = role {
            d.ok(&["access", "grant", name, "shop", role.as_str()]);
        }
        let token = d.json(&["token", "create", "--user", name])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        out.push((role, name.to_owned(), token));
    }
    out
}

fn short(tier: Tier) -> &'static str {
    match tier {
        Tier::Development => "dev",
        Tier::Test => "test",
        Tier::Qa => "qa",
        Tier::Staging => "stg",
        Tier::Release => "rel",
        Tier::Production => "prod",
        Tier::ProductionCopy => "copy",
    }
}

/// `cert add`'s body: a self-signed certificate for `domain` and its key.
fn own_cert(domain: &str) -> Value {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    json!({"chain_pem": cert.pem(), "key_pem": key.serialize_pem(),
           "cert_file": "cert.pem", "key_file": "key.pem"})
}

fn allowed(role: Option<Role>, needed: Role) -> bool {
    role.is_some_and(|r| r >= needed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_endpoint_by_every_role_on_every_tier() {
    let repo = Repo::new("shop");
    let d = Daemon::start();
    let admin = As {
        api: d.api.clone(),
        token: Some(d.admin_token()),
    };
    d.ok(&[
        "app",
        "create",
        "shop",
        "--repo",
        repo.path().to_str().unwrap(),
    ]);
    for tier in Tier::ALL {
        for side in ["a", "b"] {
            let env = format!("shop/{}-{side}", short(tier));
            d.ok(&[
                "env",
                "create",
                &env,
                "--branch",
                "main",
                "--tier",
                tier.as_str(),
            ]);
            d.ok(&["deploy", &env]);
        }
    }
    let people = users(&d);
    let mut checked: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut cases = 0;
    let mut expect = |what: String, status: (u16, String), ok: bool| {
        cases += 1;
        if ok {
            assert!(
                (200..300).contains(&status.0),
                "{what} should be allowed: {status:?}"
            );
        } else {
            assert_eq!(status.0, 403, "{what} should be forbidden: {status:?}");
            assert!(status.1.contains("forbidden"), "{what}: {}", status.1);
        }
    };

    for (role, name, token) in &people {
        let who = As {
            api: d.api.clone(),
            token: Some(token.clone()),
        };
        let rname = role.map_or("none", Role::as_str);
        for tier in Tier::ALL {
            let (t, a, b) = (
                short(tier),
                format!("{}-a", short(tier)),
                format!("{}-b", short(tier)),
            );
            let tag = format!("{rname}-{t}");
            let case = |action: &str| format!("{action} by {name} on {tier}");

            // Running a command needs what deploying there needs; allowed, a request that
            // does not upgrade its connection is refused for that alone.
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/{a}/run"),
                    Some(json!({"argv": ["true"]})),
                )
                .await;
            if allowed(*role, Action::Deploy.default_role(tier)) {
                assert_eq!(r.0, 400, "{}: {}", case("run"), r.1);
                assert!(r.1.contains("Upgrade: turnout-run/1"), "{}", r.1);
            } else {
                assert_eq!(r.0, 403, "{}: {}", case("run"), r.1);
            }
            checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/run"));
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/{a}/run/jobs"),
                    Some(json!({"argv": ["true"]})),
                )
                .await;
            expect(
                case("run --detach"),
                r,
                allowed(*role, Action::Deploy.default_role(tier)),
            );
            checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/run/jobs"));

            let ok = allowed(*role, Action::Config.default_role(tier));
            let r = who
                .call(
                    "POST",
                    "/api/v1/apps/shop/envs",
                    Some(json!({"name": format!("c-{tag}"), "branch": "main", "tier": tier})),
                )
                .await;
            expect(case("env create"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/envs"));
            admin
                .call(
                    "POST",
                    "/api/v1/apps/shop/envs",
                    Some(json!({"name": format!("x-{tag}"), "branch": "main", "tier": tier})),
                )
                .await;
            let r = who
                .call("DELETE", &format!("/api/v1/apps/shop/envs/x-{tag}"), None)
                .await;
            expect(case("env delete"), r, ok);
            checked.insert(("DELETE", "/api/v1/apps/{app}/envs/{env}"));

            let r = who
                .call(
                    "POST",
                    "/api/v1/apps/shop/config",
                    Some(json!({"env": a, "secret": true, "values": {format!("K_{rname}"): "v"}})),
                )
                .await;
            expect(case("config set (env level)"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/config"));
            // The tier level needs the same role on that tier.
            let r = who
                .call(
                    "POST",
                    "/api/v1/apps/shop/config",
                    Some(json!({"tier": tier, "values": {format!("T_{rname}"): "v"}})),
                )
                .await;
            expect(case("config set (tier level)"), r, ok);
            admin
                .call(
                    "POST",
                    "/api/v1/apps/shop/config",
                    Some(json!({"env": a, "values": {format!("U_{rname}"): "v"}})),
                )
                .await;
            let r = who
                .call(
                    "POST",
                    "/api/v1/apps/shop/config/unset",
                    Some(json!({"env": a, "keys": [format!("U_{rname}")]})),
                )
                .await;
            expect(case("config unset"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/config/unset"));
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/{a}/plan"),
                    Some(json!({"pids": "100"})),
                )
                .await;
            expect(case("plan update"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/plan"));
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/{a}/trigger"),
                    Some(json!({"deploy_on": "manual"})),
                )
                .await;
            expect(case("trigger update"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/trigger"));
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/{a}/sleep"),
                    Some(json!({"sleep_after": "never"})),
                )
                .await;
            expect(case("sleep update"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/sleep"));
            let r = who
                .call("DELETE", &format!("/api/v1/apps/shop/envs/{a}/mail"), None)
                .await;
            expect(case("mail clear"), r, ok);
            checked.insert(("DELETE", "/api/v1/apps/{app}/envs/{env}/mail"));
            // Production has no relay (refused as bad input, whoever asks).
            if tier != Tier::Production {
                let r = who
                    .call(
                        "POST",
                        "/api/v1/apps/shop/mail/relays",
                        Some(json!({"tier": tier, "url": "smtp://relay.example.test",
                            "allow_domains": ["example.test"]})),
                    )
                    .await;
                expect(case("mail relay"), r, ok);
                checked.insert(("POST", "/api/v1/apps/{app}/mail/relays"));
            }

            let ok = allowed(*role, Action::Deploy.default_role(tier));
            // Secret values: only for roles that may deploy the environment.
            let r = who
                .call(
                    "GET",
                    &format!("/api/v1/apps/shop/config?env={a}&show_secrets=true"),
                    None,
                )
                .await;
            expect(case("secret values"), r, ok);
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/{a}/deploy"),
                    Some(json!({})),
                )
                .await;
            if ok {
                // A deploy answers with its job (201); it is allowed once the job succeeds.
                assert_eq!(r.0, 201, "deploy by {name} on {tier}: {}", r.1);
                let job: Value = serde_json::from_str(&r.1).unwrap();
                let end = job_end(&who, &job["id"].to_string()).await;
                assert_eq!(
                    end["state"], "succeeded",
                    "deploy by {name} on {tier}: {end}"
                );
            }
            expect(case("deploy"), r, ok);
            checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/deploy"));

            // Rollback, restart, stop and start need the right to deploy; the jobs they start
            // succeed (when the deploy above was refused, the admin makes a release to go
            // back to).
            if !ok {
                d.ok(&["deploy", &format!("shop/{a}")]);
            }
            for (what, path, status) in [
                ("rollback", "rollback", 201),
                ("restart", "restart", 201),
                ("stop", "stop", 200),
                ("start", "start", 201),
            ] {
                let r = who
                    .call("POST", &format!("/api/v1/apps/shop/envs/{a}/{path}"), None)
                    .await;
                if ok {
                    assert_eq!(r.0, status, "{what} by {name} on {tier}: {}", r.1);
                    if status == 201 {
                        let job: Value = serde_json::from_str(&r.1).unwrap();
                        let end = job_end(&who, &job["id"].to_string()).await;
                        assert_eq!(end["state"], "succeeded", "{what} by {name}: {end}");
                    }
                }
                expect(case(what), r, ok);
                checked.insert((
                    "POST",
                    match path {
                        "rollback" => "/api/v1/apps/{app}/envs/{env}/rollback",
                        "restart" => "/api/v1/apps/{app}/envs/{env}/restart",
                        "stop" => "/api/v1/apps/{app}/envs/{env}/stop",
                        _ => "/api/v1/apps/{app}/envs/{env}/start",
                    },
                ));
            }
            // Putting data back needs the right to restore on the target's tier (owners only
            // in production); allowed, each gets past authorization to its own answer: no such
            // snapshot, no snapshot that old, or not a production copy / never reset.
            let may_restore = allowed(*role, Action::Restore.default_role(tier));
            let copy = tier == Tier::ProductionCopy;
            for (what, path, body, past) in [
                ("restore", "restore", json!({"snapshot": 999_999}), 404),
                ("drill", "drills", json!({"at": "1 hour ago"}), 409),
                (
                    "data reset",
                    "data/reset",
                    json!({"at": "1 hour ago", "from": "shop/prod-b"}),
                    if copy { 409 } else { 400 },
                ),
                (
                    "data undo",
                    "data/undo",
                    json!(null),
                    if copy { 409 } else { 400 },
                ),
            ] {
                let body = (!body.is_null()).then_some(body);
                let r = who
                    .call("POST", &format!("/api/v1/apps/shop/envs/{a}/{path}"), body)
                    .await;
                if may_restore {
                    assert_eq!(r.0, past, "{what} by {name} on {tier}: {}", r.1);
                } else {
                    expect(case(what), r, false);
                }
                checked.insert((
                    "POST",
                    match path {
                        "restore" => "/api/v1/apps/{app}/envs/{env}/restore",
                        "drills" => "/api/v1/apps/{app}/envs/{env}/drills",
                        "data/reset" => "/api/v1/apps/{app}/envs/{env}/data/reset",
                        _ => "/api/v1/apps/{app}/envs/{env}/data/undo",
                    },
                ));
            }
            // A promotion into this environment, from one of a tier that promotes here: the
            // right to promote on this tier (and to read the source).
            if let Some(src) = Tier::ALL.iter().find(|s| s.promotes_to().contains(&tier)) {
                let ok = allowed(*role, Action::Promote.default_role(tier));
                let from = format!("{}-b", short(*src));
                let r = who
                    .call(
                        "POST",
                        &format!("/api/v1/apps/shop/envs/{a}/promote"),
                        Some(json!({ "from": from })),
                    )
                    .await;
                if ok {
                    assert_eq!(r.0, 201, "promote by {name} on {tier}: {}", r.1);
                    let job: Value = serde_json::from_str(&r.1).unwrap();
                    let end = job_end(&who, &job["id"].to_string()).await;
                    assert_eq!(end["state"], "succeeded", "promote by {name}: {end}");
                }
                expect(case("promote"), r, ok);
                checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/promote"));
            }
            // Cancelling someone else's job needs the right to run it. The admin's restart
            // may end before the cancel arrives (409); a user with no role on the app does not
            // learn that the job exists (404).
            let (_, job) = admin
                .call("POST", &format!("/api/v1/apps/shop/envs/{a}/restart"), None)
                .await;
            let job: Value = serde_json::from_str(&job).unwrap();
            let r = who
                .call("POST", &format!("/api/v1/jobs/{}/cancel", job["id"]), None)
                .await;
            match (ok, role) {
                (true, _) => assert!(
                    r.0 == 200 || (r.0 == 409 && r.1.contains("already ended")),
                    "cancel by {name} on {tier}: {r:?}"
                ),
                (false, None) => assert_eq!(r.0, 404, "cancel by {name}: {r:?}"),
                (false, Some(_)) => expect(case("job cancel"), r, false),
            }
            job_end(&admin, &job["id"].to_string()).await;
            checked.insert(("POST", "/api/v1/jobs/{id}/cancel"));

            let ok = allowed(*role, Action::Domain.default_role(tier));
            let r = who
                .call(
                    "POST",
                    "/api/v1/domains",
                    Some(json!({"domain": format!("a-{tag}.test"), "app": "shop", "env": a})),
                )
                .await;
            expect(case("domain add"), r, ok);
            checked.insert(("POST", "/api/v1/domains"));
            for (prefix, method, path, body, checked_path) in [
                (
                    "s",
                    "POST",
                    "switch",
                    Some(json!({"app": "shop", "env": b})),
                    "/api/v1/domains/{domain}/switch",
                ),
                (
                    "r",
                    "POST",
                    "rollback",
                    None,
                    "/api/v1/domains/{domain}/rollback",
                ),
                (
                    "m",
                    "POST",
                    "maintenance",
                    Some(json!({"on": true})),
                    "/api/v1/domains/{domain}/maintenance",
                ),
                ("rm", "DELETE", "", None, "/api/v1/domains/{domain}"),
            ] {
                let domain = format!("{prefix}-{tag}.test");
                admin
                    .call(
                        "POST",
                        "/api/v1/domains",
                        Some(json!({"domain": domain, "app": "shop", "env": a})),
                    )
                    .await;
                if prefix == "r" {
                    let s = admin
                        .call(
                            "POST",
                            &format!("/api/v1/domains/{domain}/switch"),
                            Some(json!({"app": "shop", "env": b})),
                        )
                        .await;
                    assert_eq!(s.0, 200, "{s:?}");
                }
                let url = if path.is_empty() {
                    format!("/api/v1/domains/{domain}")
                } else {
                    format!("/api/v1/domains/{domain}/{path}")
                };
                let r = who.call(method, &url, body).await;
                expect(
                    case(&format!(
                        "domain {}",
                        if path.is_empty() { "remove" } else { path }
                    )),
                    r,
                    ok,
                );
                checked.insert((method, checked_path));
            }
            // A domain's HTTPS: the same right as its other changes. Own certificates only
            // (an ACME order would go out to the internet).
            for (prefix, method, path, checked_path) in [
                ("t", "POST", "tls", "/api/v1/domains/{domain}/tls"),
                ("ca", "POST", "cert", "/api/v1/domains/{domain}/cert"),
                ("cr", "DELETE", "cert", "/api/v1/domains/{domain}/cert"),
                (
                    "cn",
                    "POST",
                    "cert/renew",
                    "/api/v1/domains/{domain}/cert/renew",
                ),
            ] {
                let domain = format!("{prefix}-{tag}.test");
                admin
                    .call(
                        "POST",
                        "/api/v1/domains",
                        Some(json!({"domain": domain, "app": "shop", "env": a})),
                    )
                    .await;
                let cert = own_cert(&domain);
                if prefix == "cr" {
                    let r = admin
                        .call(
                            "POST",
                            &format!("/api/v1/domains/{domain}/cert"),
                            Some(cert.clone()),
                        )
                        .await;
                    assert_eq!(r.0, 201, "{r:?}");
                }
                let body = match prefix {
                    "t" => Some(json!({"redirect": false})),
                    "ca" => Some(cert),
                    _ => None,
                };
                let url = format!("/api/v1/domains/{domain}/{path}");
                let r = who.call(method, &url, body).await;
                if prefix == "cn" && ok {
                    // Allowed, and refused for what the domain is: its TLS is not ACME.
                    assert_eq!(r.0, 409, "cert renew by {name} on {tier}: {r:?}");
                    assert!(r.1.contains("ACME"), "{}", r.1);
                } else {
                    expect(case(&format!("{method} {path}")), r, ok);
                }
                checked.insert((method, checked_path));
            }
        }

        // App-wide: only the app's owners.
        let owner = *role == Some(Role::Owner);
        let r = who
            .call(
                "POST",
                "/api/v1/grants",
                Some(json!({"user": "viewer", "app": "shop", "role": "viewer"})),
            )
            .await;
        expect(format!("grant by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/grants"));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/policy",
                Some(json!({"action": "deploy", "tier": "qa", "role": "maintainer"})),
            )
            .await;
        expect(format!("policy by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/policy"));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/approval-rules",
                Some(json!({"action": "restore", "tier": "qa", "expires": null})),
            )
            .await;
        expect(format!("approval rule by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/approval-rules"));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/protection",
                Some(json!({"tier": "qa", "on": false})),
            )
            .await;
        expect(format!("protection by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/protection"));
        // The declared pipeline and scheduled cuts: owners of the app (set, then reset, so the
        // tier rule holds for the next user); running a schedule's cut now is a promotion, which
        // needs the right to promote into its target.
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/pipeline",
                Some(json!({"stages": [["tier:qa"], ["tier:staging"]],
                    "promotions": [{"from": "qa-a", "to": "stg-a"}]})),
            )
            .await;
        expect(format!("pipeline set by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/pipeline"));
        let r = who.call("DELETE", "/api/v1/apps/shop/pipeline", None).await;
        expect(format!("pipeline reset by {name}"), r, owner);
        checked.insert(("DELETE", "/api/v1/apps/{app}/pipeline"));
        let yearly = json!({"from": "qa-a", "to": "stg-a", "cron": "0 0 1 1 *"});
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/pipeline/schedules",
                Some(yearly.clone()),
            )
            .await;
        if owner {
            let id = serde_json::from_str::<Value>(&r.1).unwrap()["id"].clone();
            admin
                .call(
                    "DELETE",
                    &format!("/api/v1/apps/shop/pipeline/schedules/{id}"),
                    None,
                )
                .await;
        }
        expect(format!("schedule add by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/pipeline/schedules"));
        let (_, made) = admin
            .call("POST", "/api/v1/apps/shop/pipeline/schedules", Some(yearly))
            .await;
        let id = serde_json::from_str::<Value>(&made).unwrap()["id"].clone();
        let ok = allowed(*role, Action::Promote.default_role(Tier::Staging));
        let r = who
            .call(
                "POST",
                &format!("/api/v1/apps/shop/pipeline/schedules/{id}/run"),
                None,
            )
            .await;
        if ok {
            assert_eq!(r.0, 201, "schedule run by {name}: {}", r.1);
            let job: Value = serde_json::from_str(&r.1).unwrap();
            let end = job_end(&who, &job["id"].to_string()).await;
            assert_eq!(end["state"], "succeeded", "schedule run by {name}: {end}");
        }
        expect(format!("schedule run by {name}"), r, ok);
        checked.insert(("POST", "/api/v1/apps/{app}/pipeline/schedules/{id}/run"));
        let r = who
            .call(
                "DELETE",
                &format!("/api/v1/apps/shop/pipeline/schedules/{id}"),
                None,
            )
            .await;
        expect(format!("schedule remove by {name}"), r, owner);
        checked.insert(("DELETE", "/api/v1/apps/{app}/pipeline/schedules/{id}"));
        admin
            .call(
                "DELETE",
                &format!("/api/v1/apps/shop/pipeline/schedules/{id}"),
                None,
            )
            .await;
        // A CI report needs a role on the app (each deploy it starts needs its own right): a
        // failed build starts nothing.
        let r = who
            .call(
                "POST",
                "/api/v1/hooks/ci",
                Some(json!({"app": "shop", "branch": "main", "status": "failure",
                    "commit": "0123456789abcdef0123456789abcdef01234567"})),
            )
            .await;
        expect(format!("CI report by {name}"), r, role.is_some());
        checked.insert(("POST", "/api/v1/hooks/ci"));
        // A webhook secret lets deliveries deploy as whoever set it: owners only.
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/hooks",
                Some(json!({"provider": "gitlab", "secret": format!("a-hook-secret-of-{name}")})),
            )
            .await;
        expect(format!("hook secret by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/hooks"));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/settings",
                Some(json!({"branch_envs": false})),
            )
            .await;
        expect(format!("app settings by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/settings"));
        // Environments' data (qa tier): seed, clone and sync need the right to re-seed or
        // configure the target (and to read the source); the jobs they start succeed. Attach
        // and detach need configuration; allowed, they get past authorization to the
        // engine's own answer (SQLite files are not shared across environments' users; no
        // attachment to remove).
        let ok = allowed(*role, Action::Config.default_role(Tier::Qa));
        for (what, path, body) in [
            ("data seed", "seed", json!({})),
            ("data clone", "clone", json!({"from": "shop/qa-b"})),
            ("data sync", "sync", json!({"from": "shop/prod-b"})),
        ] {
            let r = who
                .call(
                    "POST",
                    &format!("/api/v1/apps/shop/envs/qa-a/data/{path}"),
                    Some(body),
                )
                .await;
            if ok {
                assert_eq!(r.0, 201, "{what} by {name}: {}", r.1);
                let job: Value = serde_json::from_str(&r.1).unwrap();
                let end = job_end(&who, &job["id"].to_string()).await;
                assert_eq!(end["state"], "succeeded", "{what} by {name}: {end}");
            }
            expect(format!("{what} by {name}"), r, ok);
            checked.insert((
                "POST",
                match path {
                    "seed" => "/api/v1/apps/{app}/envs/{env}/data/seed",
                    "clone" => "/api/v1/apps/{app}/envs/{env}/data/clone",
                    _ => "/api/v1/apps/{app}/envs/{env}/data/sync",
                },
            ));
        }
        let attach = who
            .call(
                "POST",
                "/api/v1/apps/shop/envs/qa-a/data/attachments",
                Some(json!({"to": "shop/qa-b", "mode": "read"})),
            )
            .await;
        let detach = who
            .call(
                "DELETE",
                "/api/v1/apps/shop/envs/qa-a/data/attachments/qa-b",
                None,
            )
            .await;
        for (what, r, past) in [("data attach", attach, 409), ("data detach", detach, 404)] {
            if ok {
                assert_eq!(r.0, past, "{what} by {name}: {}", r.1);
            } else {
                expect(format!("{what} by {name}"), r, false);
            }
        }
        checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/data/attachments"));
        checked.insert((
            "DELETE",
            "/api/v1/apps/{app}/envs/{env}/data/attachments/{other}",
        ));
        // Backups (qa tier): taking and verifying a snapshot need configuration rights;
        // deleting one and setting the schedule need the right to restore.
        let ok = allowed(*role, Action::Config.default_role(Tier::Qa));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/envs/qa-a/backups",
                Some(json!({})),
            )
            .await;
        if ok {
            assert_eq!(r.0, 201, "backup create by {name}: {}", r.1);
            let job: Value = serde_json::from_str(&r.1).unwrap();
            let end = job_end(&who, &job["id"].to_string()).await;
            assert_eq!(end["state"], "succeeded", "backup create by {name}: {end}");
        }
        expect(format!("backup create by {name}"), r, ok);
        checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/backups"));
        let (_, made) = admin
            .call(
                "POST",
                "/api/v1/apps/shop/envs/qa-a/backups",
                Some(json!({})),
            )
            .await;
        let made: Value = serde_json::from_str(&made).unwrap();
        job_end(&admin, &made["id"].to_string()).await;
        let (_, list) = admin
            .call("GET", "/api/v1/apps/shop/envs/qa-a/backups", None)
            .await;
        let backup = serde_json::from_str::<Value>(&list).unwrap()["backups"][0]["id"].clone();
        let r = who
            .call("POST", &format!("/api/v1/backups/{backup}/verify"), None)
            .await;
        if ok {
            assert_eq!(r.0, 201, "backup verify by {name}: {}", r.1);
            let job: Value = serde_json::from_str(&r.1).unwrap();
            let end = job_end(&who, &job["id"].to_string()).await;
            assert_eq!(end["state"], "succeeded", "backup verify by {name}: {end}");
        }
        expect(format!("backup verify by {name}"), r, ok);
        checked.insert(("POST", "/api/v1/backups/{id}/verify"));
        let ok = allowed(*role, Action::Restore.default_role(Tier::Qa));
        let r = who
            .call("DELETE", &format!("/api/v1/backups/{backup}"), None)
            .await;
        expect(format!("backup delete by {name}"), r, ok);
        checked.insert(("DELETE", "/api/v1/backups/{id}"));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/envs/qa-a/backups/policy",
                Some(json!({"schedule": "none"})),
            )
            .await;
        expect(format!("backup policy by {name}"), r, ok);
        checked.insert(("POST", "/api/v1/apps/{app}/envs/{env}/backups/policy"));
        // Outbound policy (qa tier): configuration rights on the tier.
        let ok = allowed(*role, Action::Config.default_role(Tier::Qa));
        let r = who
            .call(
                "POST",
                "/api/v1/apps/shop/egress",
                Some(json!({"tier": "qa", "mode": "record"})),
            )
            .await;
        expect(format!("egress policy by {name}"), r, ok);
        checked.insert(("POST", "/api/v1/apps/{app}/egress"));
        let throwaway = format!("del-{rname}");
        d.ok(&[
            "app",
            "create",
            &throwaway,
            "--repo",
            repo.path().to_str().unwrap(),
        ]);
        if let Some(role) = role {
            d.ok(&["access", "grant", name, &throwaway, role.as_str()]);
        }
        // A link opens the other app's environments to this app's code: owners of the app
        // who may also deploy the other's development environments (here the same role).
        let link = Some(json!({"other": throwaway}));
        let r = who
            .call("POST", "/api/v1/apps/shop/links", link.clone())
            .await;
        expect(format!("link by {name}"), r, owner);
        checked.insert(("POST", "/api/v1/apps/{app}/links"));
        if !owner {
            let r = admin.call("POST", "/api/v1/apps/shop/links", link).await;
            assert_eq!(r.0, 201, "{r:?}");
        }
        let unlink = format!("/api/v1/apps/shop/links/{throwaway}");
        let r = who.call("DELETE", &unlink, None).await;
        expect(format!("link remove by {name}"), r, owner);
        checked.insert(("DELETE", "/api/v1/apps/{app}/links/{name}"));
        let r = who
            .call("DELETE", &format!("/api/v1/apps/{throwaway}"), None)
            .await;
        expect(format!("app delete by {name}"), r, owner);
        checked.insert(("DELETE", "/api/v1/apps/{app}"));

        // Administration: only an owner of every app (the first user).
        let r = who
            .call(
                "POST",
                "/api/v1/apps",
                Some(json!({"name": format!("new-{rname}"), "repo": repo.path()})),
            )
            .await;
        expect(format!("app create by {name}"), r, false);
        checked.insert(("POST", "/api/v1/apps"));
        let r = who
            .call(
                "POST",
                "/api/v1/users",
                Some(json!({"name": format!("u-{rname}")})),
            )
            .await;
        expect(format!("user add by {name}"), r, false);
        checked.insert(("POST", "/api/v1/users"));
        // Tokens: your own, yes; someone else's, no.
        let r = who
            .call("POST", "/api/v1/tokens", Some(json!({"user": "admin"})))
            .await;
        expect(format!("token for admin by {name}"), r, false);
        let mine = who
            .call("POST", "/api/v1/tokens", Some(json!({"user": name})))
            .await;
        let mine_id = serde_json::from_str::<Value>(&mine.1).unwrap()["id"]
            .as_i64()
            .unwrap();
        expect(format!("own token by {name}"), mine, true);
        checked.insert(("POST", "/api/v1/tokens"));
        let r = who.call("DELETE", "/api/v1/tokens/1", None).await;
        expect(format!("revoke admin's token by {name}"), r, false);
        let r = who
            .call("DELETE", &format!("/api/v1/tokens/{mine_id}"), None)
            .await;
        expect(format!("revoke own token by {name}"), r, true);
        checked.insert(("DELETE", "/api/v1/tokens/{id}"));
    }
    // Admin succeeds where the per-app roles could not.
    assert_eq!(
        admin
            .call("POST", "/api/v1/users", Some(json!({"name": "carol"})))
            .await
            .0,
        201
    );

    // Approvals: the admin asks, each role tries to decide.
    d.ok(&[
        "access",
        "require-approval",
        "shop",
        "deploy",
        "production",
        "--expires",
        "1h",
    ]);
    for (role, name, token) in &people {
        let who = As {
            api: d.api.clone(),
            token: Some(token.clone()),
        };
        for (verb, path) in [
            ("approve", "/api/v1/approvals/{id}/approve"),
            ("reject", "/api/v1/approvals/{id}/reject"),
        ] {
            let (status, body) = admin
                .call(
                    "POST",
                    "/api/v1/apps/shop/envs/prod-a/deploy",
                    Some(json!({})),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            let id = serde_json::from_str::<Value>(&body).unwrap()["approval"]
                .as_i64()
                .unwrap();
            let r = who
                .call("POST", &path.replace("{id}", &id.to_string()), None)
                .await;
            expect(format!("{verb} by {name}"), r, *role == Some(Role::Owner));
            checked.insert(("POST", path));
        }
    }

    // Rotating the secret key: administrators only, whatever role on an app.
    for (_, name, token) in &people {
        let who = As {
            api: d.api.clone(),
            token: Some(token.clone()),
        };
        let r = who.call("POST", "/api/v1/secrets/rotate-key", None).await;
        expect(format!("rotate-key by {name}"), r, false);
    }
    let r = admin.call("POST", "/api/v1/secrets/rotate-key", None).await;
    expect("rotate-key by the administrator".into(), r, true);
    checked.insert(("POST", "/api/v1/secrets/rotate-key"));

    let mutating: BTreeSet<(&str, &str)> = turnout_control::api::endpoints()
        .into_iter()
        .filter(|(method, _)| *method != "GET")
        .collect();
    assert_eq!(
        checked, mutating,
        "every mutating endpoint needs an entry in this test's table"
    );
    println!(
        "access matrix: {cases} cases over {} mutating endpoints, 5 users, 7 tiers",
        mutating.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unknown_expired_and_revoked_tokens_get_401() {
    let d = Daemon::start();
    let anonymous = As {
        api: d.api.clone(),
        token: None,
    };
    for (method, path) in turnout_control::api::endpoints() {
        let path = path
            .replace("{app}", "shop")
            .replace("{env}", "dev")
            .replace("{domain}", "x.test")
            .replace("{id}", "1");
        let (status, body) = anonymous.call(method, &path, None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body.contains("no API token"), "{body}");
    }
    let (status, _) = anonymous.call("GET", "/api/v1/health", None).await;
    assert_eq!(status, 200, "liveness needs no token");
    // Webhook deliveries take no token: an unsigned one is refused by its signature check.
    for (method, path) in turnout_control::api::signed_endpoints() {
        let path = path.replace("{app}", "shop");
        let (status, body) = anonymous.call(method, &path, None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body.contains("webhooks"), "{body}");
    }

    let bogus = As {
        api: d.api.clone(),
        token: Some("tnt_0000".into()),
    };
    let (status, body) = bogus.call("GET", "/api/v1/apps", None).await;
    assert_eq!((status, body.contains("not known")), (401, true), "{body}");

    d.ok(&["user", "add", "bob"]);
    let short = d.json(&["token", "create", "--user", "bob", "--expires", "1s"]);
    let bob = As {
        api: d.api.clone(),
        token: Some(short["token"].as_str().unwrap().into()),
    };
    let body = eventually("the token to expire", Duration::from_secs(10), || {
        let bob = &bob;
        async move {
            let (status, body) = bob.call("GET", "/api/v1/apps", None).await;
            (status == 401).then_some(body)
        }
    })
    .await;
    assert!(body.contains("expired"), "{body}");

    let long = d.json(&["token", "create", "--user", "bob"]);
    let bob = As {
        api: d.api.clone(),
        token: Some(long["token"].as_str().unwrap().into()),
    };
    assert_eq!(bob.call("GET", "/api/v1/apps", None).await.0, 200);
    d.ok(&["token", "revoke", &long["id"].to_string()]);
    let (status, body) = bob.call("GET", "/api/v1/apps", None).await;
    assert_eq!((status, body.contains("revoked")), (401, true), "{body}");

    // Tokens are stored hashed: the store holds no token.
    let list = d.ok(&["token", "list"]);
    assert!(!list.contains(long["token"].as_str().unwrap()), "{list}");
    let db = std::fs::read(d.home.path().join("turnout.db")).unwrap();
    let wal = std::fs::read(d.home.path().join("turnout.db-wal")).unwrap_or_default();
    for token in [long["token"].as_str().unwrap(), d.admin_token().as_str()] {
        for bytes in [&db, &wal] {
            assert!(
                !String::from_utf8_lossy(bytes).contains(token),
                "the store holds a token"
            );
        }
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.home.path().join("admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin.token must be private");
    let log = std::fs::read_to_string(d.cwd.path().join("serve.log")).unwrap();
    assert!(!log.contains(long["token"].as_str().unwrap()) && !log.contains(&d.admin_token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_deploy_waits_for_a_second_owner() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["user", "add", "bob"]);
    d.ok(&["access", "grant", "bob", "shop", "owner"]);
    let bob = d.json(&["token", "create", "--user", "bob"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_bob = |args: &[&str]| {
        std::process::Command::new(crate::support::BIN)
            .args(["--api", &d.api])
            .args(args)
            .env("TURNOUT_TOKEN", &bob)
            .output()
            .unwrap()
    };
    d.ok(&[
        "access",
        "require-approval",
        "shop",
        "deploy",
        "production",
        "--expires",
        "1h",
    ]);
    repo.write("content.txt", "v2");
    repo.commit("v2");

    let out = as_bob(&["deploy", "shop/prod"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("needs a second owner's approval") && err.contains("turnout approve 1"),
        "{err}"
    );
    let (_, body) = d.get("prod.shop.localhost", "/").await;
    assert!(body.starts_with("v1 "), "nothing deployed yet: {body}");

    let out = as_bob(&["approve", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bob asked for request 1 and cannot approve it"),
        "{err}"
    );

    let pending = d.json(&["approvals", "list"]);
    assert_eq!(pending[0]["summary"], "deploy branch main to shop/prod");
    assert_eq!(pending[0]["requested_by"], "bob");
    let out = d.ok(&["approve", "1"]);
    assert!(
        out.contains("approved request 1") && out.contains("live: shop/prod"),
        "{out}"
    );
    let (_, body) = d.get("prod.shop.localhost", "/").await;
    assert!(body.starts_with("v2 "), "approved deploy is live: {body}");
    let done = d.json(&["approvals", "list", "--all"]);
    assert_eq!(
        (done[0]["status"].as_str(), done[0]["decided_by"].as_str()),
        (Some("approved"), Some("admin"))
    );
    let err = d.fails(&["approve", "1"]);
    assert!(err.contains("approved, not pending"), "{err}");

    // Rejected, and expired, requests never run.
    repo.write("content.txt", "v3");
    repo.commit("v3");
    assert_eq!(as_bob(&["deploy", "shop/prod"]).status.code(), Some(3));
    d.ok(&["reject", "2"]);
    d.ok(&[
        "access",
        "require-approval",
        "shop",
        "deploy",
        "production",
        "--expires",
        "1s",
    ]);
    assert_eq!(as_bob(&["deploy", "shop/prod"]).status.code(), Some(3));
    eventually("the request to expire", Duration::from_secs(10), || {
        let list = d.json(&["approvals", "list", "--all"]);
        async move { (list[0]["id"] == 3 && list[0]["status"] == "expired").then_some(()) }
    })
    .await;
    let err = d.fails(&["approve", "3"]);
    assert!(err.contains("expired, not pending"), "{err}");
    let (_, body) = d.get("prod.shop.localhost", "/").await;
    assert!(body.starts_with("v2 "), "{body}");

    // Without the rule, an owner deploys directly again.
    d.ok(&[
        "access",
        "require-approval",
        "shop",
        "deploy",
        "production",
        "--off",
    ]);
    assert!(as_bob(&["deploy", "shop/prod"]).status.success());

    let audit = d.json(&["audit", "--app", "shop"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for wanted in [
        "approval.request",
        "approval.approve",
        "approval.reject",
        "deploy",
    ] {
        assert!(
            actions.contains(&wanted),
            "audit lacks {wanted}: {actions:?}"
        );
    }
    let approved_deploy = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "deploy" && e["actor"] == "bob (approved by admin)")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(approved_deploy["result"], "ok");
    // What the approved operation did, and the expiry, are on the record too.
    let entry = |action: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("audit lacks {action}: {audit}"))
            .clone()
    };
    let result = entry("approval.result");
    assert_eq!(result["actor"], "bob (approved by admin)");
    assert!(
        result["to"].as_str().unwrap().contains("started as job") && result["result"] == "ok",
        "{result}"
    );
    let expired = entry("approval.expire");
    assert_eq!(
        (&expired["actor"], &expired["to"]),
        (&"turnout".into(), &"expired".into())
    );
    assert!(
        expired["from"]
            .as_str()
            .unwrap()
            .starts_with("request 3 by bob"),
        "{expired}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_every_change_and_detects_tampering() {
    let repo = Repo::new("audited");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("blue", "main", "staging"), ("green", "main", "staging")],
    );
    d.ok(&["deploy", "shop/blue"]);
    d.ok(&["deploy", "shop/green"]);
    d.ok(&["domain", "add", "shop.test", "shop/blue"]);
    d.ok(&["domain", "switch", "shop.test", "shop/green"]);
    d.ok(&["user", "add", "dev1"]);
    d.ok(&["access", "grant", "dev1", "shop", "developer"]);
    let dev = d.json(&["token", "create", "--user", "dev1"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = std::process::Command::new(crate::support::BIN)
        .args(["--api", &d.api, "deploy", "shop/blue"])
        .env("TURNOUT_TOKEN", &dev)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("needs the maintainer role on app 'shop'; dev1 has developer"),
        "{err}"
    );

    let entries = d.json(&["audit", "--app", "shop"]);
    let find = |action: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {entries}"))
            .clone()
    };
    let switch = find("domain.switch");
    assert_eq!(
        (
            switch["actor"].as_str(),
            switch["from"].as_str(),
            switch["to"].as_str()
        ),
        (Some("admin"), Some("shop/blue"), Some("shop/green"))
    );
    assert_eq!(
        (switch["domain"].as_str(), switch["result"].as_str()),
        (Some("shop.test"), Some("ok"))
    );
    let deploy = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "deploy" && e["result"] == "ok")
        .unwrap();
    assert_eq!(deploy["env"], "green");
    assert_eq!(deploy["to"].as_str().unwrap().len(), 40, "{deploy}");
    let refused = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["actor"] == "dev1")
        .unwrap();
    assert!(
        refused["result"]
            .as_str()
            .unwrap()
            .starts_with("denied: forbidden"),
        "{refused}"
    );
    assert_eq!(
        (refused["action"].as_str(), refused["env"].as_str()),
        (Some("deploy"), Some("blue"))
    );
    for action in [
        "app.create",
        "env.create",
        "job.start",
        "release.create",
        "job.end",
        "domain.add",
        "access.grant",
    ] {
        find(action);
    }
    let filtered = d.json(&["audit", "--app", "shop", "--env", "blue", "--since", "1h"]);
    assert!(
        filtered
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["env"] == "blue")
            && !filtered.as_array().unwrap().is_empty()
    );

    let out = d.ok(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");

    // The store refuses to rewrite history...
    let db = rusqlite::Connection::open(d.home.path().join("turnout.db")).unwrap();
    let err = db
        .execute(
            "UPDATE audit SET actor = 'mallory' WHERE action = 'domain.switch'",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // ...and someone who gets around that is caught by the chain.
    db.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'mallory' WHERE action = 'domain.switch';").unwrap();
    let id = switch["id"].as_i64().unwrap();
    let out = d.cli(&["audit", "verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "verify must fail");
    assert!(
        err.contains(&format!("broken at entry {id}")) && err.contains("altered"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_internal_urls_need_a_login() {
    let repo = Repo::new("private");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("staging", "main", "staging"),
            ("dev", "main", "development"),
        ],
    );
    d.ok(&["deploy", "shop/staging"]);
    d.ok(&["deploy", "shop/dev"]);
    d.ok(&["access", "protect", "shop", "on", "--tier", "staging"]);
    d.ok(&["user", "add", "reviewer"]);
    d.ok(&["access", "grant", "reviewer", "shop", "viewer"]);
    let token = d.json(&["token", "create", "--user", "reviewer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = get(d.http, "staging.shop.localhost", "/").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.contains("private"),
        "no app content for anonymous visitors: {body}"
    );
    let (status, body) = get(d.http, "dev.shop.localhost", "/").await;
    assert_eq!(
        (status, body.starts_with("private")),
        (200, true),
        "other tiers stay open"
    );

    let client = reqwest::Client::new();
    let url = format!("http://{}/", d.http);
    let basic = client
        .get(&url)
        .header("host", "staging.shop.localhost")
        .basic_auth("reviewer", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    assert!(
        basic
            .text()
            .await
            .unwrap()
            .starts_with("private env=staging")
    );
    let cookie = client
        .get(&url)
        .header("host", "staging.shop.localhost")
        .header("cookie", format!("turnout_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);

    // A user without a role on the app, or a revoked token, does not get in.
    d.ok(&["user", "add", "stranger"]);
    let stranger = d.json(&["token", "create", "--user", "stranger"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denied = client
        .get(&url)
        .header("host", "staging.shop.localhost")
        .basic_auth("x", Some(&stranger))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let id = d
        .json(&["token", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "reviewer")
        .unwrap()["id"]
        .to_string();
    d.ok(&["token", "revoke", &id]);
    let revoked = client
        .get(&url)
        .header("host", "staging.shop.localhost")
        .basic_auth("x", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);

    d.ok(&["access", "protect", "shop", "off", "--tier", "staging"]);
    let (status, _) = get(d.http, "staging.shop.localhost", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_instance_and_only_deployers_see_them() {
    let repo = Repo::new("secretive");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("dev", "main", "development"),
            ("prod", "main", "production"),
        ],
    );
    let secret = "s3cr3t-value-9f2c";
    // From standard input, so it is never an argument.
    let mut child = std::process::Command::new(crate::support::BIN)
        .args(["--api", &d.api, "--home"])
        .arg(d.home.path())
        .args(["secret", "set", "shop/prod", "API_KEY"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{secret}\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    d.ok(&["secret", "set", "shop/dev", "API_KEY", "dev-value"]);
    let err = d.fails(&["secret", "set", "shop/prod", "PORT", "1"]);
    assert!(
        err.contains("PORT and TURNOUT_* are set by Turnout"),
        "{err}"
    );

    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/dev"]);
    let (_, body) = d.get("prod.shop.localhost", "/env/API_KEY").await;
    assert_eq!(body, format!("{secret}\n"));
    let (_, body) = d.get("dev.shop.localhost", "/env/API_KEY").await;
    assert_eq!(body, "dev-value\n", "each environment has its own");

    d.ok(&["user", "add", "dana"]);
    d.ok(&["access", "grant", "dana", "shop", "maintainer"]);
    let dana = d.json(&["token", "create", "--user", "dana"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_dana = |args: &[&str]| {
        std::process::Command::new(crate::support::BIN)
            .args(["--api", &d.api])
            .args(args)
            .env("TURNOUT_TOKEN", &dana)
            .output()
            .unwrap()
    };
    let keys = as_dana(&["secret", "list", "shop/prod"]);
    let text = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.status.success() && text.contains("API_KEY") && !text.contains(secret),
        "{text}"
    );
    let values = as_dana(&["secret", "list", "shop/prod", "--show"]);
    let err = String::from_utf8_lossy(&values.stderr);
    assert!(
        !values.status.success() && err.contains("needs the owner role"),
        "{err}"
    );
    let dev_values = as_dana(&["--json", "secret", "list", "shop/dev", "--show"]);
    assert!(String::from_utf8_lossy(&dev_values.stdout).contains("dev-value"));
    let shown = d.ok(&["secret", "list", "shop/prod", "--show"]);
    assert!(shown.contains(secret), "{shown}");

    // Never in the audit log, the daemon's log, the environment or a build log.
    let audit = d.ok(&["--json", "audit", "--app", "shop"]);
    assert!(audit.contains("config.set") && audit.contains("API_KEY") && !audit.contains(secret));
    let env = d.ok(&["--json", "env", "show", "shop/prod"]);
    assert!(!env.contains(secret));
    let log = std::fs::read_to_string(d.cwd.path().join("serve.log")).unwrap();
    assert!(!log.contains(secret));
    for build_log in crate::support::find_files(d.home.path(), "release-1-build.log") {
        assert!(!std::fs::read_to_string(build_log).unwrap().contains(secret));
    }
    d.ok(&["secret", "unset", "shop/prod", "API_KEY"]);
    d.ok(&["deploy", "shop/prod"]);
    let (_, body) = d.get("prod.shop.localhost", "/env/API_KEY").await;
    assert_eq!(body, "(unset)\n");
}
