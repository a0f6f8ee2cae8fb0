//! GitHub and GitLab webhook deliveries, checked and read without touching any state: the
//! signature (or token), the delivery id, and what the event asks for. The payload shapes are
//! the providers' own, as they document them; unknown fields are accepted (they add fields).
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex>` is HMAC-SHA256 of the raw body with the
//!   secret; `X-GitHub-Delivery` names the delivery; `X-GitHub-Event` the event.
//! - GitLab: `X-Gitlab-Token` is the secret itself; `X-Gitlab-Event-UUID` (or
//!   `Idempotency-Key`) names the delivery; `X-Gitlab-Event` the event.
use axum::http::HeaderMap;
use ring::hmac;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use turnout_model::{DeployOn, HookProvider, format_timestamp};

use crate::error::ControlError;
use crate::git;

/// The largest delivery body taken (413 above). GitHub caps its payloads at 25 MB, but a push
/// carries at most 20 commits and the CI events none, so real deliveries stay far below this.
pub const MAX_BODY: usize = 5 * 1024 * 1024;

/// A delivery whose event happened longer ago than this is refused as stale: accepted
/// deliveries are remembered for `DELIVERY_MEMORY_SECS` (7 days), so an older one could be a
/// replay Turnout no longer recognises. GitHub redelivers for 3 days at most.
pub const MAX_AGE_SECS: i64 = 6 * 24 * 3600;
const _: () = assert!(MAX_AGE_SECS < crate::store::hooks::DELIVERY_MEMORY_SECS);

/// A hook secret's length bounds, in bytes.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=1024;

/// What a verified delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Intent {
    /// Deploy `commit` to the environments of `branch` that deploy `on` push or CI.
    Deploy {
        branch: String,
        commit: String,
        on: DeployOn,
        /// When the event happened (seconds since the epoch), if the payload says.
        at: Option<i64>,
    },
    /// `branch` was deleted: the environments pushes made for it go (as for `git push :BRANCH`).
    BranchDeleted { branch: String, at: Option<i64> },
    /// An event that deploys nothing (a ping, a failed build, a tag, another event), and why.
    Ignore(String),
}

/// Refuse a hook secret that is too short, too long or not header-safe text, without ever
/// quoting it.
pub fn check_secret(secret: &str, source: &str) -> Result<(), ControlError> {
    if !SECRET_LEN.contains(&secret.len()) || secret.chars().any(char::is_control) {
        return Err(ControlError::Invalid(format!(
            "the hook secret {source} must be {} to {} bytes of text without control characters; generate one with `openssl rand -hex 32`",
            SECRET_LEN.start(),
            SECRET_LEN.end()
        )));
    }
    Ok(())
}

fn unauthorized(provider: HookProvider, why: &str) -> ControlError {
    ControlError::Unauthorized(format!(
        "unauthorized: {why}; the webhook's secret on {} must be the one given to `turnout hooks set APP {provider}`",
        provider.title()
    ))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Check a GitHub delivery's `X-Hub-Signature-256` against `secret`, in constant time.
pub fn verify_github(secret: &[u8], body: &[u8], headers: &HeaderMap) -> Result<(), ControlError> {
    let p = HookProvider::Github;
    let Some(value) = header(headers, "X-Hub-Signature-256") else {
        return Err(unauthorized(
            p,
            "no X-Hub-Signature-256 header (an unsigned delivery: set a secret on the webhook)",
        ));
    };
    let tag = value
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .filter(|t| t.len() == 32)
        .ok_or_else(|| {
            unauthorized(
                p,
                "X-Hub-Signature-256 is not sha256= and 64 hexadecimal digits",
            )
        })?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    // ring compares the tags in constant time.
    hmac::verify(&key, body, &tag).map_err(|_| {
        unauthorized(
            p,
            "the X-Hub-Signature-256 signature does not match the body",
        )
    })
}

/// Check a GitLab delivery's `X-Gitlab-Token` against `secret`, in constant time: both are
/// signed with a fresh random key and the tags compared by `hmac::verify`, so neither the
/// length nor the first differing byte shows in the time taken.
pub fn verify_gitlab(secret: &[u8], headers: &HeaderMap) -> Result<(), ControlError> {
    let p = HookProvider::Gitlab;
    let Some(token) = headers.get("X-Gitlab-Token") else {
        return Err(unauthorized(
            p,
            "no X-Gitlab-Token header (set a secret token on the webhook)",
        ));
    };
    let rng = ring::rand::SystemRandom::new();
    let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
        .map_err(|_| ControlError::internal("no random key for comparing a webhook token"))?;
    let expected = hmac::sign(&key, secret);
    hmac::verify(&key, token.as_bytes(), expected.as_ref())
        .map_err(|_| unauthorized(p, "the X-Gitlab-Token does not match"))
}

/// The delivery's id, which a replay would repeat: GitHub's `X-GitHub-Delivery`, GitLab's
/// `X-Gitlab-Event-UUID` (or, without it, `Idempotency-Key`).
pub fn delivery_id(provider: HookProvider, headers: &HeaderMap) -> Result<String, ControlError> {
    let names: &[&str] = match provider {
        HookProvider::Github => &["X-GitHub-Delivery"],
        HookProvider::Gitlab => &["X-Gitlab-Event-UUID", "Idempotency-Key"],
    };
    let Some(id) = names.iter().find_map(|n| header(headers, n)) else {
        return Err(ControlError::Invalid(format!(
            "no delivery id: a {} webhook delivery carries {} (needed to refuse replays)",
            provider.title(),
            names.join(" or ")
        )));
    };
    let id = id.trim();
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ControlError::Invalid(
            "the delivery id must be 1 to 128 letters, digits, '-' or '_' (a GUID)".into(),
        ));
    }
    Ok(id.to_owned())
}

/// The event's name: `X-GitHub-Event` or `X-Gitlab-Event`.
pub fn event_name(provider: HookProvider, headers: &HeaderMap) -> Result<String, ControlError> {
    let name = match provider {
        HookProvider::Github => "X-GitHub-Event",
        HookProvider::Gitlab => "X-Gitlab-Event",
    };
    match header(headers, name).map(str::trim) {
        Some(e) if !e.is_empty() && e.len() <= 64 && !e.chars().any(char::is_control) => {
            Ok(e.to_owned())
        }
        _ => Err(ControlError::Invalid(format!(
            "no valid {name} header: the event's name (at most 64 characters) is needed"
        ))),
    }
}

/// What a GitHub event asks for.
pub fn github_intent(event: &str, body: &[u8]) -> Result<Intent, ControlError> {
    match event {
        "ping" => {
            parse::<IgnoredAny>(event, body)?;
            Ok(Intent::Ignore("ping: the webhook reaches Turnout".into()))
        }
        "push" => {
            let push: GithubPush = parse(event, body)?;
            let at = push
                .repository
                .and_then(|r| r.pushed_at)
                .and_then(|t| t.unix());
            push_intent(&push.git_ref, &push.after, push.deleted, at)
        }
        "check_suite" => {
            let e: CheckSuiteEvent = parse(event, body)?;
            let s = e.check_suite;
            ci_intent(
                &e.action,
                s.conclusion.as_deref(),
                s.head_branch.as_deref(),
                &s.head_sha,
                s.updated_at.and_then(|t| t.unix()),
            )
        }
        "workflow_run" => {
            let e: WorkflowRunEvent = parse(event, body)?;
            let run = e.workflow_run;
            // A pull request from a fork runs its workflows here too, with the fork's branch
            // name (possibly `main`) and commit: never deploy code from another repository.
            if run.head_repository.as_ref().map(|r| r.id) != Some(e.repository.id) {
                return Ok(Intent::Ignore(
                    "the run built a commit of another repository (a fork's pull request)".into(),
                ));
            }
            ci_intent(
                &e.action,
                run.conclusion.as_deref(),
                run.head_branch.as_deref(),
                &run.head_sha,
                run.updated_at.and_then(|t| t.unix()),
            )
        }
        other => Ok(Intent::Ignore(format!(
            "event '{other}' deploys nothing (Turnout acts on push, check_suite and workflow_run)"
        ))),
    }
}

/// What a GitLab event asks for.
pub fn gitlab_intent(event: &str, body: &[u8]) -> Result<Intent, ControlError> {
    match event {
        "Push Hook" => {
            let push: GitlabPush = parse(event, body)?;
            let deleted = push.after.bytes().all(|b| b == b'0');
            // A GitLab push payload carries no time of its own (only its commits').
            push_intent(&push.git_ref, &push.after, deleted, None)
        }
        "Pipeline Hook" => {
            let e: PipelineEvent = parse(event, body)?;
            let a = e.object_attributes;
            check_commit(&a.sha)?;
            if a.tag {
                return Ok(Intent::Ignore("a tag's pipeline deploys nothing".into()));
            }
            // A merge request pipeline builds the request's (or a merged result's) commit, not
            // the branch's; it may come from a fork.
            if e.merge_request.is_some() || a.source.as_deref() == Some("merge_request_event") {
                return Ok(Intent::Ignore(
                    "a merge request pipeline deploys nothing (its commit is not its branch's)"
                        .into(),
                ));
            }
            if a.status != "success" {
                return Ok(Intent::Ignore(format!(
                    "the pipeline's status is '{}', not success: nothing to deploy",
                    clip(&a.status)
                )));
            }
            git::check_ref_shape("branch", &a.git_ref)?;
            Ok(Intent::Deploy {
                branch: a.git_ref,
                commit: a.sha.to_ascii_lowercase(),
                on: DeployOn::Ci,
                at: a.finished_at.and_then(|t| t.unix()),
            })
        }
        other => Ok(Intent::Ignore(format!(
            "event '{other}' deploys nothing (Turnout acts on Push Hook and Pipeline Hook)"
        ))),
    }
}

/// A push of `git_ref` to `after`: the branch's environments that deploy on push.
fn push_intent(
    git_ref: &str,
    after: &str,
    deleted: bool,
    at: Option<i64>,
) -> Result<Intent, ControlError> {
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Intent::Ignore(format!(
            "a push of '{}', not of a branch, deploys nothing",
            clip(git_ref)
        )));
    };
    git::check_ref_shape("branch", branch)?;
    check_commit(after)?;
    if deleted {
        return Ok(Intent::BranchDeleted {
            branch: branch.to_owned(),
            at,
        });
    }
    Ok(Intent::Deploy {
        branch: branch.to_owned(),
        commit: after.to_ascii_lowercase(),
        on: DeployOn::Push,
        at,
    })
}

/// A completed CI build (check suite or workflow run): green deploys its commit.
fn ci_intent(
    action: &str,
    conclusion: Option<&str>,
    branch: Option<&str>,
    sha: &str,
    at: Option<i64>,
) -> Result<Intent, ControlError> {
    check_commit(sha)?;
    if action != "completed" {
        return Ok(Intent::Ignore(format!(
            "action '{}': only a completed build deploys",
            clip(action)
        )));
    }
    if conclusion != Some("success") {
        return Ok(Intent::Ignore(format!(
            "the build's conclusion is '{}', not success: nothing to deploy",
            clip(conclusion.unwrap_or("none"))
        )));
    }
    let Some(branch) = branch else {
        return Ok(Intent::Ignore(
            "the build names no branch (a fork's or a tag's build): nothing to deploy".into(),
        ));
    };
    git::check_ref_shape("branch", branch)?;
    Ok(Intent::Deploy {
        branch: branch.to_owned(),
        commit: sha.to_ascii_lowercase(),
        on: DeployOn::Ci,
        at,
    })
}

/// Refuse a delivery of an event older than `MAX_AGE_SECS` (it could be a replay of one no
/// longer remembered); one whose payload gives no time passes.
pub fn check_fresh(at: Option<i64>, now: i64) -> Result<(), ControlError> {
    match at {
        Some(at) if at < now - MAX_AGE_SECS => Err(ControlError::Invalid(format!(
            "stale delivery: its event happened at {}, more than {} days ago; deliveries are remembered for 7 days, so an older one could be a replay (push again or re-run the build instead)",
            format_timestamp(at),
            MAX_AGE_SECS / 86_400
        ))),
        _ => Ok(()),
    }
}

/// A payload's time: seconds since the epoch (GitHub's `pushed_at` of a push), or text.
#[derive(Deserialize)]
#[serde(untagged)]
enum When {
    Unix(i64),
    Text(String),
}

impl When {
    fn unix(&self) -> Option<i64> {
        match self {
            When::Unix(t) => Some(*t),
            When::Text(s) => unix_time(s),
        }
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-30T12:03:21Z`, with a fraction or an
/// offset) or GitLab's `2026-11-30 12:03:21 UTC` (or ` +0100`); `None` for anything else.
fn unix_time(s: &str) -> Option<i64> {
    let rfc3339 = match s.strip_suffix(" UTC") {
        Some(t) => format!("{t}Z"),
        None => s.replacen(" +", "+", 1).replacen(" -", "-", 1),
    };
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_second)
}

