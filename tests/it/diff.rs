//! `turnout env diff`: the commits between two environments' live releases, each way, and the
//! configuration set differently, with secret values never shown.
use crate::support::{Daemon, Repo, TOML};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_diff_lists_commits_each_way_and_differing_config_without_secret_values() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("prod", "main", "production")],
    );
    d.ok(&["deploy", "shop/qa"]);
    let first = d.json(&["env", "show", "shop/qa"])["release"]["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    repo.write(
        "turnout.toml",
        &format!("{TOML}\n[env]\nGREETING = \"hi\"\n"),
    );
    let second = repo.commit("Greet in production");
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["secret", "set", "shop/prod", "API_KEY", "prod-topsecret"]);
    d.ok(&["secret", "set", "shop/qa", "API_KEY", "qa-topsecret"]);
    d.ok(&["secret", "set", "shop/qa", "ONLY_QA", "qa-only-topsecret"]);
    d.ok(&["secret", "set", "shop/prod", "SAME", "same-topsecret"]);
    d.ok(&["secret", "set", "shop/qa", "SAME", "same-topsecret"]);

    let diff = d.json(&["env", "diff", "shop/qa", "shop/prod"]);
    assert_eq!(diff["a_commit"], first.as_str(), "{diff}");
    assert_eq!(diff["b_commit"], second.as_str(), "{diff}");
    let only_in_prod = diff["only_in_b"].as_array().unwrap();
    assert_eq!(only_in_prod.len(), 1, "{diff}");
    assert_eq!(only_in_prod[0]["commit"], second.as_str());
    assert_eq!(only_in_prod[0]["subject"], "Greet in production");
    assert!(
        only_in_prod[0]["author"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    );
    assert_eq!(diff["only_in_a"].as_array().unwrap().len(), 0, "{diff}");
    assert_eq!(diff["truncated"], false);
    let config: Vec<(String, String, serde_json::Value, serde_json::Value)> = diff["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
                c["a"].clone(),
                c["b"].clone(),
            )
        })
        .collect();
    let secret = serde_json::json!("(secret)");
    assert_eq!(
        config,
        vec![
            (
                "GREETING".into(),
                "env".into(),
                serde_json::Value::Null,
                "hi".into()
            ),
            (
                "API_KEY".into(),
                "secret".into(),
                secret.clone(),
                secret.clone()
            ),
            (
                "ONLY_QA".into(),
                "secret".into(),
                secret,
                serde_json::Value::Null
            ),
        ],
        "SAME is set alike on both, so it is not listed: {diff}"
    );

    // The other way round, and as people read it: no secret value anywhere.
    let back = d.json(&["env", "diff", "shop/prod", "shop/qa"]);
    assert_eq!(back["only_in_a"][0]["commit"], second.as_str(), "{back}");
    let text = d.ok(&["env", "diff", "shop/qa", "shop/prod"]);
    assert!(text.contains("1 commit in prod and not in qa"), "{text}");
    assert!(text.contains("Greet in production"), "{text}");
    for shown in [diff.to_string(), back.to_string(), text] {
        assert!(
            !shown.contains("topsecret"),
            "a secret value shown: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_diff_refuses_other_apps_unknown_environments_and_strangers() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.create("blog", repo.path(), &[("qa", "main", "qa")]);
    let err = d.fails(&["env", "diff", "shop/qa", "blog/qa"]);
    assert!(err.contains("different apps"), "{err}");
    let err = d.fails(&["env", "diff", "shop/qa", "shop/nope"]);
    assert!(err.contains("nope"), "{err}");
    // Nothing deployed yet: said so, no commits compared.
    let text = d.ok(&["env", "diff", "shop/qa", "shop/qa"]);
    assert!(
        text.contains("no commits to compare until both are deployed"),
        "{text}"
    );
    // Someone with a role on blog only cannot read shop's.
    d.ok(&["user", "add", "eve"]);
    d.ok(&["access", "grant", "eve", "blog", "owner"]);
    let token = d.json(&["token", "create", "--user", "eve"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.cli_as(&token, &["env", "diff", "shop/qa", "shop/qa"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shop"), "{err}");
}
