use super::*;
use turnout_model::AuditAction;

#[test]
fn migrates_once_and_round_trips_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Store::open(&path).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    let conn = lock(&store.writer);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    let tx = Tx(&conn);
    let app = AppName::new("shop").unwrap();
    let env = EnvName::new("staging").unwrap();
    q::insert_app(&tx, &app, "/repo", None).unwrap();
    assert!(matches!(
        q::insert_app(&tx, &app, "/repo", None),
        Err(ControlError::Conflict(_))
    ));
    let e = q::insert_env(
        &tx,
        &app,
        &env,
        "main",
        Tier::Staging,
        turnout_model::DeployOn::Manual,
    )
    .unwrap();
    assert_eq!(e.plan, turnout_model::ResourcePlan::default());
    let plan = turnout_model::ResourcePlan {
        memory: Some(16 << 40),
        cpu: Some(0.25),
        pids: None,
    };
    q::set_plan(&tx, e.id, &plan).unwrap();
    assert_eq!(q::get_env(&tx, &app, &env).unwrap().plan, plan);
    let release = |commit, dir, reused_build, job_id| NewRelease {
        env_id: e.id,
        commit,
        git_ref: "main",
        dir,
        config: "{}",
        reused_build,
        job_id,
    };
    let r1 = q::insert_release(&tx, &release("abc", "/d1", false, 1)).unwrap();
    q::go_live(&tx, e.id, r1).unwrap();
    let r2 = q::insert_release(&tx, &release("def", "/d2", true, 2)).unwrap();
    q::go_live(&tx, e.id, r2).unwrap();
    let releases = q::list_releases(&tx, e.id).unwrap();
    assert_eq!(
        releases.iter().map(|r| r.status).collect::<Vec<_>>(),
        [ReleaseStatus::Live, ReleaseStatus::Superseded]
    );
    assert_eq!(
        q::get_env(&tx, &app, &env).unwrap().current_release_id,
        Some(r2)
    );
    assert_eq!(q::get_app(&tx, &app).unwrap().environments, 1);
    q::delete_app(&tx, &app).unwrap();
    assert!(q::list_releases(&tx, e.id).unwrap().is_empty());
}

fn audit_actions(conn: &Connection) -> Vec<(String, String, String)> {
    audit::list(conn, None, None, None, 100)
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| (r.entry.actor, r.entry.action.to_string(), r.result))
        .collect()
}

#[tokio::test]
async fn the_read_path_refuses_writes_and_mutate_audits_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    let err = store
        .call(|c| {
            c.execute(
                "INSERT INTO users (name, created_at) VALUES ('mallory', 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("readonly"), "{err}");
    assert_eq!(store.call(|c| access::user_count(c)).await.unwrap(), 0);

    store
        .mutate(AuditEntry::new("root", AuditAction::UserAdd), |c, _| {
            access::insert_user(c, "alice")
        })
        .await
        .unwrap();
    assert_eq!(store.call(|c| access::user_count(c)).await.unwrap(), 1);
    assert_eq!(
        store.call(|c| Ok(audit_actions(c))).await.unwrap(),
        [("root".into(), "user.add".into(), "ok".into())]
    );
}

#[tokio::test]
async fn reads_do_not_wait_for_a_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    let (inside, started) = std::sync::mpsc::channel();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let writer = store.clone();
    let write = tokio::spawn(async move {
        writer
            .mutate(
                AuditEntry::new("root", AuditAction::UserAdd),
                move |c, _| {
                    access::insert_user(c, "alice")?;
                    inside.send(()).unwrap();
                    wait.recv().unwrap();
                    Ok(())
                },
            )
            .await
    });
    tokio::task::spawn_blocking(move || started.recv().unwrap())
        .await
        .unwrap();
    // The writer holds its transaction open; every reader still answers, and sees the
    // state before the commit.
    for _ in 0..READERS * 2 {
        let users = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            store.call(|c| access::user_count(c)),
        )
        .await
        .expect("a read waited for the write")
        .unwrap();
        assert_eq!(users, 0);
    }
    release.send(()).unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(store.call(|c| access::user_count(c)).await.unwrap(), 1);
}

#[tokio::test]
async fn expiring_approvals_records_one_entry_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    let app = AppName::new("shop").unwrap();
    store
        .mutate(
            AuditEntry::new("root", AuditAction::AppCreate),
            move |c, _| {
                let a = q::insert_app(c, &app, "/repo", None)?;
                for (summary, expires_s) in [("old", -1), ("older", -60), ("fresh", 3600)] {
                    access::insert_approval(
                        c,
                        a.id,
                        turnout_model::Action::Deploy,
                        "{}",
                        summary,
                        "bob",
                        expires_s,
                    )?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    let expired = store.mutate_each(access::expire_approvals).await.unwrap();
    assert_eq!(expired, 2);
    // Nothing left to expire: nothing recorded.
    assert_eq!(
        store.mutate_each(access::expire_approvals).await.unwrap(),
        0
    );
    let entries = store.call(|c| Ok(audit_actions(c))).await.unwrap();
    let expire = (
        "turnout".to_owned(),
        "approval.expire".to_owned(),
        "ok".to_owned(),
    );
    assert_eq!(entries[1..], [expire.clone(), expire]);
    let statuses = store
        .call(|c| access::list_approvals(c, true))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.summary, r.status))
        .collect::<Vec<_>>();
    assert_eq!(
        statuses,
        [
            ("fresh".into(), "pending".into()),
            ("older".into(), "expired".into()),
            ("old".into(), "expired".into())
        ]
    );
}

