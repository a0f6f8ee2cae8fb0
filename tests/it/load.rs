//! Proof under load (issue 3): mixed traffic on a domain while it is switched back and forth,
//! rolled back and redeployed, with zero failed requests, every body complete and correct, and
//! no answer from the old environment once a switch has returned.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{Daemon, Repo, eventually};
use crate::traffic::{Judge, Tally, Target, Traffic};

pub(crate) const MIXED_APP: &str = include_str!("fixtures/mixed_app.py");

/// Drains give requests far longer than the 2 s ones need, and close the SSE stream and the
/// WebSocket (which never end by themselves) after a second, to keep the test short.
pub(crate) const LOAD_TOML: &str = r#"
[run]
command = "exec python3 app.py"
drain_timeout = "10s"
stream_drain_timeout = "1s"
stop_timeout = "5s"

[health]
path = "/healthz"
timeout = "20s"
interval = "50ms"
"#;

const DOMAIN: &str = "shop.example.test";
const ENVS: [&str; 2] = ["blue", "green"];
/// Switches and rollbacks; every 5th is a rollback.
const OPERATIONS: usize = 50;
/// After which operations a deploy starts (it runs while the switches go on).
const DEPLOY_AFTER: [usize; 5] = [3, 13, 23, 33, 43];
/// GETs that must be answered, and checked, after each switch before the next.
const GETS_PER_SWITCH: u64 = 20;

/// Two environments of one app, blue and green, both running; the domain starts on blue. Traffic
/// on the domain: 8 keep-alive GET connections, 2 loops of 1 MB echo POSTs, 2 loops of 2 s
/// requests, one SSE stream and one WebSocket echo client. Meanwhile 50 operations alternate
/// the domain between the two (every 5th a rollback, which goes back to where the switch
/// before it came from), each proven by GETs answered after it returned, and 5 deploys of new
/// commits run beside them (those of the domain's own environment while the domain holds still,
/// so its requests are in flight on the release being replaced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_survives_50_switches_and_rollbacks_and_5_deploys() {
    let started = Instant::now();
    let repo = Repo::new("load");
    repo.write("app.py", MIXED_APP);
    repo.write("turnout.toml", LOAD_TOML);
    let first = repo.commit("the mixed app");
    // Shared with the tasks that run deploys while the switches go on. The proxy runs on one
    // thread, as in the benchmarks (a current-thread runtime; the other tests use several).
    let d = Arc::new(Daemon::start_with_env(&[("TURNOUT_PROXY_WORKERS", "1")]));
    d.create(
        "shop",
        repo.path(),
        &[("blue", "main", "staging"), ("green", "main", "production")],
    );
    d.ok(&["deploy", "shop/blue"]);
    d.ok(&["deploy", "shop/green"]);
    d.ok(&["domain", "add", DOMAIN, "shop/blue"]);

    let expect = Arc::new(Expectations::new(0, &first));
    let tally = Arc::new(Tally::new());
    let stop = CancellationToken::new();
    let traffic = Traffic {
        target: Target {
            addr: d.http,
            host: DOMAIN.to_owned(),
        },
        judge: expect.clone(),
        tally: tally.clone(),
        stop: stop.clone(),
    };
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for id in 0..8 {
        let pause = Duration::from_millis(5);
        tasks.push(tokio::spawn(traffic.clone().get_loop(id, pause)));
    }
    for id in 0..2 {
        tasks.push(tokio::spawn(traffic.clone().post_loop(id)));
        tasks.push(tokio::spawn(traffic.clone().slow_loop(id)));
    }
    let max_gap = Duration::from_secs(10);
    tasks.push(tokio::spawn(traffic.clone().sse_loop(max_gap)));
    let (every, max_wait) = (Duration::from_millis(50), Duration::from_secs(10));
    tasks.push(tokio::spawn(traffic.ws_loop(every, max_wait)));
    every_kind_moves(&tally, "before the first switch").await;

    let mut on = 0; // index into ENVS of where the domain points
    let mut timings = Vec::new();
    let mut deploy: Option<JoinHandle<Deployed>> = None;
    let mut deployed = Vec::new();
    for op in 1..=OPERATIONS {
        let to = 1 - on;
        let rollback = op % 5 == 0;
        expect.switch_starts();
        timings.push(switch_or_roll_back(&d, op, rollback, on, to));
        let checked_before = expect.switch_returned(to);
        on = to;
        // This switch is proven once enough GETs that started after it returned were answered
        // (by the new environment, or they are failures).
        until(
            &tally,
            &format!("{GETS_PER_SWITCH} GETs after operation {op}"),
            Duration::from_secs(30),
            || expect.strict_env_checks() - checked_before >= GETS_PER_SWITCH,
        )
        .await;

        if DEPLOY_AFTER.contains(&op) {
            // One deploy at a time: the next commit must not be fetched by the previous one.
            if let Some(previous) = deploy.take() {
                deployed.push(previous.await.unwrap());
            }
            let n = deployed.len() + 1;
            let env = n % 2; // green, blue, green, …
            let live = env == on;
            if live {
                // A deploy of the domain's own environment. Switches wait until both 2 s loops
                // have finished a request here: from then on each always has one in flight on
                // this release, which the deploy must replace and drain without failing it.
                let slow_before = tally.slow.load(Ordering::Relaxed);
                until(
                    &tally,
                    "both 2 s loops to restart on the domain's environment",
                    Duration::from_secs(30),
                    || tally.slow.load(Ordering::Relaxed) >= slow_before + 2,
                )
                .await;
            }
            repo.write("release.txt", &format!("deploy {n}\n"));
            let commit = repo.commit(&format!("deploy {n}"));
            expect.deploy_starts(env, &commit);
            deploy = Some(start_deploy(&d, env, expect.clone()));
            if live {
                // And no switch until the new release answers on the domain.
                until(
                    &tally,
                    &format!("the new release of {} to answer", ENVS[env]),
                    Duration::from_secs(60),
                    || expect.newest_answered(env),
                )
                .await;
            }
        }
    }
    if let Some(last) = deploy.take() {
        deployed.push(last.await.unwrap());
    }
    every_kind_moves(&tally, "after the last deploy").await;
    stop.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a traffic loop did not stop within 30 s")
            .unwrap();
    }

    let rollbacks = OPERATIONS / 5;
    let max_health = timings.iter().map(|t| t.0).fold(0.0, f64::max);
    let max_apply = timings.iter().map(|t| t.1).fold(0.0, f64::max);
    println!("{}", tally.summary());
    println!(
        "switches {}, rollbacks {rollbacks}, deploys {} (drains: {}); checks of who answered: {}; \
         switch health check max {max_health:.1} ms, apply max {max_apply:.0} us; {:.1} s in all",
        OPERATIONS - rollbacks,
        deployed.len(),
        deployed
            .iter()
            .map(|d| format!("{} {}", d.env, d.drained))
            .collect::<Vec<_>>()
            .join(", "),
        expect.counts(),
        started.elapsed().as_secs_f64()
    );
    for d in &deployed {
        assert!(d.ok, "deploy of {} failed:\n{}", d.env, d.output);
    }
    let failures = tally.failures();
    assert!(
        failures.is_empty(),
        "{} failures, the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
    assert_eq!(deployed.len(), DEPLOY_AFTER.len());
    // The streams stayed open through the switches: only a deploy's drain ends one, and each
    // drain ends at most the one stream of each kind open on the release it replaces.
    assert!(tally.sse_reconnects.load(Ordering::Relaxed) <= deployed.len() as u64);
    assert!(tally.ws_drain_closes.load(Ordering::Relaxed) <= deployed.len() as u64);
}

