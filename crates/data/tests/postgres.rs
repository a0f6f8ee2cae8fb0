//! PostgreSQL clusters for real: each test runs initdb in a temporary directory on a free port
//! (the server's binaries come from Debian's `postgresql` package, which `.ci/run` installs).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use turnout_data::mask::{self, MaskRule};
use turnout_data::postgres::{Cluster, ClusterSpec, PgSystem, SUPERUSER};
use turnout_data::{Access, DataError, FakeKind, MaskRules, Progress, Quiet};
use turnout_netns::Network;

mod common;
use common::{secret, tempdir};

fn spec(dir: &std::path::Path, gen_name: &str, database: &str) -> ClusterSpec {
    ClusterSpec {
        dir: dir.join("pg").join(gen_name),
        socket_dir: dir.join("pgsock").join(gen_name),
        log: dir.join("logs").join(format!("{gen_name}.log")),
        port: Network::Host.free_port().unwrap(),
        superuser_password: secret("super"),
        database: database.to_owned(),
        app_password: secret("app"),
        archive: None,
    }
}

fn system() -> PgSystem {
    PgSystem::find().expect("PostgreSQL is installed (.ci/run installs it)")
}

async fn init(dir: &std::path::Path, gen_name: &str, database: &str) -> Cluster {
    Cluster::init(
        system(),
        spec(dir, gen_name, database),
        &Network::Host,
        &Quiet,
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_lets_in_its_own_role_only_to_its_own_database() {
    let dir = tempdir();
    let a = init(dir.path(), "g1", "alpha").await;
    let b = init(dir.path(), "g1b", "beta").await;
    assert!(a.is_running().await);

    let client = connect(&a.app_url()).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("alpha".into(), "alpha".into())
    );
    // The app owns its schema: it can make tables.
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();

    // Another environment's credentials do not open this cluster, over TCP or the socket.
    let other = a.app_url().replace("alpha:", "beta:").replace(
        &percent(&a.spec.app_password),
        &percent(&b.spec.app_password),
    );
    let e = connect(&other).await.unwrap_err();
    assert!(
        message(&e).contains("password authentication failed"),
        "{e}"
    );
    let e = connect(&a.socket_url("beta", &b.spec.app_password))
        .await
        .unwrap_err();
    assert!(
        message(&e).contains("password authentication failed"),
        "{e}"
    );
    // A wrong password for the right role neither.
    assert!(connect(&a.socket_url("alpha", "guess")).await.is_err());
    // Nor the superuser with the app's password.
    assert!(
        connect(&a.socket_url(SUPERUSER, &a.spec.app_password))
            .await
            .is_err()
    );

    // The role cannot reach the cluster's other databases.
    for db in ["postgres", "template1"] {
        let url = format!("{}/{db}", a.app_url().rsplit_once('/').unwrap().0);
        let e = connect(&url).await.unwrap_err();
        assert!(
            message(&e).contains("permission denied for database"),
            "{db}: {e:?}"
        );
    }

    // The socket URL works as well, with the superuser's password for Turnout.
    let su = connect(&a.socket_url(SUPERUSER, &a.spec.superuser_password))
        .await
        .unwrap();
    su.query_one("SELECT 1", &[]).await.unwrap();
    drop(su);
    assert!(a.size().await.unwrap() > 1_000_000);

    // Stop and start again (a daemon restart); remove leaves nothing.
    drop(client);
    a.stop().await.unwrap();
    assert!(!a.is_running().await);
    assert!(connect(&a.app_url()).await.is_err());
    a.start(&Network::Host).await.unwrap();
    a.start(&Network::Host).await.unwrap();
    let client = connect(&a.app_url()).await.unwrap();
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    drop(client);
    a.remove().await.unwrap();
    b.remove().await.unwrap();
    assert!(!a.spec.dir.exists() && !a.spec.socket_dir.exists() && !b.spec.dir.exists());

    // A name or directory already taken is refused before anything is made.
    let taken = spec(dir.path(), "g1", "turnout");
    let e = Cluster::init(
        system(),
        taken,
        &Network::Host,
        &Quiet,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, DataError::Invalid(m) if m.contains("reserved")),
        "{e}"
    );
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Default)]
struct Recorded {
    bytes: Mutex<Vec<(u64, Option<u64>)>>,
    lines: Mutex<Vec<String>>,
    tables: Mutex<Vec<(String, u64)>>,
    cancel_on_bytes: Option<CancellationToken>,
}

