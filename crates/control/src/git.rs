//! Everything Turnout asks of git, through the git CLI as a child process with an argument
//! vector (never a shell). Each app has a bare mirror at `<home>/apps/<app>/repo.git`; releases
//! are detached worktrees of it. Branches pushed to Turnout (`git push` to the app's git URL)
//! live in the mirror's `push` namespace, `refs/namespaces/push/refs/heads/*`, which the fetch of
//! the app's repository (`+refs/heads/*:refs/heads/*`, pruned) never touches; a branch that was
//! pushed resolves to what was pushed. User input reaches git only as separate arguments after
//! `--end-of-options` or `--`, so a branch named `$(rm -rf ~)` is just a ref git cannot find.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use tokio::process::Command;

use crate::error::ControlError;

const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);

/// The namespace of the mirror that pushes to Turnout write (`GIT_NAMESPACE`).
const PUSH_NAMESPACE: &str = "push";
/// Where pushed branches are, seen from the mirror itself.
const PUSHED_HEADS: &str = "refs/namespaces/push/refs/heads/";

/// Where an app's code comes from, already checked for shape.
#[derive(Debug, Clone)]
pub struct Source {
    pub repo: String,
    /// The https token's value (read from the daemon's environment), never stored or printed.
    pub token: Option<String>,
}

impl Source {
    /// The repository as it may be shown: any password in a URL is replaced.
    pub fn display(&self) -> String {
        redact_url(&self.repo)
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        if let Some(t) = &self.token {
            out = out.replace(t.as_str(), "***");
            out = out.replace(&basic_credentials(t), "***");
        }
        if out.contains(&self.repo) {
            out = out.replace(&self.repo, &self.display());
        }
        out
    }
}

/// Check that `repo` is an absolute local path or a git URL of a known scheme. Relative paths are
/// the CLI's to resolve; the daemon's working directory means nothing to the user.
pub fn check_repo(repo: &str) -> Result<(), ControlError> {
    let bad = |why: &str| {
        Err(ControlError::Invalid(format!(
            "invalid repository '{}': {why}",
            redact_url(repo)
        )))
    };
    if repo.is_empty() || repo.starts_with('-') || repo.chars().any(char::is_control) {
        return bad(
            "give an absolute path to a git repository or a git URL (https://, ssh://, git://, file://)",
        );
    }
    if let Some((scheme, _)) = repo.split_once("://") {
        return match scheme {
            "http" | "https" | "ssh" | "git" | "file" => Ok(()),
            _ => bad("supported URL schemes are https, http, ssh, git and file"),
        };
    }
    if repo.starts_with('/') {
        return Ok(());
    }
    // scp-like ssh syntax: [user@]host:path
    // (`transport::address` is git's remote-helper syntax, e.g. `ext::`, and is refused.)
    if let Some((host, path)) = repo.split_once(':')
        && !host.contains('/')
        && !host.is_empty()
        && !path.starts_with(':')
    {
        return Ok(());
    }
    bad("a local path must be absolute (the CLI makes relative paths absolute for you)")
}

/// Check a branch name against git's own rules (`git check-ref-format --branch`).
pub async fn check_branch(branch: &str) -> Result<(), ControlError> {
    check_ref_shape("branch", branch)?;
    let out = git(None)
        .args(["check-ref-format", "--branch"])
        .arg(branch)
        .output()
        .await
        .map_err(spawn_error)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "invalid branch name '{branch}': git does not accept it as a branch (see `git help check-ref-format`)"
        )))
    }
}

/// Cheap shape check for anything the user passes as a ref.
pub fn check_ref_shape(what: &str, r: &str) -> Result<(), ControlError> {
    if r.is_empty()
        || r.len() > 255
        || r.starts_with('-')
        || r.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ControlError::Invalid(format!(
            "invalid {what} '{}': a git {what} cannot be empty, start with '-', or contain spaces or control characters",
            r.escape_debug()
        )));
    }
    Ok(())
}

/// The branches the repository has, straight from the remote (used to check an environment's
/// branch before it is created, and to say which branches exist when it is missing).
pub async fn remote_branches(src: &Source) -> Result<Vec<String>, ControlError> {
    let out = run(
        src,
        None,
        &["ls-remote", "--heads", "--", &src.repo],
        FETCH_TIMEOUT,
    )
    .await
    .map_err(|e| match e {
        ControlError::Step { message, .. } => ControlError::Invalid(format!(
            "cannot read repository '{}': {message}; check the path or URL (and --token-env for a private https repository)",
            src.display()
        )),
        other => other,
    })?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once("\trefs/heads/").map(|(_, b)| b.to_owned()))
        .collect())
}