/// `turnout domain switch` (or `rollback`) from ENVS[from] to ENVS[to], checking its answer;
/// returns the health-check and apply times it reports.
fn switch_or_roll_back(
    d: &Daemon,
    op: usize,
    rollback: bool,
    from: usize,
    to: usize,
) -> (f64, f64) {
    let target = format!("shop/{}", ENVS[to]);
    let args = if rollback {
        vec!["domain", "rollback", DOMAIN]
    } else {
        vec!["domain", "switch", DOMAIN, &target]
    };
    let out = d.json(&args);
    let action = if rollback { "rollback" } else { "switch" };
    assert_eq!(
        [
            &out["domain"],
            &out["app"],
            &out["action"],
            &out["from"],
            &out["to"]
        ]
        .map(Value::as_str),
        [DOMAIN, "shop", action, ENVS[from], ENVS[to]].map(Some),
        "operation {op} ({args:?}): {out}"
    );
    (
        out["health_check_ms"].as_f64().unwrap(),
        out["apply_us"].as_f64().unwrap(),
    )
}

/// Poll `done` until it holds, or until a traffic loop has recorded a failure: then what we
/// wait for may never come, and the failures are reported at the end.
async fn until(tally: &Tally, what: &str, timeout: Duration, done: impl Fn() -> bool) {
    eventually(what, timeout, || {
        let ready = done() || tally.failure_count() > 0;
        async move { ready.then_some(()) }
    })
    .await;
}