impl Progress for Recorded {
    fn line(&self, text: &str) {
        self.lines.lock().unwrap().push(text.to_owned());
    }
    fn bytes(&self, done: u64, total: Option<u64>) {
        self.bytes.lock().unwrap().push((done, total));
        if let Some(cancel) = &self.cancel_on_bytes {
            cancel.cancel();
        }
    }
    fn table_masked(&self, table: &str, rows: u64) {
        self.tables.lock().unwrap().push((table.to_owned(), rows));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_under_writes_is_consistent_renamed_and_has_side_effects_off() {
    let dir = tempdir();
    let source = init(dir.path(), "g1", "shop").await;
    source
        .run_sql(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, note text);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, order_id bigint);
             INSERT INTO orders (note) SELECT 'n' || g FROM generate_series(1, 20000) g;
             INSERT INTO ledger (order_id) SELECT id FROM orders;",
        )
        .await
        .unwrap();
    source
        .attach("reporting", "reporting-pw", Access::Read)
        .await
        .unwrap();
    // A subscription (as Turnout's superuser: only superusers make them), enabled on the source.
    let su = connect(&source.socket_url(SUPERUSER, &source.spec.superuser_password))
        .await
        .unwrap();
    su.batch_execute(
        "CREATE TABLE replica (x int);
         CREATE SUBSCRIPTION upstream CONNECTION 'host=127.0.0.1 port=1 dbname=none' PUBLICATION p WITH (connect = false);
         ALTER SUBSCRIPTION upstream ENABLE;",
    )
    .await
    .unwrap();

