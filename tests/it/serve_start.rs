//! `turnout serve` start-up order: a port it cannot bind fails the start before it writes
//! anything to the home (no administrator, no token).
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::BIN;

#[test]
fn a_taken_port_fails_the_start_before_the_administrator_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (flag, other) in [
        ("--api-listen", "--http-listen"),
        ("--http-listen", "--api-listen"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", flag, &addr, other, "127.0.0.1:0", "--home"])
            .arg(home.path())
            .env_remove("TURNOUT_API")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("serve with {flag} {addr} (taken) did not exit within 30s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{err}");
        assert!(
            err.contains(&format!("cannot listen on {addr}")) && err.contains(flag),
            "{err}"
        );
        assert!(
            !home.path().join("admin.token").exists(),
            "admin.token written by a start that failed"
        );
        let db = home.path().join("turnout.db");
        if db.exists() {
            let users: i64 = rusqlite::Connection::open(&db)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
                .unwrap();
            assert_eq!(users, 0, "a start that failed created a user");
        }
    }
}
