//! The mail catcher: a staging app that sends a multipart mail with Python's smtplib has it
//! caught and shown, never delivered; a tier that opted in to a relay passes mail on to the
//! allow-listed domains only (to an SMTP server this test runs, standing for the real world);
//! production gets no catcher. Attacks: missing or wrong credentials, one environment posing as
//! another (on the host's listener and from inside a namespace), oversized messages, too many
//! recipients, a user without access. Bad relay settings are refused and change nothing.
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::{Daemon, Repo, eventually};

mod servers;
mod tls;
use servers::{Smtp, World, mailer_repo, parts};

const PATIENCE: Duration = Duration::from_secs(30);

async fn send(d: &Daemon, env: &str, query: &str) -> String {
    let (status, body) = d
        .get(&format!("{env}.shop.localhost"), &format!("/send?{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn messages(d: &Daemon, target: &str) -> Vec<Value> {
    d.json(&["mail", "list", target])["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// Opt staging in to the relay at `url`, for the domain `allowed.test`.
fn relay_staging_to(d: &Daemon, url: &str) {
    d.ok(&[
        "mail",
        "relay",
        "shop",
        "--tier",
        "staging",
        "--url",
        url,
        "--allow-domain",
        "allowed.test",
    ]);
}

/// Staging's newest message once the relay has decided its fate (it is no longer pending).
async fn relay_decided(d: &Daemon) -> Value {
    eventually("the relay to decide", PATIENCE, || async {
        let m = messages(d, "shop/staging")[0].clone();
        (m["relay"]["state"] != "pending").then_some(m)
    })
    .await
}

fn deploy(d: &Daemon, repo: &Repo, envs: &[(&str, &str)]) {
    let envs: Vec<(&str, &str, &str)> = envs.iter().map(|(e, t)| (*e, "main", *t)).collect();
    d.create("shop", repo.path(), &envs);
    for (env, _, _) in &envs {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staging_apps_mail_is_caught_and_shown_and_relayed_only_where_opted_in() {
    let world = World::start().await;
    let d = Daemon::start();
    let repo = mailer_repo();
    let real = "smtp://postmaster:pw@mail.example.com:587";
    d.create(
        "shop",
        repo.path(),
        &[
            ("staging", "main", "staging"),
            ("prod", "main", "production"),
        ],
    );
    d.ok(&["config", "set", "shop", &format!("SMTP_URL={real}")]);
    d.ok(&["deploy", "shop/staging"]);
    d.ok(&["deploy", "shop/prod"]);

    // Production gets no catcher: its SMTP_URL is the one the user configured.
    let (_, prod_url) = d.get("prod.shop.localhost", "/env/SMTP_URL").await;
    assert_eq!(prod_url, real);
    // Below production the catcher's URL overrides it.
    let (_, url) = d.get("staging.shop.localhost", "/env/SMTP_URL").await;
    assert!(url.starts_with("smtp://shop.staging:"), "{url}");

    let sent = send(
        &d,
        "staging",
        "to=alice@customer.test,bob@allowed.test&subject=Your+order",
    )
    .await;
    assert_eq!(sent, "sent");
    let list = messages(&d, "shop/staging");
    assert_eq!(list.len(), 1, "{list:?}");
    let m = &list[0];
    assert_eq!(m["env"], "shop/staging");
    assert_eq!(m["from"], "shop@shop.example");
    assert_eq!(
        m["to"],
        serde_json::json!(["alice@customer.test", "bob@allowed.test"])
    );
    assert_eq!(m["subject"], "Your order");
    assert_eq!(m["relay"]["state"], "off", "{m}");
    let id = m["id"].to_string();
    let table = d.ok(&["mail", "list", "shop/staging"]);
    assert!(
        table.contains("Your order") && table.contains("not relayed"),
        "{table}"
    );

    let shown = d.json(&["mail", "show", &id]);
    let header = |name: &str| {
        shown["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(header("Subject").as_deref(), Some("Your order"));
    assert!(header("From").unwrap().contains("shop@shop.example"));
    assert_eq!(
        shown["text"].as_str().unwrap().trim(),
        "Thanks for your order."
    );
    assert!(
        shown["html"].as_str().unwrap().contains("<b>order</b>"),
        "{shown}"
    );
    assert_eq!(
        shown["attachments"],
        serde_json::json!([{"name": "invoice.pdf", "content_type": "application/pdf", "size": 17}])
    );
    assert!(
        shown.get("raw").is_none(),
        "the raw message only with --raw"
    );
    let human = d.ok(&["mail", "show", &id]);
    for part in [
        "Subject: Your order",
        "--- text ---",
        "--- html ---",
        "invoice.pdf",
        "application/pdf",
    ] {
        assert!(human.contains(part), "{part} missing from:\n{human}");
    }
    let raw = d.ok(&["mail", "show", &id, "--raw"]);
    assert!(raw.contains("Content-Type: multipart/mixed"), "{raw}");
    assert!(raw.contains("Subject: Your order"), "{raw}");

    // Nothing reached the world.
    assert!(world.received().is_empty());

    // A relay for staging, to allowed.test only.
    let relays = d.json(&[
        "mail",
        "relay",
        "shop",
        "--tier",
        "staging",
        "--url",
        &format!("smtp://127.0.0.1:{}", world.port),
        "--allow-domain",
        "Allowed.Test",
    ]);
    let staging = relays["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "staging")
        .unwrap()
        .clone();
    assert_eq!(
        staging["relay"]["allow_domains"],
        serde_json::json!(["allowed.test"])
    );
    assert!(
        relays["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["tier"] != "production"),
        "production has no relay to set: {relays}"
    );
    let sent = send(
        &d,
        "staging",
        "to=alice@customer.test,bob@allowed.test&subject=Relayed",
    )
    .await;
    assert_eq!(sent, "sent");
    let relayed = relay_decided(&d).await;
    assert_eq!(relayed["relay"]["state"], "relayed", "{relayed}");
    assert_eq!(
        relayed["relay"]["to"],
        serde_json::json!(["bob@allowed.test"])
    );
    assert!(
        relayed["relay"]["reply"]
            .as_str()
            .unwrap()
            .contains("queued as world-1"),
        "{relayed}"
    );
    let got = world.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].to,
        vec!["bob@allowed.test".to_owned()],
        "only the allowed recipient"
    );
    assert_eq!(got[0].from, "shop@shop.example");
    assert!(got[0].data.contains("Subject: Relayed"), "{}", got[0].data);
    assert!(got[0].data.contains("invoice.pdf"));

    // Only recipients outside the allowed domains: kept, not relayed.
    send(&d, "staging", "to=carol@customer.test&subject=Private").await;
    let skipped = relay_decided(&d).await;
    assert_eq!(skipped["relay"]["state"], "skipped", "{skipped}");
    assert!(
        skipped["relay"]["reason"]
            .as_str()
            .unwrap()
            .contains("allowed.test")
    );
    assert_eq!(world.received().len(), 1);

    // A relay that cannot be reached: the failure is recorded on the message and audited.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    relay_staging_to(&d, &format!("smtp://127.0.0.1:{closed_port}"));
    send(&d, "staging", "to=bob@allowed.test&subject=Unreachable").await;
    let failed = relay_decided(&d).await;
    assert_eq!(failed["relay"]["state"], "failed", "{failed}");
    assert!(
        failed["relay"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{failed}"
    );
    assert_eq!(world.received().len(), 1);
    // smtps:// to a server that does not speak TLS: nothing is sent in clear.
    relay_staging_to(&d, &format!("smtps://mailer:pw@127.0.0.1:{}", world.port));
    send(&d, "staging", "to=bob@allowed.test&subject=Needs+TLS").await;
    let failed = relay_decided(&d).await;
    assert_eq!(failed["relay"]["state"], "failed", "{failed}");
    assert!(
        failed["relay"]["error"].as_str().unwrap().contains("TLS"),
        "{failed}"
    );
    assert_eq!(world.received().len(), 1);

    // A relay URL's password is sealed: never shown, audited or readable in the store file.
    d.ok(&[
        "mail",
        "relay",
        "shop",
        "--tier",
        "qa",
        "--url",
        "smtps://mailer:hunter2-relay@smtp.example.com",
        "--allow-domain",
        "example.com",
    ]);
    let listed = d.ok(&["mail", "relay", "shop"]);
    assert!(
        listed.contains("smtps://mailer@smtp.example.com:465"),
        "{listed}"
    );
    assert!(!listed.contains("hunter2"), "{listed}");
    let audit = d.ok(&["--json", "audit", "--app", "shop"]);
    assert!(
        audit.contains("mail.relay-set") && !audit.contains("hunter2"),
        "{audit}"
    );
    let mut store = std::fs::read(d.home.path().join("turnout.db")).unwrap();
    store.extend(std::fs::read(d.home.path().join("turnout.db-wal")).unwrap_or_default());
    assert!(
        !store.windows(7).any(|w| w == b"hunter2"),
        "the relay's password is in the store file in plain text"
    );

    // Off again: nothing more is relayed.
    let off = d.json(&["mail", "relay", "shop", "--tier", "staging", "--off"]);
    assert!(
        off["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tier"] == "staging" && t["relay"].is_null())
    );
    send(&d, "staging", "to=bob@allowed.test&subject=After").await;
    assert_eq!(messages(&d, "shop/staging")[0]["relay"]["state"], "off");
    assert_eq!(world.received().len(), 1);

    let cleared = d.json(&["mail", "clear", "shop/staging"]);
    assert_eq!(cleared["removed"], 6, "{cleared}");
    assert!(messages(&d, "shop/staging").is_empty());
    assert!(
        d.ok(&["mail", "list", "shop/staging"])
            .contains("no mail caught")
    );
    let audit = d.json(&["audit", "--app", "shop"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Catching is a bounded log of what the app did, not a change anyone made: no entry.
    assert!(
        !actions.iter().any(|a| a.starts_with("mail.catch")),
        "{actions:?}"
    );
    for action in ["mail.relay", "mail.clear", "mail.relay-set"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_sizes_recipients_and_access_are_enforced() {
    let d = Daemon::start();
    let repo = mailer_repo();
    deploy(&d, &repo, &[("staging", "staging"), ("qa", "qa")]);
    let (_, url) = d.get("staging.shop.localhost", "/env/SMTP_URL").await;
    let (user, password, port) = parts(&url);
    assert_eq!(user, "shop.staging");
    // [tiers.qa.mail] url_var: qa finds its URL under another name.
    let (_, qa_default) = d.get("qa.shop.localhost", "/env/SMTP_URL").await;
    assert_eq!(qa_default, "(unset)");
    let (_, qa_url) = d.get("qa.shop.localhost", "/env/MAILER_URL").await;
    let (qa_user, qa_password, qa_port) = parts(&qa_url);
    assert_eq!((qa_user.as_str(), qa_port), ("shop.qa", port));
    assert_ne!(qa_password, password);

    // No login: refused before MAIL, saying how.
    let mut s = Smtp::connect(port).await;
    let (code, text) = s.say("MAIL FROM:<x@shop.example>").await;
    assert_eq!(code, 530, "{text}");
    assert!(text.contains("SMTP_URL"), "{text}");
    // Wrong password, unknown user, staging's name with qa's password.
    for (u, p) in [
        (user.as_str(), "0123456789abcdef0123456789abcdef"),
        ("shop.nobody", password.as_str()),
        (user.as_str(), qa_password.as_str()),
    ] {
        let (code, text) = s.plain("", u, p).await;
        assert_eq!(code, 535, "{u}: {text}");
    }
    let (code, _) = s.say("MAIL FROM:<x@shop.example>").await;
    assert_eq!(code, 530, "still not logged in");
    // Guessing: the fifth failed login ends the connection.
    for _ in 0..2 {
        assert_eq!(s.plain("", &user, "guess").await.0, 535);
    }
    let (code, text) = s.reply().await;
    assert_eq!(code, 421, "{text}");
    drop(s);
    // Naming qa as the authorization identity with staging's credentials files as staging.
    let mut s = Smtp::connect(port).await;
    let (code, text) = s.plain("shop.qa", &user, &password).await;
    assert_eq!(code, 235, "{text}");
    let (code, text) = s.send("posing as qa").await;
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("turnout mail show"), "{text}");
    assert!(
        messages(&d, "shop/qa").is_empty(),
        "staging filed mail as qa"
    );
    assert_eq!(messages(&d, "shop/staging")[0]["subject"], "posing as qa");
    // AUTH LOGIN works too, and a second message on the same connection after RSET.
    let mut s = Smtp::connect(port).await;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let (code, _) = s.say("AUTH LOGIN").await;
    assert_eq!(code, 334);
    let (code, _) = s.say(&b64(&qa_user)).await;
    assert_eq!(code, 334);
    let (code, text) = s.say(&b64(&qa_password)).await;
    assert_eq!(code, 235, "{text}");
    assert_eq!(s.send("one").await.0, 250);
    assert_eq!(s.say("RSET").await.0, 250);
    assert_eq!(s.send("two").await.0, 250);
    assert_eq!(messages(&d, "shop/qa").len(), 2);

    // Too many recipients.
    let (code, _) = s.say("MAIL FROM:<x@shop.example>").await;
    assert_eq!(code, 250);
    for i in 0..100 {
        let (code, text) = s.say(&format!("RCPT TO:<r{i}@customer.test>")).await;
        assert_eq!(code, 250, "{i}: {text}");
    }
    let (code, text) = s.say("RCPT TO:<r100@customer.test>").await;
    assert_eq!(code, 452, "{text}");
    assert_eq!(s.say("RSET").await.0, 250);

    // Oversized: announced with SIZE, or sent anyway; refused, nothing kept.
    let (code, text) = s.say("MAIL FROM:<x@shop.example> SIZE=20000000").await;
    assert_eq!(code, 552, "{text}");
    assert_eq!(s.say("MAIL FROM:<x@shop.example>").await.0, 250);
    assert_eq!(s.say("RCPT TO:<y@customer.test>").await.0, 250);
    assert_eq!(s.say("DATA").await.0, 354);
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk = line.repeat(1024);
    s.w.write_all(b"Subject: huge\r\n\r\n").await.unwrap();
    for _ in 0..11 {
        s.w.write_all(chunk.as_bytes()).await.unwrap();
    }
    let (code, text) = s.say(".").await;
    assert_eq!(code, 552, "{text}");
    assert_eq!(
        messages(&d, "shop/qa").len(),
        2,
        "nothing of the big one kept"
    );
    // The connection still works after the refusal.
    assert_eq!(s.send("three").await.0, 250);
    // And through the app: smtplib announces the size and gets the refusal.
    let big = send(&d, "staging", "to=a@customer.test&big=1").await;
    assert!(big.starts_with("error:") && big.contains("552"), "{big}");
    assert_eq!(messages(&d, "shop/staging").len(), 1);
    // A bounce's null reverse-path, which every mail server must take (RFC 5321 4.5.5), on
    // the connection logged in as qa.
    let (code, text) = s.say("MAIL FROM:<>").await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(s.say("RCPT TO:<someone@customer.test>").await.0, 250);
    assert_eq!(s.say("DATA").await.0, 354);
    let (code, text) = s.say("Subject: Undeliverable\r\n\r\nreturned\r\n.").await;
    assert_eq!(code, 250, "{text}");
    let kept = messages(&d, "shop/qa");
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert_eq!(kept[0]["subject"], "Undeliverable");
    assert_eq!(kept[0]["from"], "", "the null sender is kept as null");
    let shown = d.ok(&["mail", "show", &kept[0]["id"].to_string()]);
    assert!(
        shown.contains("envelope: from <> to someone@customer.test"),
        "{shown}"
    );

    // From inside staging's namespace, qa's credentials are refused.
    let env = d.json(&["env", "show", "shop/staging"]);
    if env["isolation"]["network"].is_string() {
        let qs = format!(
            "to=a@customer.test&url={}",
            qa_url
                .replace(':', "%3A")
                .replace('/', "%2F")
                .replace('@', "%40")
        );
        let posing = send(&d, "staging", &qs).await;
        assert!(
            posing.contains("535") && posing.contains("another environment"),
            "{posing}"
        );
        assert!(
            messages(&d, "shop/qa")
                .iter()
                .all(|m| m["subject"] != "Your order")
        );
        // Inside its namespace, a client that does not log in sends as the environment.
        let before = messages(&d, "shop/staging").len();
        let sent = send(
            &d,
            "staging",
            "to=a@customer.test&subject=No+login&nologin=1",
        )
        .await;
        assert_eq!(sent, "sent");
        let list = messages(&d, "shop/staging");
        assert_eq!(list.len(), before + 1);
        assert_eq!(list[0]["subject"], "No login");
    } else {
        eprintln!("skipped the namespace case: environments run without network namespaces here");
    }

    // A user with no role on the app sees and changes nothing.
    d.ok(&["user", "add", "eve"]);
    let token = d.json(&["token", "create", "--user", "eve"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = messages(&d, "shop/qa")[0]["id"].to_string();
    for args in [
        vec!["mail", "list", "shop/qa"],
        vec!["mail", "show", &id],
        vec!["mail", "clear", "shop/qa"],
        vec!["mail", "relay", "shop"],
        vec![
            "mail",
            "relay",
            "shop",
            "--tier",
            "qa",
            "--url",
            "smtp://evil.test",
            "--allow-domain",
            "customer.test",
        ],
    ] {
        let out = d.cli_as(&token, &args);
        assert!(!out.status.success(), "eve could run {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("role"), "{args:?}: {err}");
    }
    assert_eq!(messages(&d, "shop/qa").len(), 4);
    let relays = d.json(&["mail", "relay", "shop"]);
    assert!(
        relays["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["relay"].is_null())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_relay_settings_are_refused_and_change_nothing() {
    let d = Daemon::start();
    let repo = Repo::new("x");
    d.ok(&[
        "app",
        "create",
        "shop",
        "--repo",
        repo.path().to_str().unwrap(),
    ]);
    let before = d.json(&["mail", "relay", "shop"]);
    let relay = |extra: &[&str]| {
        let mut args = vec!["mail", "relay", "shop"];
        args.extend_from_slice(extra);
        d.fails(&args)
    };
    for (args, says) in [
        (
            vec![
                "--tier",
                "staging",
                "--url",
                "http://mail.example.com",
                "--allow-domain",
                "example.com",
            ],
            "smtp:// or smtps://",
        ),
        (
            vec![
                "--tier",
                "staging",
                "--url",
                "smtp://mail.example.com:0",
                "--allow-domain",
                "example.com",
            ],
            "not a port",
        ),
        (
            vec![
                "--tier",
                "staging",
                "--url",
                "smtp://mail.example.com",
                "--allow-domain",
                "not a domain",
            ],
            "--allow-domain",
        ),
        (
            vec![
                "--tier",
                "staging",
                "--url",
                "smtp://mail.example.com",
                "--allow-domain",
                "someone@example.com",
            ],
            "not a domain name",
        ),
        (
            vec!["--tier", "staging", "--url", "smtp://mail.example.com"],
            "--allow-domain is needed",
        ),
        (vec!["--tier", "staging"], "--url is needed"),
        (
            vec![
                "--tier",
                "production",
                "--url",
                "smtp://mail.example.com",
                "--allow-domain",
                "example.com",
            ],
            "production does not use the mail catcher",
        ),
        (
            vec![
                "--tier",
                "prod",
                "--url",
                "smtp://mail.example.com",
                "--allow-domain",
                "example.com",
            ],
            "unknown tier 'prod'",
        ),
        (vec!["--url", "smtp://mail.example.com"], "--tier"),
    ] {
        let err = relay(&args);
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    }
    assert_eq!(
        d.json(&["mail", "relay", "shop"]),
        before,
        "nothing changed"
    );
    let err = d.fails(&["mail", "show", "999"]);
    assert!(err.contains("no caught message 999"), "{err}");
    let err = d.fails(&["mail", "list", "shop/nope"]);
    assert!(err.contains("nope"), "{err}");
}