    // A client of the source writes two tables in one transaction, all through the clone.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (url, stop, written) = (source.app_url(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut client = connect(&url).await.map_err(|e| e.to_string())?;
            while !stop.load(Ordering::Relaxed) {
                let tx = client.transaction().await.map_err(|e| e.to_string())?;
                tx.batch_execute(
                    "WITH o AS (INSERT INTO orders (note) VALUES ('live') RETURNING id)
                     INSERT INTO ledger (order_id) SELECT id FROM o",
                )
                .await
                .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(client)
        })
    };
    while written.load(Ordering::Relaxed) < 20 {
        tokio::task::yield_now().await;
    }
    let before = written.load(Ordering::Relaxed);
    let progress = Recorded::default();
    let copy = Cluster::clone_from(
        &source,
        spec(dir.path(), "g2", "shop_copy"),
        &Network::Host,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let during = written.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let source_client = writer
        .await
        .unwrap()
        .expect("the source's writer saw no error");
    assert!(during > 0, "the source took writes during the clone");
    // Still the same session: never disconnected.
    source_client.query_one("SELECT 1", &[]).await.unwrap();
    assert!(
        !progress.bytes.lock().unwrap().is_empty(),
        "pg_basebackup reported progress"
    );

    // Consistent: both tables of every committed transaction, none half.
    let c = connect(&copy.app_url()).await.unwrap();
    let row = c
        .query_one("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM ledger), current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    let (orders, ledger): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(orders, ledger);
    assert!(orders >= 20000 + i64::try_from(before).unwrap());
    assert_eq!(
        (row.get::<_, String>(2), row.get::<_, String>(3)),
        ("shop_copy".into(), "shop_copy".into())
    );
    // The copy keeps taking writes on its own.
    c.batch_execute("INSERT INTO orders (note) VALUES ('copy')")
        .await
        .unwrap();

    // New passwords only: the source's no longer open the copy.
    let old_app = copy.socket_url("shop_copy", &source.spec.app_password);
    assert!(connect(&old_app).await.is_err());
    assert!(
        connect(&copy.socket_url(SUPERUSER, &source.spec.superuser_password))
            .await
            .is_err()
    );
    assert!(
        connect(&copy.socket_url(SUPERUSER, &copy.spec.superuser_password))
            .await
            .is_ok()
    );
    // The source's attached role is gone from the copy (and still works on the source).
    assert!(
        connect(&copy.socket_url("reporting", "reporting-pw"))
            .await
            .is_err()
    );
    assert!(
        connect(&source.socket_url("reporting", "reporting-pw"))
            .await
            .is_ok()
    );

    // Side effects off: the copy's subscription is disabled and holds no slot; the source's
    // is untouched.
    let csu = connect(&copy.socket_url(SUPERUSER, &copy.spec.superuser_password))
        .await
        .unwrap();
    let sub = csu
        .query_one(
            "SELECT subenabled, subslotname::text FROM pg_subscription WHERE subname = 'upstream'",
            &[],
        )
        .await
        .unwrap();
    assert!(!sub.get::<_, bool>(0));
    assert_eq!(sub.get::<_, Option<String>>(1), None);
    let sub = su
        .query_one(
            "SELECT subenabled, subslotname::text FROM pg_subscription WHERE subname = 'upstream'",
            &[],
        )
        .await
        .unwrap();
    assert!(sub.get::<_, bool>(0));
    assert_eq!(sub.get::<_, Option<String>>(1).as_deref(), Some("upstream"));
    assert!(source.is_running().await);

    drop((c, csu, su, source_client));
    copy.remove().await.unwrap();
    source.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_clone_leaves_no_directory() {
    let dir = tempdir();
    let source = init(dir.path(), "g1", "big").await;
    source
        .run_sql(
            "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g",
        )
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let progress = Recorded {
        cancel_on_bytes: Some(cancel.clone()),
        ..Recorded::default()
    };
    let target = spec(dir.path(), "g2", "big");
    let e = Cluster::clone_from(&source, target.clone(), &Network::Host, &progress, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, DataError::Cancelled), "{e}");
    assert!(!target.dir.exists(), "no data directory");
    let partial = format!("{}.partial", target.dir.display());
    assert!(!std::path::Path::new(&partial).exists(), "no partial copy");
    assert!(!target.socket_dir.exists(), "no socket directory");
    // The source is untouched.
    let c = connect(&source.app_url()).await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM filler", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 300000);
    drop(c);
    source.remove().await.unwrap();
}

fn rules(list: &[(&str, &str, MaskRule)]) -> MaskRules {
    let mut rules = MaskRules::default();
    for (table, column, rule) in list {
        rules
            .tables
            .entry((*table).to_owned())
            .or_default()
            .insert((*column).to_owned(), *rule);
    }
    rules
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_is_strict_deterministic_and_matches_the_rust_formula() {
    let dir = tempdir();
    let db = init(dir.path(), "g1", "crm").await;
    let emails = [
        "ada@example.com",
        "grace@example.org",
        "o'brien@x.ie",
        "ünïcode@ex.com",
    ];
    let texts = [
        "hello world",
        "  one\ttwo\nthree  four ",
        "",
        "x",
        "a b c d e f g h i j k l m n o p q r s t",
    ];
    let mut seed = String::from(
        "CREATE TABLE customers (id int PRIMARY KEY, email text, name varchar(80), phone text, bio text, secret text, age int);
         CREATE TABLE orders (id int PRIMARY KEY, customer_email text, note text);
         CREATE SCHEMA audit; CREATE TABLE audit.events (id int, who text);\n",
    );
    for (i, email) in emails.iter().enumerate() {
        let q = email.replace('\'', "''");
        let text = texts[i % texts.len()];
        seed.push_str(&format!(
            "INSERT INTO customers VALUES ({i}, '{q}', 'Name {i}', '+44 {i}', '{}', 's{i}', {i});
             INSERT INTO orders VALUES ({i}, '{q}', 'note {i}');
             INSERT INTO audit.events VALUES ({i}, '{q}');\n",
            text.replace('\'', "''")
        ));
    }
    seed.push_str("INSERT INTO customers VALUES (99, NULL, NULL, NULL, 'a b', NULL, NULL);");
    db.run_sql(&seed).await.unwrap();
    let key = "masking-key-1";

    let mut r = rules(&[
        ("customers", "id", MaskRule::Keep),
        ("customers", "email", MaskRule::Fake(FakeKind::Email)),
        ("customers", "name", MaskRule::Fake(FakeKind::Name)),
        ("customers", "phone", MaskRule::Fake(FakeKind::Phone)),
        ("customers", "bio", MaskRule::Fake(FakeKind::Text)),
        ("customers", "secret", MaskRule::Hash),
        ("customers", "age", MaskRule::Null),
        ("orders", "id", MaskRule::Keep),
        ("orders", "customer_email", MaskRule::Fake(FakeKind::Email)),
        ("audit.events", "*", MaskRule::Keep),
    ]);
    // orders.note has no rule: strict masking names it and changes nothing.
    let e = db
        .mask(&r, key, &Quiet, &CancellationToken::new())
        .await
        .unwrap_err();
    match &e {
        DataError::Unmasked(list) => {
            assert_eq!(list.len(), 1, "{e}");
            assert_eq!(
                (list[0].table.as_str(), list[0].column.as_str()),
                ("orders", "note")
            );
        }
        other => panic!("expected unmasked columns, got {other}"),
    }
    assert!(e.to_string().contains("orders.note"), "{e}");
    let c = connect(&db.app_url()).await.unwrap();
    let email: String = c
        .query_one("SELECT email FROM customers WHERE id = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, emails[0]);

    // A fake rule for a number is a clear error.
    let mut bad = r.clone();
    bad.tables
        .get_mut("orders")
        .unwrap()
        .insert("note".into(), MaskRule::Keep);
    bad.tables
        .get_mut("customers")
        .unwrap()
        .insert("age".into(), MaskRule::Fake(FakeKind::Name));
    let e = db
        .mask(&bad, key, &Quiet, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DataError::Invalid(m) if m.contains("customers.age")),
        "{e}"
    );

    r.tables
        .get_mut("orders")
        .unwrap()
        .insert("note".into(), MaskRule::Keep);
    let progress = Recorded::default();
    let report = db
        .mask(&r, key, &progress, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        report.tables,
        [("customers".to_owned(), 5), ("orders".to_owned(), 4)]
    );
    assert_eq!(*progress.tables.lock().unwrap(), report.tables);

    let rows = c
        .query("SELECT c.id, c.email, o.customer_email, c.name, c.phone, c.bio, c.secret, c.age FROM customers c LEFT JOIN orders o USING (id) ORDER BY c.id", &[])
        .await
        .unwrap();
    for row in &rows {
        let id: i32 = row.get(0);
        if id == 99 {
            // NULL stays NULL.
            for i in 1..7 {
                if i != 5 {
                    assert_eq!(row.get::<_, Option<String>>(i), None, "column {i}");
                }
            }
            continue;
        }
        let i = usize::try_from(id).unwrap();
        let email = mask::pseudonym(MaskRule::Fake(FakeKind::Email), key, emails[i]);
        // The same value gets the same pseudonym in both tables: joins still work.
        assert_eq!(row.get::<_, Option<String>>(1), email);
        assert_eq!(row.get::<_, Option<String>>(2), email);
        assert_eq!(
            row.get::<_, Option<String>>(3),
            mask::pseudonym(MaskRule::Fake(FakeKind::Name), key, &format!("Name {i}"))
        );
        assert_eq!(
            row.get::<_, Option<String>>(4),
            mask::pseudonym(MaskRule::Fake(FakeKind::Phone), key, &format!("+44 {i}"))
        );
        assert_eq!(
            row.get::<_, Option<String>>(5),
            mask::pseudonym(MaskRule::Fake(FakeKind::Text), key, texts[i % texts.len()])
        );
        assert_eq!(
            row.get::<_, Option<String>>(6),
            mask::pseudonym(MaskRule::Hash, key, &format!("s{i}"))
        );
        assert_eq!(row.get::<_, Option<i32>>(7), None);
    }
    let row = rows.iter().find(|r| r.get::<_, i32>(0) == 99).unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(5),
        mask::pseudonym(MaskRule::Fake(FakeKind::Text), key, "a b")
    );
    // Kept columns are kept.
    let who: String = c
        .query_one("SELECT who FROM audit.events WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, emails[1]);
    drop(c);
    db.remove().await.unwrap();
}

async fn fails_with_permission_denied(client: &tokio_postgres::Client, sql: &str) {
    let e = client.batch_execute(sql).await.expect_err(sql);
    assert!(
        message(&e).contains("permission denied") || message(&e).contains("must be owner"),
        "{sql}: {}",
        message(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_modes_are_enforced_by_the_database() {
    let dir = tempdir();
    let db = init(dir.path(), "g1", "books").await;
    db.run_sql(
        "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('a'), ('b');",
    )
    .await
    .unwrap();
    db.attach("r", "r-pw", Access::Read).await.unwrap();
    db.attach("ap", "ap-pw", Access::Append).await.unwrap();
    db.attach("rw", "rw-pw", Access::ReadWrite).await.unwrap();
    // A table the app makes after the attachments is covered too.
    db.run_sql("CREATE TABLE later (id serial, v text); INSERT INTO later (v) VALUES ('x');")
        .await
        .unwrap();

    let read = connect(&db.socket_url("r", "r-pw")).await.unwrap();
    for table in ["t", "later"] {
        read.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
        fails_with_permission_denied(&read, &format!("INSERT INTO {table} (v) VALUES ('r')")).await;
        fails_with_permission_denied(&read, &format!("UPDATE {table} SET v = 'r'")).await;
        fails_with_permission_denied(&read, &format!("DELETE FROM {table}")).await;
    }
    fails_with_permission_denied(&read, "CREATE TABLE mine (x int)").await;

    let append = connect(&db.socket_url("ap", "ap-pw")).await.unwrap();
    for table in ["t", "later"] {
        append
            .batch_execute(&format!("INSERT INTO {table} (v) VALUES ('ap')"))
            .await
            .unwrap();
        append
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
        fails_with_permission_denied(&append, &format!("UPDATE {table} SET v = 'ap'")).await;
        fails_with_permission_denied(&append, &format!("DELETE FROM {table}")).await;
    }

    let rw = connect(&db.socket_url("rw", "rw-pw")).await.unwrap();
    for table in ["t", "later"] {
        rw.batch_execute(&format!(
            "INSERT INTO {table} (v) VALUES ('rw'); UPDATE {table} SET v = 'rw2' WHERE v = 'rw'; DELETE FROM {table} WHERE v = 'rw2'"
        ))
        .await
        .unwrap();
    }
    fails_with_permission_denied(&rw, "DROP TABLE t").await;

    // No attached role reaches another database of the cluster.
    let e = connect(
        &db.socket_url("rw", "rw-pw")
            .replace("/books?", "/postgres?"),
    )
    .await
    .unwrap_err();
    assert!(
        message(&e).contains("permission denied for database"),
        "{e}"
    );

    // Attaching again replaces the grants; detaching removes the role.
    drop((read, append, rw));
    db.attach("r", "r-pw2", Access::ReadWrite).await.unwrap();
    db.attach("rw", "rw-pw", Access::Read).await.unwrap();
    assert!(connect(&db.socket_url("r", "r-pw")).await.is_err());
    let r2 = connect(&db.socket_url("r", "r-pw2")).await.unwrap();
    r2.batch_execute("UPDATE t SET v = 'now allowed'")
        .await
        .unwrap();
    let rw2 = connect(&db.socket_url("rw", "rw-pw")).await.unwrap();
    fails_with_permission_denied(&rw2, "UPDATE t SET v = 'no longer'").await;
    drop((r2, rw2));
    db.detach("r").await.unwrap();
    db.detach("r").await.unwrap();
    assert!(connect(&db.socket_url("r", "r-pw2")).await.is_err());
    // The environment's own role and the superuser cannot be attached roles.
    for name in ["books", SUPERUSER, "pg_monitor"] {
        let e = db.attach(name, "x", Access::Read).await.unwrap_err();
        assert!(matches!(e, DataError::Invalid(_)), "{name}: {e}");
    }
    db.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_in_a_network_namespace_listens_only_there() {
    let dir = tempdir();
    let provider = turnout_netns::Provider::detect();
    let name = format!("turnout-pgtest-{}", std::process::id());
    let network = match &provider {
        Ok(provider) => Network::Namespace(Arc::new(provider.create(&name).await.unwrap())),
        Err(reason) => {
            eprintln!("no network namespace ({reason}): the cluster runs on the host's network");
            Network::Host
        }
    };
    if let Network::Namespace(_) = &network {
        // The namespace's loopback is down until brought up, as Turnout's provider does it.
        let up = std::process::Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
    }
    let spec = spec(dir.path(), "g1", "netapp");
    let port = spec.port;
    let cluster = Cluster::init(system(), spec, &network, &Quiet, &CancellationToken::new())
        .await
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // From inside the environment's network, over TCP, with the app's URL.
    let stream = network.connect(addr).await.unwrap();
    let config: tokio_postgres::Config = cluster.app_url().parse().unwrap();
    let (client, connection) = config.connect_raw(stream, NoTls).await.unwrap();
    tokio::spawn(connection);
    let db: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db, "netapp");
    drop(client);
    // Turnout's socket works from anywhere.
    connect(&cluster.socket_url(SUPERUSER, &cluster.spec.superuser_password))
        .await
        .unwrap();
    if let Network::Namespace(_) = &network {
        // The host's own loopback has nothing on that port: no other environment reaches it.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
    cluster.remove().await.unwrap();
    if let Ok(provider) = &provider {
        provider.remove(&name).await.unwrap();
    }
}
