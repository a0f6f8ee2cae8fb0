//! `/metrics` names hosts: a user reads the series of the apps they have a role on, and
//! nothing of the others; an administrator reads all.
use crate::support::{Daemon, Repo};

async fn metrics(d: &Daemon, token: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", d.api))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_sees_only_the_series_of_their_apps() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.create(
        "blog",
        repo.path(),
        &[("blue", "main", "staging"), ("green", "main", "staging")],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "blog/blue"]);
    d.ok(&["deploy", "blog/green"]);
    d.ok(&["domain", "add", "www.shop.test", "shop/prod"]);
    d.ok(&["domain", "add", "news.example.test", "blog/blue"]);
    d.ok(&["domain", "switch", "news.example.test", "blog/green"]);
    // A second deploy replaces blue's instance: a drain of blog/blue is counted.
    d.ok(&["deploy", "blog/blue"]);
    for host in ["www.shop.test", "news.example.test", "prod.shop.localhost"] {
        let (status, body) = d.get(host, "/").await;
        assert_eq!(status, 200, "{host}: {body}");
    }

    d.ok(&["user", "add", "dev"]);
    d.ok(&["access", "grant", "dev", "shop", "developer"]);
    let dev = d.json(&["token", "create", "--user", "dev"])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let seen = metrics(&d, &dev).await;
    for line in [
        "turnout_http_responses_total{host=\"www.shop.test\",app=\"shop\",env=\"prod\",class=\"2xx\"} 1",
        "turnout_http_responses_total{host=\"prod.shop.localhost\",app=\"shop\",env=\"prod\",class=\"2xx\"} 1",
    ] {
        assert!(seen.contains(line), "the developer lacks {line}:\n{seen}");
    }
    for hidden in ["blog", "news.example.test"] {
        assert!(
            !seen.contains(hidden),
            "the developer sees {hidden}:\n{seen}"
        );
    }

    let all = metrics(&d, &d.admin_token()).await;
    for line in [
        "turnout_http_responses_total{host=\"www.shop.test\",app=\"shop\",env=\"prod\",class=\"2xx\"} 1",
        "turnout_http_responses_total{host=\"news.example.test\",app=\"blog\",env=\"green\",class=\"2xx\"} 1",
        "turnout_domain_switches_total{domain=\"news.example.test\",action=\"switch\"} 1",
        "turnout_drains_total{app=\"blog\",env=\"blue\"} 1",
    ] {
        assert!(all.contains(line), "the administrator lacks {line}:\n{all}");
    }
}
