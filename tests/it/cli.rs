//! The CLI against a fake API that speaks the job contract (real processes, real HTTP on a
//! std listener): where the home's token may go, bounded numbers, jobs watched over
//! server-sent events, Ctrl-C while watching, `--detach`, approvals and error codes.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnout_model::{JobEvent, JobInfo, JobKind, JobState, JobStep, StepState};

use crate::support::BIN;

/// One request the fake API received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

type Handler = dyn Fn(&Seen, &mut TcpStream) + Send + Sync;

/// An HTTP/1.1 listener on a free port that records every request and lets `handler` answer.
struct FakeApi {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    fn start(handler: impl Fn(&Seen, &mut TcpStream) + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (handler, record) = (handler.clone(), record.clone());
                std::thread::spawn(move || {
                    if let Some(req) = read_request(&mut stream) {
                        record.lock().unwrap().push(req.clone());
                        handler(&req, &mut stream);
                    }
                });
            }
        });
        FakeApi { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let (mut authorization, mut length) = (None, 0usize);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_owned()),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn error(stream: &mut TcpStream, status: u16, code: &str, message: &str) {
    let body = serde_json::json!({ "error": message, "code": code }).to_string();
    respond(stream, status, &body);
}

/// The head of an event stream; the caller writes events and closes.
fn start_events(stream: &mut TcpStream) {
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    );
}

/// `event` as SSE, written in small pieces (every boundary lands mid-line somewhere).
fn send_event(stream: &mut TcpStream, event: &JobEvent) {
    let kind = match event {
        JobEvent::Step { .. } => "step",
        JobEvent::Output { .. } => "output",
        JobEvent::End { .. } => "end",
    };
    let text = format!(
        ": a comment\nevent: {kind}\ndata: {}\n\n",
        serde_json::to_string(event).unwrap()
    );
    for piece in text.as_bytes().chunks(7) {
        stream.write_all(piece).unwrap();
        stream.flush().unwrap();
    }
}

fn step(name: &str, state: StepState, detail: &str) -> JobStep {
    JobStep {
        name: name.into(),
        state,
        detail: detail.into(),
        progress: None,
        started_at: None,
        finished_at: None,
        duration_ms: None,
    }
}