/// A full commit id: 40 hexadecimal digits.
pub fn check_commit(commit: &str) -> Result<(), ControlError> {
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ControlError::Invalid(format!(
            "commit {:?} is not a full commit id (40 hexadecimal digits)",
            clip(commit)
        )));
    }
    Ok(())
}

/// At most 80 characters of a payload's string, for a message.
fn clip(s: &str) -> &str {
    s.char_indices().nth(80).map_or(s, |(i, _)| &s[..i])
}

/// Parse a payload, answering 400 with serde's reason (a missing field names it).
fn parse<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|e| {
        ControlError::Invalid(format!(
            "malformed '{event}' payload: {e}; send the provider's JSON payload (content type application/json)"
        ))
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// The payload fields Turnout reads, named as the providers document them.

#[derive(Deserialize)]
struct GithubPush {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Option<PushRepository>,
}

#[derive(Deserialize)]
struct PushRepository {
    pushed_at: Option<When>,
}

#[derive(Deserialize)]
struct CheckSuiteEvent {
    action: String,
    check_suite: CheckSuite,
}

#[derive(Deserialize)]
struct CheckSuite {
    head_branch: Option<String>,
    head_sha: String,
    conclusion: Option<String>,
    updated_at: Option<When>,
}

#[derive(Deserialize)]
struct WorkflowRunEvent {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repository,
}

#[derive(Deserialize)]
struct WorkflowRun {
    head_branch: Option<String>,
    head_sha: String,
    conclusion: Option<String>,
    head_repository: Option<Repository>,
    updated_at: Option<When>,
}

#[derive(Deserialize)]
struct Repository {
    id: u64,
}

#[derive(Deserialize)]
struct GitlabPush {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
}

#[derive(Deserialize)]
struct PipelineEvent {
    object_attributes: PipelineAttributes,
    #[serde(default)]
    merge_request: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct PipelineAttributes {
    #[serde(rename = "ref")]
    git_ref: String,
    tag: bool,
    sha: String,
    status: String,
    source: Option<String>,
    finished_at: Option<When>,
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    /// GitHub's documented test vector ("Validating webhook deliveries").
    #[test]
    fn github_signatures_verify_against_the_documented_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        verify_github(secret, body, &headers(&[("x-hub-signature-256", good)])).unwrap();
        // Upper-case hex is the same signature.
        let upper = format!("sha256={}", good[7..].to_ascii_uppercase());
        verify_github(secret, body, &headers(&[("x-hub-signature-256", &upper)])).unwrap();

        let refused = |secret: &[u8], body: &[u8], sig: Option<&str>| {
            let h = sig.map_or_else(HeaderMap::new, |s| headers(&[("x-hub-signature-256", s)]));
            match verify_github(secret, body, &h) {
                Err(ControlError::Unauthorized(m)) => m,
                other => panic!("{sig:?}: {other:?}"),
            }
        };
        assert!(refused(secret, b"Hello, World?", Some(good)).contains("does not match"));
        assert!(
            refused(b"It's a Secret to Everybody!", body, Some(good)).contains("does not match")
        );
        assert!(refused(secret, body, None).contains("unsigned"));
        let sha1 = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";
        for bad in [
            sha1,
            "sha256=",
            "sha256=zz",
            &good[..good.len() - 2],
            "757107ea",
        ] {
            assert!(
                refused(secret, body, Some(bad)).contains("64 hexadecimal"),
                "{bad}"
            );
        }
        // Flipping one bit of the tag.
        let flipped = format!("{}6", &good[..good.len() - 1]);
        assert!(refused(secret, body, Some(&flipped)).contains("does not match"));
    }

    #[test]
    fn gitlab_tokens_must_match_exactly() {
        let secret = b"a-gitlab-token-of-some-length";
        verify_gitlab(
            secret,
            &headers(&[("x-gitlab-token", "a-gitlab-token-of-some-length")]),
        )
        .unwrap();
        for wrong in [
            "",
            "a-gitlab-token-of-some-lengt",
            "a-gitlab-token-of-some-length ",
            "A-gitlab-token-of-some-length",
        ] {
            let err = verify_gitlab(secret, &headers(&[("x-gitlab-token", wrong)])).unwrap_err();
            assert!(matches!(err, ControlError::Unauthorized(_)), "{wrong:?}");
            assert!(!err.to_string().contains("token-of"), "never echoed: {err}");
        }
        let err = verify_gitlab(secret, &HeaderMap::new()).unwrap_err();
        assert!(err.to_string().contains("no X-Gitlab-Token"), "{err}");
    }

    #[test]
    fn delivery_ids_are_required_and_bounded() {
        let gh = HookProvider::Github;
        let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        assert_eq!(
            delivery_id(gh, &headers(&[("x-github-delivery", id)])).unwrap(),
            id
        );
        assert!(
            delivery_id(gh, &HeaderMap::new())
                .unwrap_err()
                .to_string()
                .contains("X-GitHub-Delivery")
        );
        for bad in ["a b", "x\u{7f}", &"a".repeat(129), "../x"] {
            if let Ok(v) = HeaderValue::from_str(bad) {
                let mut h = HeaderMap::new();
                h.insert("x-github-delivery", v);
                assert!(delivery_id(gh, &h).is_err(), "{bad:?}");
            }
        }
        let gl = HookProvider::Gitlab;
        assert_eq!(
            delivery_id(gl, &headers(&[("idempotency-key", "k-1")])).unwrap(),
            "k-1",
            "newer GitLab versions' header is taken too"
        );
        assert_eq!(
            delivery_id(
                gl,
                &headers(&[("idempotency-key", "k-1"), ("x-gitlab-event-uuid", "u-1")])
            )
            .unwrap(),
            "u-1"
        );
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/it/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// When the fixtures' events happened, unless a test says otherwise.
    const AT: i64 = 1_796_126_601;

    /// The fixture with `"HEAD_SHA"`-style placeholders filled in (the event's time: `AT`).
    fn filled(name: &str, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut text = String::from_utf8(fixture(name)).unwrap();
        for (k, v) in pairs {
            text = text.replace(k, v);
        }
        text.replace("UPDATED_AT", &format_timestamp(AT))
            .replace("FINISHED_AT", "2026-12-01 12:03:21 UTC")
            .replace("PUSHED_AT", &AT.to_string())
            .into_bytes()
    }

    fn deploy(branch: &str, on: DeployOn, at: Option<i64>) -> Intent {
        Intent::Deploy {
            branch: branch.into(),
            commit: SHA.into(),
            on,
            at,
        }
    }

    #[test]
    fn event_times_are_read_in_the_providers_formats() {
        assert_eq!(format_timestamp(AT), "2026-12-01T12:03:21Z");
        for (text, want) in [
            ("2026-12-01T12:03:21Z", Some(AT)),
            ("2026-12-01T12:03:21.123Z", Some(AT)),
            ("2026-12-01T13:03:21+01:00", Some(AT)),
            ("2026-12-01T07:03:21-0500", Some(AT)),
            ("2026-12-01 12:03:21 UTC", Some(AT)),
            ("2026-12-01 13:03:21 +0100", Some(AT)),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-02-29T00:00:00Z", Some(951_782_400)),
            ("2026-12-01T12:03:21", None),
            ("2026-13-01T12:03:21Z", None),
            ("2026-12-01T12:3:21Z", None),
            ("+026-12-01T12:03:21Z", None),
            ("yesterday", None),
        ] {
            assert_eq!(unix_time(text), want, "{text}");
        }
        // Every week of eight centuries comes back as it was formatted.
        for day in (-146_097..146_097).step_by(7) {
            let t = day * 86_400 + 45_296;
            assert_eq!(
                unix_time(&format_timestamp(t)),
                Some(t),
                "{}",
                format_timestamp(t)
            );
        }
    }

    #[test]
    fn an_event_older_than_the_replay_memory_is_stale() {
        let now = AT + MAX_AGE_SECS;
        check_fresh(Some(AT), now).unwrap();
        check_fresh(None, now).unwrap();
        check_fresh(Some(now + 3600), now).unwrap();
        let err = check_fresh(Some(AT - 1), now).unwrap_err().to_string();
        assert!(
            err.contains("stale delivery") && err.contains("2026-12-01T12:03:20Z"),
            "{err}"
        );
    }

    #[test]
    fn github_events_as_github_documents_them() {
        let subs = [
            ("HEAD_SHA", SHA),
            ("CONCLUSION", "success"),
            ("ACTION", "completed"),
        ];
        let run = filled("github_workflow_run.json", &subs);
        assert_eq!(
            github_intent("workflow_run", &run).unwrap(),
            deploy("main", DeployOn::Ci, Some(AT))
        );
        let suite = filled("github_check_suite.json", &subs);
        assert_eq!(
            github_intent("check_suite", &suite).unwrap(),
            deploy("main", DeployOn::Ci, Some(AT))
        );
        let push = filled(
            "github_push.json",
            &[("HEAD_SHA", SHA), ("DELETED", "false")],
        );
        assert_eq!(
            github_intent("push", &push).unwrap(),
            deploy("main", DeployOn::Push, Some(AT))
        );

        let ignored = |event: &str, body: &[u8]| match github_intent(event, body).unwrap() {
            Intent::Ignore(why) => why,
            other => panic!("{event}: {other:?}"),
        };
        let failed = filled(
            "github_workflow_run.json",
            &[
                ("HEAD_SHA", SHA),
                ("CONCLUSION", "failure"),
                ("ACTION", "completed"),
            ],
        );
        assert!(ignored("workflow_run", &failed).contains("'failure'"));
        let requested = filled(
            "github_check_suite.json",
            &[
                ("HEAD_SHA", SHA),
                ("\"CONCLUSION\"", "null"),
                ("ACTION", "requested"),
            ],
        );
        assert!(ignored("check_suite", &requested).contains("'requested'"));
        let deleted = filled(
            "github_push.json",
            &[("HEAD_SHA", &"0".repeat(40)), ("DELETED", "true")],
        );
        assert!(matches!(
            github_intent("push", &deleted).unwrap(),
            Intent::BranchDeleted { branch, at: Some(_) } if branch == "main"
        ));
        assert!(ignored("ping", &fixture("github_ping.json")).contains("ping"));
        assert!(ignored("issues", b"{}").contains("'issues'"));

        // A fork's pull request: the run's head repository is not the repository.
        let mut fork: serde_json::Value = serde_json::from_slice(&run).unwrap();
        fork["workflow_run"]["head_repository"]["id"] = 999.into();
        assert!(ignored("workflow_run", fork.to_string().as_bytes()).contains("fork"));
    }

    #[test]
    fn gitlab_events_as_gitlab_documents_them() {
        let pipeline = filled(
            "gitlab_pipeline.json",
            &[("HEAD_SHA", SHA), ("STATUS", "success")],
        );
        assert_eq!(
            gitlab_intent("Pipeline Hook", &pipeline).unwrap(),
            deploy("main", DeployOn::Ci, Some(AT))
        );
        let push = filled("gitlab_push.json", &[("HEAD_SHA", SHA)]);
        assert_eq!(
            gitlab_intent("Push Hook", &push).unwrap(),
            deploy("main", DeployOn::Push, None)
        );
        let failed = filled(
            "gitlab_pipeline.json",
            &[("HEAD_SHA", SHA), ("STATUS", "failed")],
        );
        assert!(
            matches!(gitlab_intent("Pipeline Hook", &failed).unwrap(), Intent::Ignore(w) if w.contains("'failed'"))
        );
        let deleted = filled("gitlab_push.json", &[("HEAD_SHA", &"0".repeat(40))]);
        assert!(
            matches!(gitlab_intent("Push Hook", &deleted).unwrap(), Intent::BranchDeleted { branch, at: None } if branch == "main")
        );
        let tag = String::from_utf8(pipeline.clone())
            .unwrap()
            .replace("\"tag\": false", "\"tag\": true");
        assert!(
            matches!(gitlab_intent("Pipeline Hook", tag.as_bytes()).unwrap(), Intent::Ignore(w) if w.contains("tag"))
        );
    }

    proptest::proptest! {
        /// Any push payload's `ref` and `after`: a deploy only of a branch and a full commit
        /// (lower-cased), anything else ignored or refused as invalid, never a panic.
        #[test]
        fn any_push_deploys_only_a_branch_at_a_full_commit(
            git_ref in "(refs/(heads|tags)/)?[ -~\u{80}-\u{10ffff}]{0,20}",
            after in "[0-9a-fA-Fg ]{0,42}",
            deleted: bool,
        ) {
            let body = serde_json::json!({"ref": git_ref, "after": after, "deleted": deleted});
            match github_intent("push", body.to_string().as_bytes()) {
                Ok(Intent::Deploy { branch, commit, on, .. }) => {
                    proptest::prop_assert!(!deleted && on == DeployOn::Push);
                    proptest::prop_assert_eq!(format!("refs/heads/{branch}"), git_ref);
                    proptest::prop_assert!(git::check_ref_shape("branch", &branch).is_ok());
                    proptest::prop_assert_eq!(commit.len(), 40);
                    proptest::prop_assert_eq!(commit, after.to_ascii_lowercase());
                }
                Ok(Intent::BranchDeleted { branch, .. }) => {
                    proptest::prop_assert!(deleted);
                    proptest::prop_assert_eq!(format!("refs/heads/{branch}"), git_ref);
                    proptest::prop_assert!(git::check_ref_shape("branch", &branch).is_ok());
                }
                Ok(Intent::Ignore(why)) => proptest::prop_assert!(!why.is_empty()),
                Err(e) => proptest::prop_assert!(matches!(e, ControlError::Invalid(_)), "{e}"),
            }
        }

        /// Any bytes as any event's body: an intent or a 400, never a panic or another error.
        #[test]
        fn any_body_is_an_intent_or_invalid(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            event in "(push|check_suite|workflow_run|ping|Push Hook|Pipeline Hook|other)",
        ) {
            for result in [github_intent(&event, &body), gitlab_intent(&event, &body)] {
                if let Err(e) = result {
                    proptest::prop_assert!(matches!(e, ControlError::Invalid(_)), "{e}");
                }
            }
        }

        /// Any text is a time or not, never a panic; every formatted time reads back.
        #[test]
        fn times_parse_without_panics(text in "\\PC{0,40}", t in -10_000_000_000i64..10_000_000_000) {
            let _ = unix_time(&text);
            proptest::prop_assert_eq!(unix_time(&format_timestamp(t)), Some(t));
        }
    }

    #[test]
    fn malformed_payloads_are_refused_with_what_is_wrong() {
        let invalid = |event: &str, body: &[u8]| match github_intent(event, body) {
            Err(ControlError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(invalid("push", b"{not json").contains("malformed 'push'"));
        assert!(
            invalid("push", br#"{"ref": "refs/heads/main"}"#).contains("missing field `after`")
        );
        assert!(
            invalid("push", br#"{"ref": "refs/heads/main", "after": "abc"}"#)
                .contains("40 hexadecimal")
        );
        let bad_branch = format!(r#"{{"ref": "refs/heads/-x", "after": "{SHA}"}}"#);
        assert!(invalid("push", bad_branch.as_bytes()).contains("branch"));
        assert!(invalid("workflow_run", br#"{"action": "completed"}"#).contains("missing field"));
        assert!(matches!(
            gitlab_intent(
                "Pipeline Hook",
                br#"{"object_attributes": {"ref": "main"}}"#
            ),
            Err(ControlError::Invalid(_))
        ));
    }
}
