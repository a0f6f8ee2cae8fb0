//! Push to deploy: a real `git push` to the daemon's `/git/APP.git` (HTTP Basic, an API token as
//! the password) deploys the pushed commit to the environments of that branch that deploy on
//! push, and tells the pusher which ones and their jobs; refused pushes change no ref; with
//! branch environments on, a new branch gets `test-<branch>` until a push deletes the branch.
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Daemon, Repo};

/// A clone of `repo` to commit in and push from (the upstream repository itself stays as is).
fn clone(repo: &Repo) -> Repo {
    let work = Repo {
        dir: tempfile::tempdir().unwrap(),
    };
    work.git(&["clone", "--quiet", repo.path().to_str().unwrap(), "."]);
    work
}

/// The app's git URL with `token` as the password (none: anonymous).
fn url(d: &Daemon, token: Option<&str>) -> String {
    let host = d.api.trim_start_matches("http://");
    match token {
        Some(t) => format!("http://git:{t}@{host}/git/shop.git"),
        None => format!("http://{host}/git/shop.git"),
    }
}

/// Run git in `dir` as a client that never prompts and has no stored credentials.
fn git(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "credential.helper=", "-c", "user.name=Test"])
        .args(["-c", "user.email=test@turnout.invalid"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `git push URL REFSPEC…`, asserting success; what git printed (stderr).
#[track_caller]
fn push(work: &Repo, url: &str, refspecs: &[&str]) -> String {
    let mut args = vec!["push", url];
    args.extend_from_slice(refspecs);
    let out = git(work.path(), &args, &[]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "git push {refspecs:?}: {text}");
    text
}

/// The job id the push output gives for `env`'s deploy.
#[track_caller]
fn job_of(output: &str, env: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.contains(&format!("remote: shop/{env} deploys")))
        .unwrap_or_else(|| panic!("no deploy of {env} in: {output}"));
    line.split("job ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

/// The branches the daemon serves (`git ls-remote` through it, as the admin).
fn remote_heads(d: &Daemon) -> String {
    let out = git(
        Path::new("/"),
        &["ls-remote", "--heads", &url(d, Some(&d.admin_token()))],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn user(d: &Daemon, name: &str, role: &str) -> String {
    d.ok(&["user", "add", name]);
    d.ok(&["access", "grant", name, "shop", role]);
    d.json(&["token", "create", "--user", name])["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_deploys_its_exact_commit_where_the_environment_deploys_on_push() {
    let repo = Repo::new("upstream");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&[
        "env",
        "create",
        "shop/ci",
        "--branch",
        "main",
        "--deploy-on",
        "ci",
    ]);
    d.ok(&["env", "update", "shop/qa", "--deploy-on", "push"]);
    let dev = user(&d, "dev", "maintainer");
    let junior = user(&d, "junior", "developer");

    let work = clone(&repo);
    work.write("content.txt", "pushed");
    let pushed = work.commit("pushed, not in the upstream repository");

    // A pushed branch is what its environments deploy: moving `main`, which shop/qa (tier qa)
    // follows, needs the right to deploy shop/qa, which a developer lacks. Tags are not taken.
    work.git(&["tag", "v1"]);
    for refspec in ["main", "v1"] {
        let out = git(
            work.path(),
            &["push", &url(&d, Some(&junior)), refspec],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("[remote rejected]"), "{err}");
        let why = if refspec == "main" {
            "needs the maintainer role on app 'shop'; junior has developer"
        } else {
            "branches only"
        };
        assert!(err.contains(why), "{err}");
        assert_eq!(remote_heads(&d), "", "a refused push changed a ref");
    }
    let out = push(&work, &url(&d, Some(&dev)), &["main"]);
    assert!(
        out.contains(&format!("shop/qa deploys {}", &pushed[..12])),
        "{out}"
    );
    assert!(
        out.contains("remote: shop/ci skipped: deploys on ci, not on push"),
        "{out}"
    );
    assert!(out.contains("http://qa.shop.localhost:"), "{out}");
    let job = job_of(&out, "qa");
    d.ok(&["job", "watch", &job]);
    let job: Value = d.json(&["job", "show", &job]);
    assert_eq!(job["actor"], "dev", "deployed as the pusher: {job}");
    let qa = d.json(&["env", "show", "shop/qa"]);
    assert_eq!(qa["release"]["commit"], pushed.as_str(), "{qa}");
    let (status, body) = d.get("qa.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("pushed ")), (200, true), "{body}");
    let ci = d.json(&["env", "show", "shop/ci"]);
    assert!(ci["release"].is_null(), "a CI environment deployed: {ci}");
    assert!(remote_heads(&d).contains(&format!("{pushed}\trefs/heads/main")));

    // The branch was pushed to Turnout: a plain deploy of it (which fetches the upstream
    // repository, pruning) still takes what was pushed, and the pushed ref survives.
    d.ok(&["deploy", "shop/qa"]);
    let qa = d.json(&["env", "show", "shop/qa"]);
    assert_eq!(qa["release"]["commit"], pushed.as_str(), "{qa}");
    assert!(remote_heads(&d).contains(&pushed));

    let audit = d.json(&["audit", "--app", "shop"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "push"
                && e["actor"] == "dev"
                && e["to"] == format!("main at {pushed}")),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_without_the_deploy_role_or_a_valid_token_are_refused_and_change_no_ref() {
    let repo = Repo::new("upstream");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "test")]);
    d.ok(&["env", "update", "shop/qa", "--deploy-on", "push"]);
    let viewer = user(&d, "vic", "viewer");
    let work = clone(&repo);
    work.write("content.txt", "hostile");
    work.commit("hostile");
    let before = remote_heads(&d);
    assert_eq!(before, "", "nothing pushed yet");

    for (who, token, says) in [
        ("viewer", Some(viewer.as_str()), "403"),
        ("anonymous", None, "could not read Username"),
        (
            "bad token",
            Some("tnt_0000000000000000000000000000000000000000"),
            "Authentication failed",
        ),
    ] {
        let out = git(work.path(), &["push", &url(&d, token), "main"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{who}: {err}");
        assert!(err.contains(says), "{who}: {err}");
        assert_eq!(remote_heads(&d), before, "{who} changed a ref");
    }
    // The viewer reads (fetch, ls-remote) but does not push; the refusal names the role.
    let out = git(Path::new("/"), &["ls-remote", &url(&d, Some(&viewer))], &[]);
    assert!(out.status.success(), "{out:?}");
    let client = reqwest::Client::new();
    let info_refs = |token: Option<&str>, repo: &str| {
        let mut req = client.get(format!(
            "{}/git/{repo}/info/refs?service=git-receive-pack",
            d.api
        ));
        if let Some(t) = token {
            req = req.basic_auth("git", Some(t));
        }
        async move {
            let resp = req.send().await.unwrap();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                resp.status().as_u16(),
                challenge,
                resp.text().await.unwrap(),
            )
        }
    };
    let (status, _, text) = info_refs(Some(&viewer), "shop.git").await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("needs the developer role") && text.contains("vic has viewer"),
        "{text}"
    );
    for token in [None, Some("tnt_nope")] {
        let (status, challenge, text) = info_refs(token, "shop.git").await;
        assert_eq!(status, 401, "{text}");
        assert_eq!(challenge.as_deref(), Some("Basic realm=\"turnout\""));
    }
    let admin = d.admin_token();
    let (status, _, text) = info_refs(Some(&admin), "nope.git").await;
    assert_eq!(status, 404, "{text}");
    let (status, _, text) = info_refs(Some(&admin), "..%2Fetc.git").await;
    assert_eq!(status, 400, "{text}");
    // The receive-pack POST checks the token before git reads the body.
    let resp = client
        .post(format!("{}/git/shop.git/git-receive-pack", d.api))
        .basic_auth("git", Some(&viewer))
        .header("content-type", "application/x-git-receive-pack-request")
        .body("0000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let audit = d.json(&["audit", "--app", "shop"]);
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["actor"] == "vic"
            && e["result"]
                .as_str()
                .unwrap_or_default()
                .starts_with("denied")),
        "the refused push is audited: {audit}"
    );
    assert_eq!(remote_heads(&d), before);
    let qa = d.json(&["env", "show", "shop/qa"]);
    assert!(qa["release"].is_null(), "{qa}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_branch_gets_its_own_environment_until_a_push_deletes_it() {
    let repo = Repo::new("upstream");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    let dev = user(&d, "dev", "developer");
    let work = clone(&repo);
    work.branch("feature/Login");
    work.write("content.txt", "login page");
    let commit = work.commit("login page");

    // Off by default: nothing is created, and the output says how to get an environment.
    let out = push(&work, &url(&d, Some(&dev)), &["feature/Login"]);
    assert!(out.contains("no environment of shop follows it"), "{out}");
    assert!(out.contains("--branch-envs on"), "{out}");
    assert_eq!(
        d.json(&["env", "list", "shop"]).as_array().unwrap().len(),
        1
    );
    let set = d.json(&["app", "update", "shop", "--branch-envs", "on"]);
    assert_eq!(set["branch_envs"], true, "{set}");
    let err = String::from_utf8(
        d.cli_as(&dev, &["app", "update", "shop", "--branch-envs", "off"])
            .stderr,
    )
    .unwrap();
    assert!(err.contains("owner"), "only owners change it: {err}");

    work.write("content.txt", "login page v2");
    let commit2 = work.commit("login page v2");
    assert_ne!(commit, commit2);
    let out = push(&work, &url(&d, Some(&dev)), &["feature/Login"]);
    assert!(
        out.contains("created shop/test-feature-login for branch feature/Login"),
        "{out}"
    );
    let job = job_of(&out, "test-feature-login");
    d.ok(&["job", "watch", &job]);
    let env = d.json(&["env", "show", "shop/test-feature-login"]);
    assert_eq!(
        (&env["tier"], &env["deploy_on"], &env["branch"]),
        (
            &Value::from("test"),
            &Value::from("push"),
            &Value::from("feature/Login")
        ),
        "{env}"
    );
    assert_eq!(env["release"]["commit"], commit2.as_str());
    assert_eq!(env["made_for_branch"], true, "{env}");
    assert!(
        d.ok(&["env", "show", "shop/test-feature-login"])
            .contains("made for     branch feature/Login by a push: deleted with it")
    );
    let (status, body) = d.get("test-feature-login.shop.localhost", "/").await;
    assert_eq!(
        (status, body.starts_with("login page v2 ")),
        (200, true),
        "{body}"
    );

    // A branch whose name is shell syntax is data: a DNS-label environment, nothing run.
    work.branch("$(touch${IFS}pwned)");
    let out = push(&work, &url(&d, Some(&dev)), &["$(touch${IFS}pwned)"]);
    assert!(out.contains("created shop/test-touch-ifs-pwned"), "{out}");
    d.ok(&["job", "watch", &job_of(&out, "test-touch-ifs-pwned")]);
    assert!(!d.cwd.path().join("pwned").exists() && !work.path().join("pwned").exists());

    // A branch that exists only as a push can be followed by hand, too.
    d.ok(&[
        "env",
        "create",
        "shop/review",
        "--branch",
        "feature/Login",
        "--tier",
        "development",
    ]);

    // Deleting the branch deletes the environment made for it, not the one made by hand.
    let out = push(&work, &url(&d, Some(&dev)), &[":feature/Login"]);
    assert!(
        out.contains("deleted shop/test-feature-login: it was made for branch feature/Login"),
        "{out}"
    );
    assert!(
        out.contains("shop/review follows branch feature/Login"),
        "{out}"
    );
    let envs: Vec<String> = d
        .json(&["env", "list", "shop"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(envs, ["qa", "review", "test-touch-ifs-pwned"]);
    let (status, _) = d.get("test-feature-login.shop.localhost", "/").await;
    assert_eq!(status, 404);
    assert!(!remote_heads(&d).contains("feature/Login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_pushes_and_gzipped_fetches_work_up_to_the_limit() {
    let repo = Repo::new("upstream");
    let d = Daemon::start_with_env(&[("TURNOUT_MAX_PUSH_SIZE", "4")]);
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["env", "update", "shop/qa", "--deploy-on", "push"]);
    let admin = d.admin_token();
    let work = clone(&repo);
    let random = |n: usize| -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    // Over git's 1 MiB post buffer: sent chunked.
    std::fs::write(work.path().join("big.bin"), random(3 << 20)).unwrap();
    work.write("content.txt", "big");
    let big = work.commit("big");
    let out = git(
        work.path(),
        &["push", &url(&d, Some(&admin)), "main"],
        &[("GIT_TRACE_CURL", "1"), ("GIT_TRACE_CURL_NO_DATA", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Transfer-Encoding: chunked"), "not chunked");
    d.ok(&["job", "watch", &job_of(&err, "qa")]);
    let (status, body) = d.get("qa.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("big ")), (200, true), "{body}");

    // Over the daemon's limit: 413, and nothing changes.
    std::fs::write(work.path().join("bigger.bin"), random(5 << 20)).unwrap();
    work.commit("too big");
    let out = git(work.path(), &["push", &url(&d, Some(&admin)), "main"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("413"), "{err}");
    assert!(remote_heads(&d).contains(&format!("{big}\trefs/heads/main")));
    let objects = d.home.path().join("apps/shop/repo.git/objects");
    let left: Vec<_> = std::fs::read_dir(&objects)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("incoming-") || n.starts_with("tmp_"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "the refused push left objects behind"
    );

    // A fetch with many commits to negotiate sends its request gzipped.
    let other = clone(&repo);
    for i in 0..64 {
        other.write("n.txt", &i.to_string());
        other.commit(&format!("local {i}"));
    }
    let out = git(
        other.path(),
        &["fetch", &url(&d, Some(&admin)), "main"],
        &[("GIT_TRACE_CURL", "1"), ("GIT_TRACE_CURL_NO_DATA", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Content-Encoding: gzip"), "not gzipped");
    assert_eq!(
        other.git(&["rev-parse", "FETCH_HEAD"]).trim(),
        big,
        "fetched what was pushed"
    );
}

/// A pushed commit is already in Turnout: its deploy takes it from there (the job says it was
/// not fetched), so pushing deploys even while the app's repository is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_deploys_while_the_app_s_repository_is_unreachable() {
    let repo = Repo::new("upstream");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["env", "update", "shop/dev", "--deploy-on", "push"]);
    let work = clone(&repo);
    // The repository goes away (a network outage, a host being moved).
    let gone = repo.path().with_extension("gone");
    std::fs::rename(repo.path(), &gone).unwrap();

    work.write("content.txt", "pushed-while-away");
    let commit = work.commit("works without the repository");
    let out = push(&work, &url(&d, Some(&d.admin_token())), &["main"]);
    let job = job_of(&out, "dev");
    d.ok(&["job", "watch", &job]);
    let shown = d.json(&["job", "show", &job]);
    let fetch = &shown["steps"][0];
    assert_eq!(fetch["name"], "fetch", "{shown}");
    assert!(
        fetch["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not fetched"),
        "{shown}"
    );
    let (status, body) = d.get("dev.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("pushed-while-away env=dev"), "{body}");
    assert_eq!(
        d.json(&["env", "show", "shop/dev"])["release"]["commit"],
        commit.as_str()
    );
    // A clone from Turnout checks out what was pushed (its HEAD is the pushed main).
    let copy = tempfile::tempdir().unwrap();
    let out = git(
        Path::new("/"),
        &[
            "clone",
            &url(&d, Some(&d.admin_token())),
            copy.path().to_str().unwrap(),
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !said.contains("warning"), "{said}");
    assert_eq!(
        std::fs::read_to_string(copy.path().join("content.txt")).unwrap(),
        "pushed-while-away"
    );
    // A deploy of the branch by name still asks the repository, and says it cannot reach it.
    let err = d.fails(&["deploy", "shop/dev", "--ref", "main"]);
    assert!(err.contains("fetch"), "{err}");
    std::fs::rename(&gone, repo.path()).unwrap();
}