fn job(id: i64, state: JobState, steps: Vec<JobStep>) -> JobInfo {
    JobInfo {
        id,
        kind: JobKind::Deploy,
        app: "shop".parse().unwrap(),
        env: "staging".parse().unwrap(),
        actor: "admin".into(),
        state,
        request: Some("main".into()),
        steps,
        release: Some(3),
        error: None,
        log_tail: Vec::new(),
        url: Some("http://staging.shop.localhost:8080".into()),
        created_at: "2026-11-24T15:50:41Z".into(),
        started_at: Some("2026-11-24T15:50:41Z".into()),
        finished_at: None,
        queue_position: None,
    }
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

/// The CLI with `TURNOUT_HOME=home` and nothing else from the environment of the test.
fn cli(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env("TURNOUT_HOME", home)
        .env_remove("TURNOUT_API")
        .env_remove("TURNOUT_TOKEN")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn write_serve_json(home: &std::path::Path, api: &str, pid: u32) {
    let info = serde_json::json!({
        "api": api, "http": "http://127.0.0.1:1", "pid": pid, "home": home.display().to_string()
    });
    std::fs::write(home.join("serve.json"), info.to_string()).unwrap();
}

#[test]
fn a_homes_token_never_goes_to_a_daemon_that_is_not_that_homes() {
    const TOKEN: &str = "tnt_the_homes_owner_token";
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let fake = FakeApi::start(|_, s| error(s, 401, "unauthorized", "a valid token is needed"));
    let home_str = home.path().display().to_string();

    // A stale serve.json (its daemon died) names the fake: nothing is sent anywhere.
    write_serve_json(home.path(), &fake.url, dead_pid());
    let out = cli(home.path(), &[], &["app", "list"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no daemon runs for the home") && err.contains(&home_str),
        "{err}"
    );
    assert!(
        err.contains(&format!("turnout serve --home {home_str}")),
        "{err}"
    );
    // No serve.json at all: no guessed default address either.
    std::fs::remove_file(home.path().join("serve.json")).unwrap();
    let out = cli(home.path(), &[], &["app", "list"]);
    assert!(text(&out.stderr).contains("no daemon runs for the home"));
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());

    // --api names a daemon the home knows nothing of: it gets the request, not the token.
    let out = cli(home.path(), &[], &["--api", &fake.url, "app", "list"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("TURNOUT_TOKEN"), "{err}");
    // A live daemon for the home, elsewhere: still not the token for --api's address.
    write_serve_json(home.path(), "http://127.0.0.1:1", std::process::id());
    cli(home.path(), &[], &["--api", &fake.url, "app", "list"]);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.authorization.is_none()), "{seen:?}");

    // The daemon the home's live serve.json names does get the home's token …
    write_serve_json(home.path(), &fake.url, std::process::id());
    cli(home.path(), &[], &["app", "list"]);
    assert_eq!(
        fake.seen()[2].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    // … and TURNOUT_TOKEN goes wherever it is sent.
    std::fs::remove_file(home.path().join("serve.json")).unwrap();
    cli(
        home.path(),
        &[("TURNOUT_TOKEN", "tnt_given")],
        &["--api", &fake.url, "app", "list"],
    );
    assert_eq!(
        fake.seen()[3].authorization.as_deref(),
        Some("Bearer tnt_given")
    );
}

#[test]
fn numbers_out_of_range_are_usage_errors_not_panics() {
    let home = tempfile::tempdir().unwrap();
    let api = ["--api", "http://127.0.0.1:1"];
    for (args, says) in [
        (&["audit", "--since", "9999999999999999d"][..], "100 years"),
        (
            &["audit", "--since", "99999999999999999999999s"][..],
            "100 years",
        ),
        (&["audit", "--since", "36526d"][..], "100 years"),
        (&["audit", "--since", "5x"][..], "write it like 30m"),
        (
            &["logs", "shop/staging", "--tail", "99999999999"][..],
            "--tail",
        ),
        (&["job", "show", "0"][..], "0"),
        (
            &["job", "watch", "99999999999999999999"][..],
            "99999999999999999999",
        ),
        (&["rollback", "shop/staging", "--to", "0"][..], "--to"),
    ] {
        let out = cli(home.path(), &[], &[&api[..], args].concat());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// A fake API serving job 7 (succeeds) and job 8 (fails at build) over event streams.
fn jobs_api() -> FakeApi {
    FakeApi::start(|req, s| {
        let steps = |last: StepState| {
            vec![
                step("fetch", StepState::Done, "main"),
                step("build", last, "echo building"),
                step("launch", StepState::Pending, ""),
            ]
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/api/v1/jobs/7") | ("GET", "/api/v1/jobs/8") => {
                let id = if req.path.ends_with('7') { 7 } else { 8 };
                respond(
                    s,
                    200,
                    &to_json(&job(id, JobState::Running, steps(StepState::Running))),
                );
            }
            ("GET", "/api/v1/jobs/7/events") | ("GET", "/api/v1/jobs/8/events") => {
                let ok = req.path.contains("/7/");
                start_events(s);
                let events = [
                    JobEvent::Step {
                        index: 0,
                        total: 3,
                        step: step("fetch", StepState::Running, "main from /srv/shop.git"),
                    },
                    JobEvent::Step {
                        index: 0,
                        total: 3,
                        step: step("fetch", StepState::Done, "done"),
                    },
                    JobEvent::Step {
                        index: 1,
                        total: 3,
                        step: step("build", StepState::Running, "echo building"),
                    },
                    JobEvent::Output {
                        line: "building".into(),
                    },
                ];
                for e in &events {
                    send_event(s, e);
                }
                let end = if ok {
                    let mut j = job(7, JobState::Succeeded, steps(StepState::Done));
                    j.finished_at = Some("2026-11-24T15:50:45Z".into());
                    j
                } else {
                    send_event(
                        s,
                        &JobEvent::Step {
                            index: 1,
                            total: 3,
                            step: step("build", StepState::Failed, "exit status 1"),
                        },
                    );
                    let mut j = job(8, JobState::Failed, steps(StepState::Failed));
                    j.error = Some("exit status 1".into());
                    j.log_tail = vec!["npm ERR! missing script".into()];
                    j
                };
                send_event(s, &JobEvent::End { job: end });
            }
            ("GET", "/api/v1/jobs?app=shop&env=staging&all=true") => {
                respond(
                    s,
                    200,
                    &to_json(&vec![job(7, JobState::Running, steps(StepState::Running))]),
                );
            }
            _ => error(s, 404, "not_found", &format!("no job at {}", req.path)),
        }
    })
}

#[test]
fn job_watch_follows_the_stream_to_its_end_and_exits_with_the_jobs_outcome() {
    let home = tempfile::tempdir().unwrap();
    let fake = jobs_api();
    let token = [("TURNOUT_TOKEN", "tnt_t")];
    let out = cli(
        home.path(),
        &token,
        &["--api", &fake.url, "job", "watch", "7"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "job 7: deploy of shop/staging",
        "[1/3] fetch    main from /srv/shop.git",
        "[2/3] build    echo building",
        "        | building",
        "live: shop/staging release 3 at http://staging.shop.localhost:8080",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    assert_eq!(
        stdout.matches("fetch").count(),
        2,
        "a line when a step starts and one when it ends with news:\n{stdout}"
    );

    let out = cli(
        home.path(),
        &token,
        &["--api", &fake.url, "job", "watch", "8"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[2/3] build    failed: exit status 1"),
        "{stdout}"
    );
    assert!(stderr.contains("npm ERR! missing script"), "{stderr}");
    assert!(
        stderr.contains("error: deploy of shop/staging failed at build: exit status 1"),
        "{stderr}"
    );

    // --json: one JobEvent per line, the last one `end`.
    let out = cli(
        home.path(),
        &token,
        &["--api", &fake.url, "--json", "job", "watch", "7"],
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["type"], "end");
    assert_eq!(lines.last().unwrap()["job"]["state"], "succeeded");

    let out = cli(
        home.path(),
        &token,
        &["--api", &fake.url, "jobs", "shop/staging", "--all"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let header: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "KIND", "TARGET", "STATE", "STEP", "ACTOR", "STARTED", "DURATION"
        ]
    );
    assert!(
        stdout.contains("build (2/3)") && stdout.contains("running"),
        "{stdout}"
    );

    // An error answer: its message, exit 1.
    let out = cli(
        home.path(),
        &token,
        &["--api", &fake.url, "job", "show", "9"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: no job at /api/v1/jobs/9"));
    assert!(
        fake.seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer tnt_t"))
    );
}

#[test]
fn ctrl_c_stops_the_watching_not_the_job() {
    let fake = FakeApi::start(|req, s| match req.path.as_str() {
        "/api/v1/jobs/9" => respond(s, 200, &to_json(&job(9, JobState::Running, vec![]))),
        "/api/v1/jobs/9/events" => {
            start_events(s);
            let st = step("build", StepState::Running, "a long build");
            send_event(
                s,
                &JobEvent::Step {
                    index: 1,
                    total: 3,
                    step: st,
                },
            );
            // Keep the stream open until the watcher hangs up.
            let _ = s.read(&mut [0; 64]);
        }
        _ => error(s, 404, "not_found", "no"),
    });
    let mut watch = Command::new(BIN)
        .args(["--api", &fake.url, "job", "watch", "9"])
        .env("TURNOUT_TOKEN", "tnt_t")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(watch.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("a long build") {
        assert!(
            stdout.read_line(&mut seen).unwrap() > 0,
            "ended early: {seen}"
        );
    }
    let pid = nix::unistd::Pid::from_raw(watch.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the watch did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("stopped watching; job 9 goes on: `turnout job watch 9`, cancel it with `turnout job cancel 9`"),
        "{stderr}"
    );
    assert!(fake.seen().iter().all(|s| !s.path.contains("cancel")));
}

#[test]
fn deploy_detach_prints_the_job_pending_approval_exits_3_and_errors_carry_the_message() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeApi::start(|req, s| match req.path.as_str() {
        "/api/v1/apps/shop/envs/staging/deploy" => {
            respond(s, 201, &to_json(&job(12, JobState::Queued, vec![])))
        }
        "/api/v1/apps/shop/envs/production/deploy" => respond(
            s,
            202,
            r#"{"approval": 4, "message": "deploy of shop/production waits for a second owner: request 4"}"#,
        ),
        "/api/v1/apps/shop/envs/qa/deploy" => error(
            s,
            409,
            "conflict",
            "a deploy of shop/qa is already running (job 11)",
        ),
        _ => error(s, 404, "not_found", "no"),
    });
    let token = [("TURNOUT_TOKEN", "tnt_t")];
    let api = ["--api", fake.url.as_str()];
    let out = cli(
        home.path(),
        &token,
        &[
            &api[..],
            &["deploy", "shop/staging", "--ref", "v2", "--detach"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "12\n");
    assert!(text(&out.stderr).contains("`turnout job watch 12`"));
    let sent = &fake.seen()[0];
    assert_eq!(sent.method, "POST");
    let body: serde_json::Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body["git_ref"], "v2");

    let out = cli(
        home.path(),
        &token,
        &[&api[..], &["--json", "deploy", "shop/staging", "--detach"]].concat(),
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (info["id"].as_i64(), info["state"].as_str()),
        (Some(12), Some("queued"))
    );

    let out = cli(
        home.path(),
        &token,
        &[&api[..], &["deploy", "shop/production"]].concat(),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("pending: deploy of shop/production waits"));

    let out = cli(
        home.path(),
        &token,
        &[&api[..], &["deploy", "shop/qa"]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: a deploy of shop/qa is already running (job 11)\n"
    );
}
