//! `turnout run`: a command in an environment's live release, with its instance's environment,
//! user, network and limits, its streams and status passed through, on pipes or a terminal.
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use turnout_client::{Client, RunInput, RunOutput};
use turnout_model::endpoint as ep;
use turnout_model::run::{ClientFrame, RunExit, ServerFrame, TermSize};
use turnout_model::{EnvRef, RunRequest};

use crate::support::{BIN, Daemon, Repo, is_root};

/// `turnout run ARGS…` as the home's owner (or with `token`), `input` on its standard input.
pub(crate) fn run_cli(d: &Daemon, token: Option<&str>, args: &[&str], input: &[u8]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("--api").arg(&d.api);
    match token {
        Some(token) => command
            .env("TURNOUT_TOKEN", token)
            .env_remove("TURNOUT_HOME"),
        None => command
            .arg("--home")
            .arg(d.home.path())
            .env_remove("TURNOUT_TOKEN"),
    };
    let mut child = command
        .arg("run")
        .args(args)
        .current_dir(d.cwd.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written beside the reads, so a command echoing a large input cannot deadlock the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon with app `shop` from a fresh repository and these environments deployed.
pub(crate) fn deployed(envs: &[(&str, &str)]) -> (Daemon, Repo) {
    let repo = Repo::new("run");
    let d = Daemon::start();
    let envs: Vec<(&str, &str, &str)> = envs.iter().map(|(e, t)| (*e, "main", *t)).collect();
    d.create("shop", repo.path(), &envs);
    for (env, _, _) in &envs {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }
    (d, repo)
}

/// A run started through the client library, as the owner.
pub(crate) async fn session(
    d: &Daemon,
    argv: &[&str],
    tty: Option<TermSize>,
) -> (RunInput, RunOutput) {
    let client = Client::new(&d.api, Some(&d.admin_token())).unwrap();
    client
        .run(&ep::Run {
            target: "shop/dev".parse::<EnvRef>().unwrap(),
            body: RunRequest {
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                tty,
                port: false,
            },
        })
        .await
        .unwrap()
}

/// Reads output into `seen` until it contains `want` (or the run ends: then its exit).
pub(crate) async fn read_until(
    output: &mut RunOutput,
    seen: &mut Vec<u8>,
    want: &str,
) -> Option<RunExit> {
    let read = async {
        while !text(seen).contains(want) {
            match output.next().await.unwrap() {
                Some(ServerFrame::Stdout(data) | ServerFrame::Stderr(data)) => {
                    seen.extend(data);
                }
                Some(ServerFrame::Exit(exit)) => return Some(exit),
                Some(ServerFrame::Error(e)) => panic!("run failed: {e}"),
                None => panic!("the run's connection closed; so far: {}", text(seen)),
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} within 30s; so far: {}", text(seen)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_status_and_input_pass_through_byte_exact() {
    let (d, _repo) = deployed(&[("dev", "development")]);

    let out = run_cli(
        &d,
        None,
        &[
            "shop/dev",
            "--",
            "sh",
            "-c",
            "printf out; printf err >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("out".into(), "err".into())
    );

    // Every byte value, then some MiB: out through `cat` exactly as in.
    let mut blob: Vec<u8> = (0..=255).collect();
    blob.extend((0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let out = run_cli(&d, None, &["shop/dev", "--", "cat"], &blob);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout == blob,
        "cat gave {} bytes back, not the {} sent",
        out.stdout.len(),
        blob.len()
    );
    let out = run_cli(&d, None, &["shop/dev", "--", "wc", "-c"], &blob);
    assert_eq!(text(&out.stdout).trim(), blob.len().to_string());
    // The same on standard error, kept apart from standard output.
    let out = run_cli(
        &d,
        None,
        &["shop/dev", "--", "sh", "-c", "cat >&2; echo done"],
        &blob[..256],
    );
    assert!(out.stderr == blob[..256], "{:?}", out.stderr);
    assert_eq!(text(&out.stdout), "done\n");

    // Killed by a signal: 128 + the signal, as a shell reports it.
    let out = run_cli(
        &d,
        None,
        &["shop/dev", "--", "sh", "-c", "kill -TERM $$"],
        b"",
    );
    assert_eq!(out.status.code(), Some(143));
    let out = run_cli(&d, None, &["shop/dev", "--", "no-such-program-here"], b"");
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("no-such-program-here"),
        "{}",
        text(&out.stderr)
    );

    // PORT only when asked, free in the environment's network.
    let out = run_cli(
        &d,
        None,
        &["shop/dev", "--", "sh", "-c", "echo ${PORT-none}"],
        b"",
    );
    assert_eq!(text(&out.stdout), "none\n");
    let out = run_cli(
        &d,
        None,
        &["--port", "shop/dev", "--", "sh", "-c", "echo $PORT"],
        b"",
    );
    assert!(
        text(&out.stdout).trim().parse::<u16>().is_ok_and(|p| p > 0),
        "{}",
        text(&out.stdout)
    );

    // Bad input: each refused with what is wrong and how to fix it.
    let e = text(&run_cli(&d, None, &["Shop!/dev", "--", "ls"], b"").stderr);
    assert!(e.contains("Shop!"), "{e}");
    let e = text(&run_cli(&d, None, &["shop/dev", "--", ""], b"").stderr);
    assert!(e.contains("no command"), "{e}");
    let http = reqwest::Client::new();
    let token = d.admin_token();
    for (body, wanted) in [
        (json!({"argv": []}), "no command"),
        (json!({"argv": ["echo", "a\u{0}b"]}), "NUL"),
        (
            json!({"argv": ["echo", "x".repeat(200 * 1024)]}),
            "at most 131072",
        ),
        (json!({"argv": vec!["x"; 5000]}), "too many"),
        (
            json!({"argv": ["sh"], "tty": {"cols": 0, "rows": 24}}),
            "out of range",
        ),
        (
            json!({"argv": ["sh"], "tty": {"cols": 80, "rows": 5000}}),
            "out of range",
        ),
        (json!({"argv": ["ls"]}), "Upgrade: turnout-run/1"),
    ] {
        let resp = http
            .post(format!("{}/api/v1/apps/shop/envs/dev/run", d.api))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let answer = resp.text().await.unwrap();
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(wanted), "{wanted}: {answer}");
    }
    d.ok(&[
        "env",
        "create",
        "shop/fresh",
        "--branch",
        "main",
        "--tier",
        "development",
    ]);
    let e = text(&run_cli(&d, None, &["shop/fresh", "--", "ls"], b"").stderr);
    assert!(
        e.contains("no live release") && e.contains("turnout deploy shop/fresh"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_of_its_own_answers_tty_resizes_and_passes_ctrl_c() {
    let (d, _repo) = deployed(&[("dev", "development")]);

    // `-t` with no terminal here still gives the command one.
    let out = run_cli(&d, None, &["-t", "shop/dev", "--", "tty"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("/dev/pts/"),
        "{}",
        text(&out.stdout)
    );

    let size = TermSize { cols: 80, rows: 24 };
    let (mut input, mut output) = session(
        &d,
        &[
            "sh",
            "-c",
            "tty; stty size; echo waiting; read x; stty size; exit 4",
        ],
        Some(size),
    )
    .await;
    let mut seen = Vec::new();
    assert_eq!(read_until(&mut output, &mut seen, "waiting").await, None);
    assert!(
        text(&seen).contains("/dev/pts/") && text(&seen).contains("24 80"),
        "{}",
        text(&seen)
    );
    input
        .send(&ClientFrame::Resize(TermSize {
            cols: 132,
            rows: 50,
        }))
        .await
        .unwrap();
    input
        .send(&ClientFrame::Stdin(b"go\n".to_vec()))
        .await
        .unwrap();
    let exit = read_until(&mut output, &mut seen, "50 132").await;
    let exit = match exit {
        Some(exit) => exit,
        None => read_until(&mut output, &mut seen, "never printed")
            .await
            .unwrap(),
    };
    assert_eq!(exit, RunExit::Code(4), "{}", text(&seen));

    // Ctrl-C is a byte on the terminal; its line discipline sends SIGINT to the command.
    let (mut input, mut output) = session(
        &d,
        &[
            "sh",
            "-c",
            "trap 'echo got-INT; exit 9' INT; echo ready; while :; do sleep 1; done",
        ],
        Some(size),
    )
    .await;
    let mut seen = Vec::new();
    read_until(&mut output, &mut seen, "ready").await;
    input.send(&ClientFrame::Stdin(vec![0x03])).await.unwrap();
    let exit = read_until(&mut output, &mut seen, "got-INT").await;
    let exit = match exit {
        Some(exit) => exit,
        None => read_until(&mut output, &mut seen, "never printed")
            .await
            .unwrap(),
    };
    assert_eq!(exit, RunExit::Code(9), "{}", text(&seen));

    // End of input on a terminal is its end-of-file character.
    let (mut input, mut output) =
        session(&d, &["sh", "-c", "cat; echo cat-ended"], Some(size)).await;
    input
        .send(&ClientFrame::Stdin(b"abc\n".to_vec()))
        .await
        .unwrap();
    input.send(&ClientFrame::StdinEof).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut output, &mut seen, "cat-ended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sees_its_own_environment_and_no_other() {
    let (d, _repo) = deployed(&[("dev", "development"), ("qa", "qa")]);
    d.ok(&["config", "set", "shop/dev", "GREETING=hello-dev"]);
    d.ok(&["config", "set", "shop/qa", "GREETING=hello-qa"]);
    let script = "echo \"$DATABASE_URL|$TURNOUT_STORAGE_DIR|$GREETING|$TURNOUT_ENV|$HOME\"; id -u; readlink /proc/self/ns/net";
    let mut seen = Vec::new();
    for env in ["dev", "qa"] {
        let out = run_cli(
            &d,
            None,
            &[&format!("shop/{env}"), "--", "sh", "-c", script],
            b"",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        let vars: Vec<&str> = lines[0].split('|').collect();
        // What the instance itself was given.
        let host = format!("{env}.shop.localhost");
        for (i, name) in ["DATABASE_URL", "TURNOUT_STORAGE_DIR"].iter().enumerate() {
            let (_, instance) = d.get(&host, &format!("/env/{name}")).await;
            assert_eq!(vars[i], instance.trim(), "{env} {name}");
        }
        assert_eq!(vars[2], format!("hello-{env}"));
        assert_eq!(vars[3], env);
        let info = d.json(&["env", "show", &format!("shop/{env}")]);
        if is_root() {
            assert_eq!(lines[1], info["isolation"]["uid"].to_string(), "{info}");
            let netns = info["isolation"]["network"].as_str().unwrap();
            let inode = std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(format!("/run/netns/{netns}")).unwrap(),
            );
            assert_eq!(lines[2], format!("net:[{inode}]"), "{env}");
        }
        seen.push(lines[0].to_owned());
    }
    assert_ne!(seen[0], seen[1]);
    // The data is the environment's own: a file written in dev's storage is not in qa's.
    let out = run_cli(
        &d,
        None,
        &[
            "shop/dev",
            "--",
            "sh",
            "-c",
            "echo mine > \"$TURNOUT_STORAGE_DIR/run.txt\"",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_cli(
        &d,
        None,
        &[
            "shop/qa",
            "--",
            "sh",
            "-c",
            "cat \"$TURNOUT_STORAGE_DIR/run.txt\"",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run_cli(
        &d,
        None,
        &[
            "shop/dev",
            "--",
            "sh",
            "-c",
            "cat \"$TURNOUT_STORAGE_DIR/run.txt\"",
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "mine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_deploy_may_run_and_every_run_is_audited() {
    let (d, _repo) = deployed(&[("dev", "development"), ("prod", "production")]);
    let mut tokens = Vec::new();
    for (name, role) in [("vera", "viewer"), ("dev1", "developer")] {
        d.ok(&["user", "add", name]);
        d.ok(&["access", "grant", name, "shop", role]);
        let token = d.json(&["token", "create", "--user", name])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        tokens.push(token);
    }
    let (viewer, developer) = (tokens[0].as_str(), tokens[1].as_str());
    let echo = ["--", "echo", "it's", "me"];
    let as_user = |token: &str, env: &str| {
        let mut args = vec![env];
        args.extend(echo);
        run_cli(&d, Some(token), &args, b"")
    };
    let out = as_user(viewer, "shop/dev");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );
    let out = as_user(developer, "shop/dev");
    assert_eq!(text(&out.stdout), "it's me\n", "{}", text(&out.stderr));
    // Production: owners deploy there, so only they run there.
    let out = as_user(developer, "shop/prod");
    assert!(
        text(&out.stderr).contains("forbidden"),
        "{}",
        text(&out.stderr)
    );
    // An override of deploy moves run with it; one of run itself wins over it.
    d.ok(&[
        "access",
        "set-policy",
        "shop",
        "deploy",
        "production",
        "developer",
    ]);
    assert!(as_user(developer, "shop/prod").status.success());
    d.ok(&["access", "set-policy", "shop", "run", "production", "owner"]);
    assert!(!as_user(developer, "shop/prod").status.success());
    assert!(
        run_cli(&d, None, &["shop/prod", "--", "true"], b"")
            .status
            .success()
    );

    let audit: Value = d.json(&["audit", "--app", "shop"]);
    let runs: Vec<(&str, &str, &str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "env.run")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("");
            (s("actor"), s("env"), s("to"), s("result"))
        })
        .collect();
    assert!(
        runs.contains(&("dev1", "dev", "echo 'it'\\''s' me", "ok")),
        "{runs:?}"
    );
    assert!(runs.contains(&("admin", "prod", "true", "ok")), "{runs:?}");
    assert!(
        runs.iter().any(|(who, env, _, result)| *who == "vera"
            && *env == "dev"
            && result.starts_with("denied")),
        "{runs:?}"
    );
    assert!(
        !audit.to_string().contains("it's me"),
        "a run's output reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_root_a_run_is_in_its_environments_sandbox() {
    const NOBODY: u32 = 65534;
    if !is_root() || turnout_supervisor::Sandbox::find_bwrap().is_err() {
        eprintln!("skipped: needs root (to start the daemon as `nobody`) and a usable bwrap");
        return;
    }
    let repo = Repo::new("sandboxed");
    crate::support::chown_tree(repo.path(), NOBODY);
    let d = Daemon::start_as(NOBODY);
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["deploy", "shop/dev"]);
    let home = d.home.path().display().to_string();
    let script = format!("ls {home}; cat {home}/admin.token || echo no-token; echo $$");
    let out = run_cli(&d, None, &["shop/dev", "--", "sh", "-c", &script], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines[..2], ["apps", "no-token"], "{lines:?}");
    // Its own process namespace: the shell is one of the sandbox's first processes.
    assert!(lines[2].parse::<u32>().unwrap() < 10, "{lines:?}");
    let out = run_cli(
        &d,
        None,
        &["-t", "shop/dev", "--", "sh", "-c", "tty; stty size"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // bwrap shows the terminal it was started on as the sandbox's /dev/console.
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("/dev/console") && shown.contains("24 80"),
        "{shown}"
    );
}

/// Drives `sys.argv[1:]` (a shell line running `turnout run -t … -- bash`) on a terminal of
/// its own, as a person would: types, presses Ctrl-C, resizes the window, exits.
const AT_A_TERMINAL: &str = r#"
import fcntl, os, pty, select, signal, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv("/bin/sh", ["sh", "-c", sys.argv[1]])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
seen = b""
def expect(want):
    global seen
    end = time.time() + 20
    while want not in seen:
        if time.time() > end:
            sys.exit("no %r within 20s; seen: %r" % (want, seen))
        if select.select([fd], [], [], 0.1)[0]:
            seen += os.read(fd, 65536)
expect(b"$ ")
os.write(fd, b"stty size; tty\r")
expect(b"40 120\r\n/dev/pts/")
os.write(fd, b"sleep 30\r")
time.sleep(0.3)
os.write(fd, b"\x03")
os.write(fd, b"echo after-int $?\r")
expect(b"after-int 130")
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
os.kill(pid, signal.SIGWINCH)
time.sleep(0.3)
os.write(fd, b"stty size\r")
expect(b"50 132")
os.write(fd, b"exit 7\r")
expect(b"status=7")
expect(b"restored=yes")
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_shell_at_a_local_terminal() {
    let (d, _repo) = deployed(&[("dev", "development")]);
    let cli = format!(
        "{BIN} --api {} --home {} run -t shop/dev -- bash --norc -i",
        d.api,
        d.home.path().display()
    );
    // The terminal's settings before and after: raw mode is undone when the run ends.
    let line = format!(
        "before=$(stty -g); {cli}; echo status=$?; [ \"$(stty -g)\" = \"$before\" ] && echo restored=yes"
    );
    let out = Command::new("python3")
        .args(["-c", AT_A_TERMINAL, &line])
        .env_remove("TURNOUT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "ok",
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