#[test]
fn refuses_a_store_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&path).err().unwrap().to_string();
    assert!(err.contains("newer Turnout"), "{err}");
}

#[test]
fn config_values_are_unique_per_level_despite_nulls_and_cascade_with_their_environment() {
    use super::config::{self as cq, SetLevel};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    let conn = lock(&store.writer);
    let tx = Tx(&conn);
    let app = AppName::new("shop").unwrap();
    let app_id = q::insert_app(&tx, &app, "/repo", None).unwrap().id;
    let env = q::insert_env(
        &tx,
        &app,
        &EnvName::new("stg").unwrap(),
        "main",
        Tier::Staging,
        turnout_model::DeployOn::Manual,
    )
    .unwrap();
    let levels = [
        SetLevel::App,
        SetLevel::Tier(Tier::Staging),
        SetLevel::Tier(Tier::Production),
        SetLevel::Env(env.id),
    ];
    for level in &levels {
        assert!(!cq::set_value(&tx, app_id, level, "K", false, b"1", "a").unwrap());
        // Set again: replaced, not added (the app and tier levels have no environment: NULL).
        assert!(cq::set_value(&tx, app_id, level, "K", false, b"2", "a").unwrap());
        assert_eq!(cq::count_at(&tx, app_id, level).unwrap(), 1);
    }
    let duplicate = tx.execute(
        "INSERT INTO config_values (app_id, level, key, secret, value, updated_at, updated_by) \
         VALUES (?1, 'app', 'K', 0, '3', 0, 'a')",
        [app_id],
    );
    assert!(
        duplicate.is_err(),
        "the unique index holds for NULL environments"
    );
    // The staging environment sees the app's, staging's and its own, not production's.
    let rows = cq::values_for_env(&tx, app_id, Tier::Staging, env.id).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.level != SetLevel::Tier(Tier::Production))
    );
    assert_eq!(cq::bump_version(&tx, app_id).unwrap(), 1);
    assert_eq!(cq::bump_version(&tx, app_id).unwrap(), 2);
    assert!(cq::unset_value(&tx, app_id, &SetLevel::App, "K").unwrap());
    assert!(!cq::unset_value(&tx, app_id, &SetLevel::App, "K").unwrap());
    q::delete_env(&tx, env.id).unwrap();
    assert_eq!(
        cq::count_at(&tx, app_id, &SetLevel::Env(env.id)).unwrap(),
        0
    );
}

#[test]
fn find_domains_filters_counts_and_limits_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    let conn = lock(&store.writer);
    let tx = Tx(&conn);
    let mut envs = Vec::new();
    for app in ["shop", "blog"] {
        let name = AppName::new(app).unwrap();
        let id = q::insert_app(&tx, &name, "/repo", None).unwrap().id;
        let env = q::insert_env(
            &tx,
            &name,
            &EnvName::new("prod").unwrap(),
            "main",
            Tier::Production,
            turnout_model::DeployOn::Manual,
        )
        .unwrap();
        envs.push((id, env));
    }
    for i in 0..30 {
        let (_, env) = &envs[i % 2];
        let name: DomainName = format!("d{i:02}.{}.test", env.app).parse().unwrap();
        let row = q::insert_domain(&tx, &name, env, "t").unwrap();
        if i % 10 == 0 {
            tx.execute(
                "UPDATE domains SET tls_mode = 'acme' WHERE id = ?1",
                [row.id],
            )
            .unwrap();
        }
    }
    let names = |f: &q::FoundDomainRows| -> Vec<String> {
        f.rows.iter().map(|r| r.name.to_string()).collect()
    };
    // Everyone's, the first 5 by name, 25 more; 3 ordering a certificate.
    let all = q::find_domains(&tx, None, "", 5).unwrap();
    assert_eq!(
        names(&all),
        [
            "d00.shop.test",
            "d01.blog.test",
            "d02.shop.test",
            "d03.blog.test",
            "d04.shop.test"
        ]
    );
    assert_eq!((all.more, all.certificates), (25, 3));
    // One app's (by id), matched on the domain's name or the app's.
    let (blog, shop) = (envs[1].0, envs[0].0);
    let blog_only = q::find_domains(&tx, Some(&[blog]), "", 100).unwrap();
    assert_eq!(blog_only.rows.len(), 15);
    assert!(blog_only.rows.iter().all(|r| r.app.as_str() == "blog"));
    assert_eq!((blog_only.more, blog_only.certificates), (0, 0));
    let shop_d1 = q::find_domains(&tx, Some(&[shop]), "d1", 100).unwrap();
    assert_eq!(
        names(&shop_d1),
        [
            "d10.shop.test",
            "d12.shop.test",
            "d14.shop.test",
            "d16.shop.test",
            "d18.shop.test"
        ]
    );
    assert_eq!(
        shop_d1.certificates, 3,
        "counted over all the apps' domains"
    );
    let by_app = q::find_domains(&tx, None, "blog", 1).unwrap();
    assert_eq!((by_app.rows.len(), by_app.more), (1, 14));
    assert!(
        q::find_domains(&tx, Some(&[]), "", 10)
            .unwrap()
            .rows
            .is_empty()
    );
    // Text that looks like SQL is just text.
    let odd = q::find_domains(&tx, None, "' OR 1=1 --", 10).unwrap();
    assert_eq!((odd.rows.len(), odd.more), (0, 0));
}
