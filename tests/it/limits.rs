//! Durations and times a user types are checked, not multiplied into overflow: absurd values
//! get a clear error naming the flag or parameter, and change nothing.
use crate::support::{Daemon, Repo};

/// GET an API path with the administrator's token: (status, body).
async fn api_get(d: &Daemon, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", d.api))
        .bearer_auth(d.admin_token())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_expiry_durations_are_refused() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    // 9999999999999999 days overflows an i64 of seconds; 3651 days is merely too long.
    for expires in [
        "9999999999999999d",
        "99999999999d",
        "106751991167301d",
        "3651d",
    ] {
        let err = d.fails(&["token", "create", "--user", "admin", "--expires", expires]);
        assert!(
            err.contains(&format!("invalid --expires '{expires}'"))
                && err.contains("at most 10 years"),
            "{err}"
        );
        let err = d.fails(&[
            "access",
            "require-approval",
            "shop",
            "deploy",
            "production",
            "--expires",
            expires,
        ]);
        assert!(
            err.contains(&format!("invalid --expires '{expires}'"))
                && err.contains("at most 10 years"),
            "{err}"
        );
    }
    let tokens = d.json(&["token", "list"]);
    assert_eq!(
        tokens.as_array().unwrap().len(),
        1,
        "no token was created: {tokens}"
    );
    d.ok(&["token", "create", "--user", "admin", "--expires", "3650d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_audit_since_is_a_400() {
    let d = Daemon::start();
    for since in [
        "-1",
        "-9223372036854775808",
        "253402300800",
        "9223372036854775807",
        "1h",
    ] {
        let (status, body) = api_get(&d, &format!("/api/v1/audit?since={since}")).await;
        assert_eq!(status, 400, "since={since}: {body}");
        assert!(
            body.contains(&format!("invalid since '{since}'"))
                && body.contains("Unix time in seconds"),
            "{body}"
        );
    }
    let (status, body) = api_get(&d, "/api/v1/audit?since=0").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("user.bootstrap"), "{body}");
}
