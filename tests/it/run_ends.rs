//! How a `turnout run` ends: its client hangs up, its daemon stops or is killed, or, detached,
//! as a job that is watched, fails with the command's status, or is cancelled.
use std::time::Duration;

use serde_json::Value;

use crate::run::{deployed, read_until, run_cli, session, text};
use crate::support::{eventually, processes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_takes_its_command_with_it() {
    let (d, _repo) = deployed(&[("dev", "development")]);
    // It ignores SIGHUP and leaves a child behind: the group is killed after the grace.
    let script = "trap '' HUP; sleep 7771 & echo started; exec sleep 7772";
    let (input, mut output) = session(&d, &["sh", "-c", script], None).await;
    let mut seen = Vec::new();
    read_until(&mut output, &mut seen, "started").await;
    eventually("the command to exec", Duration::from_secs(10), || async {
        (processes(&["sleep", "7772"]).len() == 1).then_some(())
    })
    .await;
    drop((input, output));
    eventually(
        "the run's processes to be killed",
        Duration::from_secs(20),
        || async {
            (processes(&["sleep", "7771"]).is_empty() && processes(&["sleep", "7772"]).is_empty())
                .then_some(())
        },
    )
    .await;

    // A local reader that goes away (`turnout run … | head`) ends the CLI quietly, and the run.
    let mut cli = std::process::Command::new(crate::support::BIN)
        .args(["--api", &d.api, "--home"])
        .arg(d.home.path())
        .args(["run", "shop/dev", "--", "yes", "run-marker"])
        .env_remove("TURNOUT_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 11];
    std::io::Read::read_exact(cli.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"run-marker\n");
    drop(cli.stdout.take());
    assert!(cli.wait().unwrap().success());
    eventually(
        "the run's command to be hung up on",
        Duration::from_secs(20),
        || async { processes(&["yes", "run-marker"]).is_empty().then_some(()) },
    )
    .await;

    // The same at a daemon's stop.
    let (_input, mut output) =
        session(&d, &["sh", "-c", "echo started; exec sleep 7773"], None).await;
    let mut seen = Vec::new();
    read_until(&mut output, &mut seen, "started").await;
    eventually("the command to exec", Duration::from_secs(10), || async {
        (processes(&["sleep", "7773"]).len() == 1).then_some(())
    })
    .await;
    let mut d = d;
    d.stop();
    assert!(
        processes(&["sleep", "7773"]).is_empty(),
        "a run outlived its daemon"
    );

    // A daemon killed outright: the command's own process dies with it (the parent-death
    // signal), what it left in its group is reaped by the next start.
    d.start_again();
    let script = "sleep 7777 & echo started; exec sleep 7778";
    let (_input, mut output) = session(&d, &["sh", "-c", script], None).await;
    let mut seen = Vec::new();
    read_until(&mut output, &mut seen, "started").await;
    eventually("the command to exec", Duration::from_secs(10), || async {
        (processes(&["sleep", "7778"]).len() == 1).then_some(())
    })
    .await;
    d.kill();
    eventually(
        "the run's process to die with the daemon",
        Duration::from_secs(10),
        || async { processes(&["sleep", "7778"]).is_empty().then_some(()) },
    )
    .await;
    assert_eq!(processes(&["sleep", "7777"]).len(), 1);
    d.start_again();
    eventually(
        "the next start to reap the run's group",
        Duration::from_secs(20),
        || async { processes(&["sleep", "7777"]).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_run_is_a_job_with_its_output_and_can_be_cancelled() {
    let (d, _repo) = deployed(&[("dev", "development")]);
    let script = "echo line-one; echo line-two >&2; printf no-newline; exit 3";
    let out = run_cli(
        &d,
        None,
        &["--json", "--detach", "shop/dev", "--", "sh", "-c", script],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["kind"], "run", "{job}");
    let id = job["id"].to_string();
    let watch = d.cli(&["job", "watch", &id]);
    assert!(!watch.status.success());
    let shown = format!("{}{}", text(&watch.stdout), text(&watch.stderr));
    for line in ["line-one", "line-two", "no-newline", "exit status 3"] {
        assert!(shown.contains(line), "{line}: {shown}");
    }
    let listed = d.json(&["jobs", "shop/dev"]);
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job["id"])
        .unwrap()
        .clone();
    assert_eq!(listed["state"], "failed", "{listed}");
    assert!(
        listed["error"].as_str().unwrap().contains("exit status 3"),
        "{listed}"
    );
    assert_eq!(
        listed["request"],
        "sh -c 'echo line-one; echo line-two >&2; printf no-newline; exit 3'"
    );

    // A cancel hangs it up: its whole process group is gone, the job says cancelled.
    let script = "trap '' HUP; sleep 7775 & echo begun; exec sleep 7776";
    let out = run_cli(
        &d,
        None,
        &["--json", "--detach", "shop/dev", "--", "sh", "-c", script],
        b"",
    );
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"].to_string();
    eventually(
        "the detached command to run",
        Duration::from_secs(10),
        || async { (processes(&["sleep", "7776"]).len() == 1).then_some(()) },
    )
    .await;
    d.ok(&["job", "cancel", &id]);
    eventually(
        "the cancelled run's processes to go",
        Duration::from_secs(20),
        || async {
            (processes(&["sleep", "7775"]).is_empty() && processes(&["sleep", "7776"]).is_empty())
                .then_some(())
        },
    )
    .await;
    let watch = d.cli(&["job", "watch", &id]);
    let shown = format!("{}{}", text(&watch.stdout), text(&watch.stderr));
    assert!(
        shown.contains("begun") && shown.contains("cancelled"),
        "{shown}"
    );
    let e = text(&run_cli(&d, None, &["--detach", "-t", "shop/dev", "--", "ls"], b"").stderr);
    assert!(e.contains("cannot be used with"), "{e}");
}