/// Wait until every kind of traffic has gone through at least once more.
/// A daemon whose shop/prod (production) runs the mixed app, deployed: the repository, the
/// commit it runs, the daemon.
pub(crate) fn mixed_prod() -> (Repo, String, Daemon) {
    let repo = Repo::new("mixed");
    repo.write("app.py", MIXED_APP);
    repo.write("turnout.toml", LOAD_TOML);
    let commit = repo.commit("the mixed app");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    (repo, commit, d)
}

pub(crate) async fn every_kind_moves(tally: &Tally, when: &str) {
    let counters = |t: &Tally| {
        [&t.gets, &t.posts, &t.slow, &t.sse_events, &t.ws_echoes].map(|c| c.load(Ordering::Relaxed))
    };
    let before = counters(tally);
    eventually(
        &format!("every kind of traffic {when}"),
        Duration::from_secs(30),
        || {
            let moved = counters(tally).iter().zip(before).all(|(n, b)| *n > b);
            async move { moved.then_some(()) }
        },
    )
    .await;
}

struct Deployed {
    env: &'static str,
    ok: bool,
    output: String,
    /// The deploy's own account of the drain ("… drained and stopped in 1.23s (…)").
    drained: String,
}

/// Run `turnout deploy` for ENVS[env] in the background; the moment it returns is recorded in
/// `expect` by the task itself, so no later check is stricter than the truth.
fn start_deploy(d: &Arc<Daemon>, env: usize, expect: Arc<Expectations>) -> JoinHandle<Deployed> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let out = d.cli(&["deploy", &format!("shop/{}", ENVS[env])]);
        expect.deploy_returned(env, out.status.success());
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let drained = output
            .lines()
            .find_map(|l| l.split_once("previous release ").map(|(_, rest)| rest))
            .unwrap_or("no drain reported")
            .trim()
            .to_owned();
        Deployed {
            env: ENVS[env],
            ok: out.status.success(),
            output,
            drained,
        }
    })
}

/// What the test knows about routing, as the traffic loops' [`Judge`]: where the domain points,
/// whether a switch is under way, and which releases each environment has had.
///
/// A check is strict when nothing changed while the request was in flight: the request started
/// after the last switch returned and no other switch had started by the time its answer came,
/// so exactly one environment may answer it; likewise for the release of the environment that
/// answered. A request that overlapped a switch or a deploy may be answered by either side.
struct Expectations {
    state: Mutex<State>,
}

struct State {
    /// Bumped when a switch or rollback starts and when it returns.
    version: u64,
    switching: bool,
    /// Index into ENVS of where the domain points since the last switch returned.
    on: usize,
    /// Switches completed (the epoch), for messages.
    epoch: u64,
    releases: [Releases; 2],
    strict_env: u64,
    loose_env: u64,
    strict_release: u64,
    loose_release: u64,
}

#[derive(Clone)]
struct Releases {
    /// Bumped when a deploy starts and when it returns.
    version: u64,
    deploying: bool,
    /// Every commit deployed to the environment, in order; the last one that returned is live.
    all: Vec<String>,
    live: usize,
    /// The newest commit in `all` has answered a request.
    newest_answered: bool,
}

struct Ticket {
    version: u64,
    switching: bool,
    on: usize,
    epoch: u64,
    releases: [(u64, bool, usize); 2],
}

impl Expectations {
    fn new(on: usize, commit: &str) -> Expectations {
        let releases = Releases {
            version: 0,
            deploying: false,
            all: vec![commit.to_owned()],
            live: 0,
            newest_answered: true,
        };
        Expectations {
            state: Mutex::new(State {
                version: 0,
                switching: false,
                on,
                epoch: 0,
                releases: [releases.clone(), releases],
                strict_env: 0,
                loose_env: 0,
                strict_release: 0,
                loose_release: 0,
            }),
        }
    }

    fn switch_starts(&self) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        s.switching = true;
    }

    /// Returns the strict checks so far: every strict check counted from now on is of a request
    /// that started after this switch returned.
    fn switch_returned(&self, to: usize) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        s.switching = false;
        s.on = to;
        s.epoch += 1;
        s.strict_env
    }

    fn strict_env_checks(&self) -> u64 {
        self.state.lock().unwrap().strict_env
    }

    fn deploy_starts(&self, env: usize, commit: &str) {
        let mut s = self.state.lock().unwrap();
        let r = &mut s.releases[env];
        r.version += 1;
        r.deploying = true;
        r.all.push(commit.to_owned());
        r.newest_answered = false;
    }

    fn newest_answered(&self, env: usize) -> bool {
        self.state.lock().unwrap().releases[env].newest_answered
    }

    /// A failed deploy changes nothing: the previous release stays live.
    fn deploy_returned(&self, env: usize, ok: bool) {
        let mut s = self.state.lock().unwrap();
        let r = &mut s.releases[env];
        r.version += 1;
        r.deploying = false;
        if ok {
            r.live = r.all.len() - 1;
        }
    }

    fn counts(&self) -> String {
        let s = self.state.lock().unwrap();
        format!(
            "environment {} strict + {} during a switch, release {} strict + {} during a deploy",
            s.strict_env, s.loose_env, s.strict_release, s.loose_release
        )
    }
}

