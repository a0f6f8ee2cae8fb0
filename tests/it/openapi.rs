//! The API's OpenAPI document: served by the daemon, printed by `turnout api spec`, agreeing
//! with the typed client, and held to by the daemon under schemathesis (run from a virtual
//! environment that `.ci/run` creates; the test creates it when it is missing, as the browser
//! test runs `npm ci`).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use turnout_client::Client;
use turnout_model::endpoint::{self as ep, Endpoint, Payload};

use crate::support::{BIN, Daemon, Repo};

/// The schemathesis release the fuzz run uses (from PyPI), pinned so a new release's checks
/// change CI only when we choose.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The fuzzed daemon's viewer (of app `shop`).
const VIEWER: &str = "vic";

#[tokio::test]
async fn the_daemon_serves_the_document_the_cli_prints_without_a_token() {
    let d = Daemon::start();
    let res = reqwest::get(format!("{}/api/v1/openapi.json", d.api))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let served: Value = res.json().await.unwrap();
    let printed: Value = serde_json::from_str(&d.ok(&["api", "spec"])).unwrap();
    assert_eq!(served, printed);
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(
        served["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    // Printing needs no daemon: the document is the binary's own.
    let out = Command::new(BIN).args(["api", "spec"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        printed
    );
}

/// The typed client reads the served document, and every endpoint it can call is there with
/// its method, parameters, body and answer as the client sends and decodes them.
#[tokio::test]
async fn the_typed_client_and_the_document_agree() {
    let d = Daemon::start();
    let client = Client::new(&d.api, None).unwrap();
    let doc = serde_json::to_value(client.call(&ep::OpenApiDocument).await.unwrap()).unwrap();
    let mut checked = 0;
    macro_rules! check_all {
        ($($e:ident),* $(,)?) => {
            $(agrees::<ep::$e>(&doc, stringify!($e)); checked += 1;)*
        };
    }
    turnout_model::for_each_endpoint!(check_all);
    assert_eq!(checked, turnout_model::endpoint::all_paths().len());
}

/// `E` as the client uses it against its operation in `doc`.
fn agrees<E: Endpoint>(doc: &Value, name: &str) {
    let op = &doc["paths"][E::PATH][E::METHOD.as_str().to_ascii_lowercase()];
    assert!(
        op.is_object(),
        "{name}: {} {} missing",
        E::METHOD.as_str(),
        E::PATH
    );
    let params = |place: &str| -> Vec<String> {
        op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == place)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let in_path: Vec<String> = turnout_model::openapi::path_params(E::PATH)
        .map(str::to_owned)
        .collect();
    assert_eq!(params("path"), in_path, "{name}: path parameters");
    let query: Vec<String> = E::QUERY.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(params("query"), query, "{name}: query parameters");
    let mut schemas = Vec::new();
    let body = E::Body::describe(&mut schemas)
        .map(|(media, schema)| (media, serde_json::to_value(schema).unwrap()));
    match body {
        None => assert!(op["requestBody"].is_null(), "{name}: takes no body"),
        Some((media, schema)) => assert_eq!(
            op["requestBody"]["content"][media]["schema"], schema,
            "{name}: body"
        ),
    }
    let answer = E::Answer::describe(&mut schemas);
    let success: Vec<&String> = op["responses"]
        .as_object()
        .unwrap()
        .keys()
        // A run's answer is its 101 upgrade.
        .filter(|s| (s.starts_with('2') && *s != "202") || s.starts_with('1'))
        .collect();
    match answer {
        None => assert_eq!(success, ["204"], "{name}: answers no content"),
        Some((media, schema)) => {
            assert_eq!(success, [&E::STATUS.to_string()], "{name}: status");
            assert_eq!(
                op["responses"][E::STATUS.to_string()]["content"][media]["schema"],
                serde_json::to_value(schema).unwrap(),
                "{name}: answer"
            );
        }
    }
    // Every schema the client's types name is defined in the document.
    for (schema, _) in schemas {
        assert!(
            doc["components"]["schemas"][&schema].is_object(),
            "{name}: schema {schema} is not in the document"
        );
    }
}

/// schemathesis's `st`, from the virtual environment `.ci/run` makes (made here when missing).
fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-schemathesis");
    let st = venv.join("bin/st");
    if st.exists() {
        return st;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "the fuzz test needs a Python virtual environment: run .ci/run, or apt-get install \
         python3-venv ({})",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", SCHEMATHESIS])
        .output()
        .unwrap();
    assert!(
        pip.status.success(),
        "pip install {SCHEMATHESIS} into {}: {}",
        venv.display(),
        String::from_utf8_lossy(&pip.stderr)
    );
    st
}

/// What a viewer must not be able to change: apps, environments (with their releases),
/// domains, configuration, users, grants and others' tokens. (A viewer may make tokens for
/// itself: those are left out.)
fn state(d: &Daemon) -> Vec<Value> {
    let tokens: Vec<Value> = d
        .json(&["token", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["user"] != VIEWER)
        .cloned()
        .collect();
    let mut all = vec![
        d.json(&["app", "list"]),
        d.json(&["domain", "list"]),
        d.json(&["user", "list"]),
        Value::Array(tokens),
        d.json(&["access", "policy", "shop"]),
        d.json(&["config", "list", "shop/prod"]),
    ];
    for env in d.json(&["env", "list"]).as_array().unwrap() {
        let mut env = env.clone();
        // Resource use moves by itself; the rest must not.
        env.as_object_mut().unwrap().remove("usage");
        all.push(env);
    }
    all
}

/// Run schemathesis against the daemon with `token`: no 5xx, and every answer as the document
/// says (status, content type, body).
fn fuzz(d: &Daemon, token: &str, seconds: u32) {
    let started = Instant::now();
    // The fixture's names for path parameters, so requests reach the handlers' logic beyond
    // "no such app"; bodies, queries and ids stay generated.
    let config = d.cwd.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[parameters]\n\"path.app\" = \"shop\"\n\"path.env\" = \"staging\"\n\
         \"path.other\" = \"prod\"\n\"path.domain\" = \"shop.example.com\"\n",
    )
    .unwrap();
    let out = Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", d.api))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: CPython 3.11's `ast.parse`, which hypothesis calls to describe its
        // filters, is not safe across threads ("AST constructor recursion depth mismatch").
        .args(["--max-examples", "8", "--workers", "1", "--seed", "18"])
        .args(["--max-time", &seconds.to_string()])
        .args(["--request-timeout", "20", "--suppress-health-check", "all"])
        // Streams that end only with a job or never (`logs?follow=true`) would hold a worker
        // until the time runs out; their answers' heads are checked by their own tests.
        .args(["--exclude-operation-id", "Logs"])
        .args(["--exclude-operation-id", "JobEvents"])
        // Revoking tokens by guessed id would take the run's own token away midway.
        .args(["--exclude-operation-id", "RevokeToken"])
        .args(["--output-truncate", "true"])
        .current_dir(d.cwd.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems (in {:?}):\n{stdout}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schemathesis_finds_no_server_error_or_answer_outside_the_document() {
    let repo = Repo::new("fuzzed");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("staging", "main", "staging"),
        ],
    );
    d.create("blog", repo.path(), &[("dev", "main", "development")]);
    for env in ["shop/prod", "shop/staging"] {
        d.ok(&["deploy", env]);
    }
    d.ok(&["domain", "add", "shop.example.com", "shop/prod"]);
    d.ok(&["config", "set", "shop/prod", "GREETING=hello"]);
    d.ok(&["user", "add", VIEWER]);
    d.ok(&["access", "grant", VIEWER, "shop", "viewer"]);
    let viewer = d.json(&["token", "create", "--user", VIEWER])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The viewer first, on the state as set up: whatever it was refused changed nothing.
    let before = state(&d);
    fuzz(&d, &viewer, 30);
    let after = state(&d);
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(after, before, "a viewer's requests changed the state");
    }
    let audit = d.json(&["audit"]);
    let by_viewer: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == VIEWER)
        .collect();
    assert!(
        by_viewer.iter().any(|e| e["result"] != "ok"),
        "the viewer's refusals are audited"
    );
    for e in by_viewer {
        assert!(
            e["result"] != "ok" || e["action"] == "token.create",
            "the viewer changed something: {e}"
        );
    }

    // Then the owner, who may change (and delete) anything.
    fuzz(&d, &d.admin_token(), 40);
}