/// Create the app's (empty) bare mirror unless it exists.
pub async fn init_mirror(src: &Source, mirror: &Path) -> Result<(), ControlError> {
    if !mirror.join("HEAD").exists() {
        tokio::fs::create_dir_all(mirror)
            .await
            .map_err(|e| ControlError::internal(format!("create {}: {e}", mirror.display())))?;
        run(
            src,
            Some(mirror),
            &["init", "--quiet", "--bare"],
            LOCAL_TIMEOUT,
        )
        .await?;
    }
    Ok(())
}

/// Bring the app's mirror up to date with every branch and tag of the repository.
pub async fn fetch(src: &Source, mirror: &Path) -> Result<(), ControlError> {
    init_mirror(src, mirror).await?;
    run(
        src,
        Some(mirror),
        &[
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "--no-write-fetch-head",
            "--end-of-options",
            &src.repo,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        FETCH_TIMEOUT,
    )
    .await
    .map(drop)
}

/// The commit a branch (when `branch` is true) or any ref (branch, tag, commit) names. A branch
/// pushed to Turnout is what was pushed, before the repository's branch of the same name.
pub async fn resolve(
    src: &Source,
    mirror: &Path,
    wanted: &str,
    branch: bool,
) -> Result<String, ControlError> {
    let candidates: Vec<String> = if branch {
        vec![
            format!("{PUSHED_HEADS}{wanted}"),
            format!("refs/heads/{wanted}"),
        ]
    } else {
        vec![
            format!("{PUSHED_HEADS}{wanted}"),
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
            wanted.to_owned(),
        ]
    };
    for c in candidates {
        let spec = format!("{c}^{{commit}}");
        let out = git(Some(mirror))
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(&spec)
            .output()
            .await
            .map_err(spawn_error)?;
        if out.status.success() {
            let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(sha);
            }
        }
    }
    let what = if branch { "branch" } else { "ref" };
    Err(ControlError::Step {
        step: "fetch",
        message: format!(
            "{what} '{}' does not exist in {}; give a branch, tag or commit that does",
            wanted.escape_debug(),
            src.display()
        ),
        log_tail: vec![],
    })
}