impl Judge for Expectations {
    type Ticket = Ticket;

    fn ticket(&self) -> Ticket {
        let s = self.state.lock().unwrap();
        Ticket {
            version: s.version,
            switching: s.switching,
            on: s.on,
            epoch: s.epoch,
            releases: [0, 1].map(|i| {
                let r = &s.releases[i];
                (r.version, r.deploying, r.live)
            }),
        }
    }

    fn check(&self, t: &Ticket, env: &str, release: &str) -> Result<(), String> {
        let Some(i) = ENVS.iter().position(|e| *e == env) else {
            return Err(format!("answered by {env:?}, which is neither environment"));
        };
        let mut s = self.state.lock().unwrap();
        if !t.switching && s.version == t.version {
            if i != t.on {
                return Err(format!(
                    "answered by {env} although it started after switch {} to {} had returned \
                     and no switch began before the answer",
                    t.epoch, ENVS[t.on]
                ));
            }
            s.strict_env += 1;
        } else {
            s.loose_env += 1;
        }
        let (version, deploying, live) = t.releases[i];
        let r = &mut s.releases[i];
        r.newest_answered |= r.all.last().is_some_and(|c| c == release);
        if !deploying && r.version == version {
            if release != r.all[live] {
                return Err(format!(
                    "{env} answered from release {release}, but {} had been live there since \
                     before the request and no deploy began before the answer",
                    r.all[live]
                ));
            }
            s.strict_release += 1;
        } else if r.all.iter().any(|c| c == release) {
            s.loose_release += 1;
        } else {
            return Err(format!(
                "{env} answered from release {release:?}, never deployed there"
            ));
        }
        Ok(())
    }

    fn may_be_closed(&self, env: &str, release: &str) -> bool {
        let s = self.state.lock().unwrap();
        ENVS.iter().position(|e| *e == env).is_some_and(|i| {
            let r = &s.releases[i];
            r.deploying || r.all[r.live] != release
        })
    }
}

/// The traffic client and the fixture agree without the proxy in between, so a failure of the
/// load test is the proxy's or the control plane's, not the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traffic_client_and_the_fixture_agree_without_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), MIXED_APP).unwrap();
    let mut app = Command::new("python3")
        .arg("app.py")
        .current_dir(dir.path())
        .env("PORT", "0")
        .env("TURNOUT_ENV", "blue")
        .env("TURNOUT_RELEASE", "r1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(app.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();

    struct Fixed;
    impl Judge for Fixed {
        type Ticket = ();
        fn ticket(&self) {}
        fn check(&self, _: &(), env: &str, release: &str) -> Result<(), String> {
            ((env, release) == ("blue", "r1"))
                .then_some(())
                .ok_or_else(|| format!("{env} {release}"))
        }
        fn may_be_closed(&self, _: &str, _: &str) -> bool {
            false
        }
    }
    let tally = Arc::new(Tally::new());
    let stop = CancellationToken::new();
    let traffic = Traffic {
        target: Target {
            addr,
            host: "anything".to_owned(),
        },
        judge: Arc::new(Fixed),
        tally: tally.clone(),
        stop: stop.clone(),
    };
    let tasks = vec![
        tokio::spawn(traffic.clone().get_loop(0, Duration::ZERO)),
        tokio::spawn(traffic.clone().post_loop(0)),
        tokio::spawn(traffic.clone().slow_loop(0)),
        tokio::spawn(traffic.clone().sse_loop(Duration::from_secs(5))),
        tokio::spawn(traffic.ws_loop(Duration::from_millis(10), Duration::from_secs(5))),
    ];
    every_kind_moves(&tally, "straight to the app").await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    // The daemon stops instances with SIGTERM; the fixture must exit at once.
    let pid = nix::unistd::Pid::from_raw(app.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopped = eventually("the app to exit on SIGTERM", Duration::from_secs(5), || {
        let exited = app.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(stopped.success(), "{stopped:?}");
    println!("{}", tally.summary());
    assert_eq!(tally.failures(), Vec::<String>::new());
}