/// The branches pushed to Turnout and their commits, by name (an empty map before the mirror
/// exists).
pub async fn pushed_branches(mirror: &Path) -> Result<BTreeMap<String, String>, ControlError> {
    if !mirror.join("HEAD").exists() {
        return Ok(BTreeMap::new());
    }
    let out = git(Some(mirror))
        .args([
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            PUSHED_HEADS,
        ])
        .output()
        .await
        .map_err(spawn_error)?;
    if !out.status.success() {
        return Err(ControlError::internal(format!(
            "git for-each-ref in {}: {}",
            mirror.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (sha, name) = l.split_once(' ')?;
            Some((name.strip_prefix(PUSHED_HEADS)?.to_owned(), sha.to_owned()))
        })
        .collect())
}

/// Keep the push namespace's HEAD on a pushed branch, so a clone from Turnout checks one out:
/// it stays where it is while that branch exists, else goes to `main`, `master` or the first
/// pushed branch, and is removed when nothing is pushed.
pub async fn point_pushed_head(
    mirror: &Path,
    branches: &BTreeMap<String, String>,
) -> Result<(), ControlError> {
    const HEAD: &str = "refs/namespaces/push/HEAD";
    let now = git(Some(mirror))
        .args(["symbolic-ref", "--quiet", HEAD])
        .output()
        .await
        .map_err(spawn_error)?;
    let current = String::from_utf8_lossy(&now.stdout).trim().to_owned();
    if current
        .strip_prefix(PUSHED_HEADS)
        .is_some_and(|b| branches.contains_key(b))
    {
        return Ok(());
    }
    let pick = ["main", "master"]
        .into_iter()
        .find(|b| branches.contains_key(*b))
        .or_else(|| branches.keys().next().map(String::as_str));
    let mut cmd = git(Some(mirror));
    match pick {
        Some(branch) => cmd
            .args(["symbolic-ref", HEAD])
            .arg(format!("{PUSHED_HEADS}{branch}")),
        None if now.status.success() => cmd.args(["symbolic-ref", "--delete", HEAD]),
        None => return Ok(()),
    };
    let out = cmd.output().await.map_err(spawn_error)?;
    if !out.status.success() {
        return Err(ControlError::internal(format!(
            "git symbolic-ref {HEAD} in {}: {}",
            mirror.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Remove the quarantine directories (`objects/tmp_objdir-incoming-*`) a killed receive-pack
/// leaves behind. Only while no receive-pack runs on the mirror (the app's push lock is held).
pub async fn remove_quarantines(mirror: &Path) {
    let Ok(mut dir) = tokio::fs::read_dir(mirror.join("objects")).await else {
        return;
    };
    while let Ok(Some(entry)) = dir.next_entry().await {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("tmp_objdir-incoming-")
        {
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

/// The two services of git's smart HTTP protocol, served from the mirror's push namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Fetch, clone, ls-remote.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    /// The name clients use (`?service=git-receive-pack`, `POST …/git-receive-pack`).
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        [Service::UploadPack, Service::ReceivePack]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// `git upload-pack|receive-pack --stateless-rpc [--advertise-refs] MIRROR` in the push
/// namespace, stdin and stdout piped, killed when dropped. `protocol` is the client's
/// `Git-Protocol` header (e.g. `version=2`), passed only when it has that shape. No hook runs.
pub fn service(
    mirror: &Path,
    service: Service,
    advertise: bool,
    protocol: Option<&str>,
) -> Command {
    let mut cmd = git(None);
    cmd.arg(match service {
        Service::UploadPack => "upload-pack",
        Service::ReceivePack => "receive-pack",
    })
    .arg("--stateless-rpc");
    if advertise {
        cmd.arg("--advertise-refs");
    }
    cmd.arg(mirror)
        .env("GIT_NAMESPACE", PUSH_NAMESPACE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = protocol.filter(|p| {
        p.len() <= 100
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b))
    }) {
        cmd.env("GIT_PROTOCOL", p);
    }
    cmd
}

/// The text of `path` at `commit`, or None when the commit has no such file.
pub async fn read_file(
    mirror: &Path,
    commit: &str,
    path: &str,
) -> Result<Option<String>, ControlError> {
    let out = git(Some(mirror))
        .args(["cat-file", "-e"])
        .arg(format!("{commit}:{path}"))
        .output()
        .await
        .map_err(spawn_error)?;
    if !out.status.success() {
        return Ok(None);
    }
    let out = git(Some(mirror))
        .args(["cat-file", "blob"])
        .arg(format!("{commit}:{path}"))
        .output()
        .await
        .map_err(spawn_error)?;
    if !out.status.success() {
        return Err(ControlError::internal(format!(
            "git cat-file {commit}:{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout)
        .map(Some)
        .map_err(|_| ControlError::Invalid(format!("{path} at {commit} is not UTF-8 text")))
}

/// Check `commit` out into `dir` as a detached worktree of the mirror.
pub async fn checkout(
    src: &Source,
    mirror: &Path,
    commit: &str,
    dir: &Path,
) -> Result<(), ControlError> {
    let dir = dir
        .to_str()
        .ok_or_else(|| ControlError::internal("release path is not UTF-8"))?;
    run(
        src,
        Some(mirror),
        &[
            "worktree", "add", "--quiet", "--detach", "--force", "--", dir, commit,
        ],
        LOCAL_TIMEOUT,
    )
    .await
    .map(drop)
}

/// Forget worktrees whose directories are gone (after a release or environment is deleted).
/// The commits reachable from `to` but not from `from` (both full commit ids the mirror has),
/// newest first, at most `limit`; and whether there were more.
pub async fn log_between(
    mirror: &Path,
    from: &str,
    to: &str,
    limit: usize,
) -> Result<(Vec<turnout_model::CommitInfo>, bool), ControlError> {
    let out = git(Some(mirror))
        .args(["log", "--format=%H%x1f%an%x1f%at%x1f%s"])
        .arg(format!("--max-count={}", limit.saturating_add(1)))
        .arg(format!("{from}..{to}"))
        .arg("--")
        .output()
        .await
        .map_err(spawn_error)?;
    if !out.status.success() {
        return Err(ControlError::internal(format!(
            "git log {}..{}: {}",
            &from[..12.min(from.len())],
            &to[..12.min(to.len())],
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut commits: Vec<turnout_model::CommitInfo> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(4, '\x1f');
            Some(turnout_model::CommitInfo {
                commit: f.next()?.to_owned(),
                author: f.next()?.to_owned(),
                date: f.next()?.parse().ok()?,
                subject: f.next().unwrap_or_default().to_owned(),
            })
        })
        .collect();
    let more = commits.len() > limit;
    commits.truncate(limit);
    Ok((commits, more))
}

pub async fn prune_worktrees(mirror: &Path) {
    if mirror.exists() {
        let _ = git(Some(mirror)).args(["worktree", "prune"]).output().await;
    }
}

fn git(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(dir) = dir {
        cmd.arg("--git-dir").arg(dir);
    }
    // Never prompt (a deploy would hang) and never run a transport that executes commands.
    cmd.args([
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "core.hooksPath=/dev/null",
    ])
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    .env_remove("GIT_ASKPASS")
    .env_remove("SSH_ASKPASS")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    cmd
}

fn basic_credentials(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
}

/// Run git with the source's credentials; on failure the error carries git's (scrubbed) stderr.
async fn run(
    src: &Source,
    dir: Option<&Path>,
    args: &[&str],
    timeout: Duration,
) -> Result<String, ControlError> {
    let mut cmd = git(dir);
    if let Some(token) = &src.token {
        // Through the environment, not argv: argv is visible to every user in `ps`.
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {}", basic_credentials(token)),
            );
    }
    cmd.args(args);
    let step = if args[0] == "worktree" {
        "checkout"
    } else {
        "fetch"
    };
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => {
            return Err(ControlError::Step {
                step,
                message: format!(
                    "git {} did not finish within {}s",
                    args[0],
                    timeout.as_secs()
                ),
                log_tail: vec![],
            });
        }
        Ok(r) => r.map_err(spawn_error)?,
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = src.scrub(&String::from_utf8_lossy(&out.stderr));
    let log_tail: Vec<String> = stderr.lines().map(str::to_owned).collect();
    let why = failure_summary(&stderr).unwrap_or_else(|| format!("git exited with {}", out.status));
    Err(ControlError::Step {
        step,
        message: format!("git {} {}: {why}", args[0], src.display()),
        log_tail,
    })
}

/// What went wrong, from git's stderr: its `fatal:` and `error:` lines, which name the cause
/// (the last line is often advice such as "…and the repository exists."); else the last line.
fn failure_summary(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let fatal: Vec<&str> = lines
        .clone()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .collect();
    if fatal.is_empty() {
        lines.next_back().map(str::to_owned)
    } else {
        Some(fatal.join(" "))
    }
}

fn spawn_error(e: std::io::Error) -> ControlError {
    ControlError::internal(format!(
        "cannot run git (is it installed and on PATH?): {e}"
    ))
}

/// `https://user:secret@host/x` -> `https://user:***@host/x`.
pub(crate) fn redact_url(repo: &str) -> String {
    if let Some((scheme, rest)) = repo.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && !userinfo.contains('/')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    repo.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_must_be_absolute_paths_or_known_urls() {
        for ok in [
            "/srv/git/shop",
            "https://example.com/shop.git",
            "git@example.com:team/shop.git",
            "file:///tmp/x",
        ] {
            check_repo(ok).unwrap();
        }
        for bad in [
            "relative/path",
            "-uxcmd",
            "ext::sh -c touch% /tmp/pwned",
            "ftp://x/y",
            "",
        ] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_tokens_are_redacted() {
        assert_eq!(
            redact_url("https://bob:hunter2@example.com/x.git"),
            "https://bob:***@example.com/x.git"
        );
        let src = Source {
            repo: "https://example.com/x.git".into(),
            token: Some("s3cr3t".into()),
        };
        let scrubbed = src.scrub(&format!(
            "auth {} failed for s3cr3t",
            basic_credentials("s3cr3t")
        ));
        assert!(!scrubbed.contains("s3cr3t") && !scrubbed.contains(&basic_credentials("s3cr3t")));
    }

    #[test]
    fn failures_are_summed_up_by_their_fatal_lines() {
        let stderr = "fatal: '/does/not/exist' does not appear to be a git repository\n\
                      fatal: Could not read from remote repository.\n\n\
                      Please make sure you have the correct access rights\n\
                      and the repository exists.\n";
        assert_eq!(
            failure_summary(stderr).unwrap(),
            "fatal: '/does/not/exist' does not appear to be a git repository \
             fatal: Could not read from remote repository."
        );
        assert_eq!(
            failure_summary("hint: x\nerror: pathspec 'y' did not match\nhint: z\n").unwrap(),
            "error: pathspec 'y' did not match"
        );
        assert_eq!(
            failure_summary("warning: w\nsomething odd\n\n").unwrap(),
            "something odd"
        );
        assert_eq!(failure_summary(" \n"), None);
    }

    #[test]
    fn ref_shapes() {
        check_ref_shape("ref", "feature/x").unwrap();
        check_ref_shape("ref", "$(touch${IFS}/tmp/x)").unwrap(); // passed to git as data, not code
        assert!(check_ref_shape("ref", "--upload-pack=evil").is_err());
        assert!(check_ref_shape("ref", "a b").is_err());
    }
}
