//! One conformance suite for every state store, against real servers: a private
//! `redis-server` and a private PostgreSQL cluster on free ports, started by the test and
//! stopped when it ends (installed by `scripts/sidecar-deps.sh`). Plus Dapr layout interop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use daprs_sidecar::api::{DeleteItem, SaveItem, TxOp};
use daprs_sidecar::components::manifest::parse_component;
use daprs_sidecar::components::registry::Registry;
use daprs_sidecar::runtime::{Runtime, Settings};
use daprs_sidecar::state::{Concurrency, Consistency};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Server {
    child: Child,
    port: u16,
    /// PostgreSQL's data directory: stopped with `pg_ctl` (the server is not our child when
    /// started through `runuser`).
    pg_data: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(data) = &self.pg_data {
            let _ = pg_command("pg_ctl")
                .args(["-m", "immediate", "-D"])
                .arg(data)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Server {
    redis_with(&[])
}

/// A `redis-server` with extra arguments (for example `--replicaof`).
fn redis_with(extra: &[&str]) -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect(
            "redis-server is missing: run scripts/sidecar-deps.sh (apt-get install redis-server)",
        );
    wait_for_port(port, "redis-server");
    Server {
        child,
        port,
        pg_data: None,
        _dir: dir,
    }
}

fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("DAPRS_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is missing: run scripts/sidecar-deps.sh (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb: run scripts/sidecar-deps.sh")
}

/// Runs a PostgreSQL command, as the `postgres` user when we are root (PostgreSQL refuses
/// to run as root).
fn pg_command(bin: &str) -> Command {
    let path = pg_bin().join(bin);
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn postgres() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.path())
        .status();
    let status = pg_command("initdb")
        .args(["-U", "postgres", "--auth=trust", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "initdb failed");
    let child = pg_command("postgres")
        .arg("-D")
        .arg(&data)
        .args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, "postgres");
    // The port opens before the server accepts sessions ("the database system is starting
    // up"): wait until pg_isready says it accepts connections.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = pg_command("pg_isready")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL on port {port} did not accept connections within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Server {
        child,
        port,
        pg_data: Some(data),
        _dir: dir,
    }
}

async fn runtime(component: &str) -> Arc<Runtime> {
    let manifest = parse_component(
        std::path::Path::new("test.yaml"),
        serde_yaml::from_str(component).unwrap(),
    )
    .unwrap();
    let rt = Runtime::new(
        Settings {
            app_id: "storeapp".into(),
            max_body_bytes: 1 << 20,
            ..Settings::default()
        },
        Registry::builtin(),
    );
    rt.load(vec![manifest]).await.unwrap();
    rt
}

fn item(key: &str, value: &str, etag: Option<&str>) -> SaveItem {
    SaveItem {
        key: key.into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        etag: etag.map(str::to_owned),
        metadata: BTreeMap::new(),
        concurrency: Concurrency::LastWrite,
        consistency: Consistency::Eventual,
    }
}

fn del(key: &str, etag: Option<&str>) -> DeleteItem {
    DeleteItem {
        key: key.into(),
        etag: etag.map(str::to_owned),
        metadata: BTreeMap::new(),
        concurrency: Concurrency::LastWrite,
        consistency: Consistency::Eventual,
    }
}

async fn get(rt: &Runtime, key: &str) -> Option<daprs_sidecar::state::Item> {
    rt.get_state("s", key, Consistency::Eventual, &BTreeMap::new())
        .await
        .unwrap()
}

/// The behaviour every store must share.
async fn conformance(rt: &Runtime, numeric_etags: bool) {
    rt.save_state("s", vec![item("k", r#"{"n":1}"#, None)])
        .await
        .unwrap();
    let first = get(rt, "k").await.unwrap();
    assert_eq!(first.data, r#"{"n":1}"#);
    let etag = first.etag.unwrap();

    let e = rt
        .save_state(
            "s",
            vec![item(
                "k",
                "2",
                Some(if numeric_etags { "999" } else { "zzz" }),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 409, "{e}");
    if numeric_etags {
        let e = rt
            .save_state("s", vec![item("k", "2", Some("x"))])
            .await
            .unwrap_err();
        assert_eq!(e.status, 400, "a non-numeric ETag is invalid: {e}");
    }
    rt.save_state("s", vec![item("k", "2", Some(&etag))])
        .await
        .unwrap();
    let e = rt
        .save_state("s", vec![item("k", "3", Some(&etag))])
        .await
        .unwrap_err();
    assert_eq!(e.status, 409, "an ETag is good for one write");
    let mut first_write = item("k", "4", None);
    first_write.concurrency = Concurrency::FirstWrite;
    assert_eq!(
        rt.save_state("s", vec![first_write.clone()])
            .await
            .unwrap_err()
            .status,
        409
    );
    first_write.key = "fresh".into();
    rt.save_state("s", vec![first_write]).await.unwrap();

    // Binary (non-JSON) values come back byte for byte.
    rt.save_state("s", vec![item("raw", "not json \u{1}", None)])
        .await
        .unwrap();
    assert_eq!(get(rt, "raw").await.unwrap().data, "not json \u{1}");

    // Transactions: all or nothing.
    let bad = vec![
        TxOp::Upsert(item("t1", "1", None)),
        TxOp::Delete(del("k", Some(if numeric_etags { "12345" } else { "nope" }))),
    ];
    let e = rt
        .transact_state("s", bad, &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.code, "ERR_STATE_TRANSACTION");
    assert!(
        get(rt, "t1").await.is_none(),
        "nothing of a failed transaction is applied"
    );
    let etag = get(rt, "k").await.unwrap().etag.unwrap();
    rt.transact_state(
        "s",
        vec![
            TxOp::Upsert(item("t1", "1", None)),
            TxOp::Delete(del("k", Some(&etag))),
        ],
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    assert!(get(rt, "k").await.is_none());
    assert_eq!(get(rt, "t1").await.unwrap().data, "1");

    let bulk = rt
        .bulk_get_state(
            "s",
            vec!["t1".into(), "gone".into(), "fresh".into()],
            2,
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(bulk[0].item.as_ref().unwrap().data, "1");
    assert!(bulk[1].item.is_none());
    assert_eq!(bulk[2].key, "fresh");

    let mut ttl = item("ttl", "1", None);
    ttl.metadata.insert("ttlInSeconds".into(), "1".into());
    rt.save_state("s", vec![ttl]).await.unwrap();
    let live = get(rt, "ttl").await.unwrap();
    assert!(
        live.metadata.contains_key("ttlExpireTime"),
        "{:?}",
        live.metadata
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(get(rt, "ttl").await.is_none(), "expired");

    rt.delete_state("s", del("t1", None)).await.unwrap();
    assert!(get(rt, "t1").await.is_none());
}

#[tokio::test]
async fn in_memory_conforms() {
    let rt = runtime("kind: Component\nmetadata: {name: s}\nspec: {type: state.in-memory}\n").await;
    conformance(&rt, false).await;
}

#[tokio::test]
async fn redis_conforms_and_shares_daprs_layout() {
    let server = redis();
    let rt = runtime(&format!(
        "kind: Component\nmetadata: {{name: s}}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - {{name: redisHost, value: 'localhost:{}'}}\n  - {{name: redisPassword, value: ''}}\n",
        server.port
    ))
    .await;
    conformance(&rt, true).await;

    // The layout Dapr uses: `<appid>||<key>` → hash {data, version}.
    rt.save_state("s", vec![item("layout", r#""v""#, None)])
        .await
        .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &server.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["HGET", "storeapp||layout", "data"]).trim(), r#""v""#);
    assert_eq!(cli(&["HGET", "storeapp||layout", "version"]).trim(), "1");
    // A value written the way Dapr writes it is read back with its version as the ETag.
    cli(&[
        "HSET",
        "storeapp||fromdapr",
        "data",
        r#"{"x":1}"#,
        "version",
        "7",
    ]);
    let item = get(&rt, "fromdapr").await.unwrap();
    assert_eq!(
        (item.data.as_ref(), item.etag.as_deref()),
        (br#"{"x":1}"#.as_ref(), Some("7"))
    );
}

#[tokio::test]
async fn postgres_conforms_creates_its_table_and_queries() {
    let server = postgres();
    let rt = runtime(&format!(
        "kind: Component\nmetadata: {{name: s}}\nspec:\n  type: state.postgresql\n  version: v1\n  metadata:\n  - name: connectionString\n    value: 'host=127.0.0.1 port={} user=postgres dbname=postgres'\n",
        server.port
    ))
    .await;
    conformance(&rt, true).await;

    rt.save_state(
        "s",
        vec![
            item("p1", r#"{"city":"Oslo"}"#, None),
            item("p2", r#"{"city":"Rome"}"#, None),
        ],
    )
    .await
    .unwrap();
    let result = rt
        .query_state("s", br#"{"filter":{"EQ":{"city":"Rome"}}}"#)
        .await
        .unwrap();
    assert_eq!(result.results.len(), 1);
    assert_eq!(result.results[0].0, "p2");

    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            server.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'state' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "key",
            "value",
            "isbinary",
            "insertdate",
            "updatedate",
            "expiredate"
        ]
    );
    let row = client
        .query_one(
            "SELECT value->>'city' FROM state WHERE key = 'storeapp||p1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Oslo");
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// `cmdstat_wait:calls=<n>` of `INFO commandstats`: how many `WAIT`s the server ran.
fn wait_calls(port: u16) -> u64 {
    redis_cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

async fn http(rt: &Arc<Runtime>, method: &str, uri: &str, body: &str) -> (u16, String) {
    use tower::ServiceExt;
    let response = daprs_sidecar::http::router(rt.clone())
        .oneshot(
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(axum::body::Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn redis_component(port: u16) -> String {
    format!(
        "kind: Component\nmetadata: {{name: s}}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - {{name: redisHost, value: 'localhost:{port}'}}\n",
    )
}

#[tokio::test]
async fn redis_strong_writes_wait_for_replicas() {
    let primary = redis_with(&["--repl-diskless-sync-delay", "0"]);
    let replica = redis_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Connected and past the initial sync (`state=online`), so it can acknowledge writes.
    while !redis_cli(primary.port, &["INFO", "replication"]).contains("state=online") {
        assert!(Instant::now() < deadline, "the replica did not sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = runtime(&redis_component(primary.port)).await;

    // An eventual write sends no WAIT.
    let before = wait_calls(primary.port);
    let (status, body) = http(&rt, "POST", "/v1.0/state/s", r#"[{"key":"e","value":1}]"#).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(wait_calls(primary.port), before);

    // A strong write waits for the replica: once daprd answers, the replica has it.
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/s",
        r#"[{"key":"k","value":{"n":1},"options":{"consistency":"strong"}}]"#,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        wait_calls(primary.port),
        before + 1,
        "one WAIT per strong write"
    );
    assert_eq!(
        redis_cli(replica.port, &["HGET", "storeapp||k", "data"]).trim(),
        r#"{"n":1}"#,
        "the replica acknowledged the write before daprd answered"
    );
    let (status, body) = http(&rt, "GET", "/v1.0/state/s/k?consistency=strong", "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));

    // Strong deletes and transactions wait too (beyond Dapr, which waits on saves only).
    let (status, _) = http(&rt, "DELETE", "/v1.0/state/s/k?consistency=strong", "").await;
    assert_eq!(status, 204);
    assert_eq!(wait_calls(primary.port), before + 2);
    assert_eq!(
        redis_cli(replica.port, &["EXISTS", "storeapp||k"]).trim(),
        "0"
    );
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/s/transaction",
        r#"{"operations":[{"operation":"upsert","request":{"key":"t","value":2,"options":{"consistency":"strong"}}}]}"#,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(wait_calls(primary.port), before + 3);
    assert_eq!(
        redis_cli(replica.port, &["HGET", "storeapp||t", "data"]).trim(),
        "2"
    );
}

#[tokio::test]
async fn redis_without_replicas_sends_no_wait_and_bad_options_get_dapr_errors() {
    let server = redis();
    let rt = runtime(&redis_component(server.port)).await;
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/s",
        r#"[{"key":"k","value":1,"options":{"consistency":"strong","concurrency":"first-write"}}]"#,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        wait_calls(server.port),
        0,
        "no replicas, nothing to wait for"
    );

    let error = |body: &str| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        (
            v["errorCode"].as_str().unwrap().to_owned(),
            v["message"].as_str().unwrap().to_owned(),
        )
    };
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/s",
        r#"[{"key":"k","value":1,"options":{"consistency":"linearizable"}}]"#,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    let (code, message) = error(&body);
    assert_eq!(code, "ERR_STATE_SAVE");
    assert!(
        message.starts_with(
            "failed saving state in state store s: unrecognized consistency model 'linearizable'"
        ),
        "{message}"
    );
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/s",
        r#"[{"key":"k","value":1,"options":{"concurrency":"most-write"}}]"#,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error(&body)
            .1
            .contains("unrecognized concurrency model 'most-write'"),
        "{body}"
    );
    let (status, body) = http(&rt, "DELETE", "/v1.0/state/s/k?concurrency=x", "").await;
    assert_eq!(status, 500, "{body}");
    let (code, message) = error(&body);
    assert_eq!(code, "ERR_STATE_DELETE");
    assert!(
        message.starts_with("failed deleting state with key k: unrecognized concurrency model 'x'"),
        "{message}"
    );
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/s/transaction",
        r#"{"operations":[{"operation":"delete","request":{"key":"k","options":{"consistency":"x"}}}]}"#,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(error(&body).0, "ERR_STATE_TRANSACTION");
    assert_eq!(
        redis_cli(server.port, &["HGET", "storeapp||k", "data"]).trim(),
        "1",
        "nothing was deleted"
    );
    // An unknown store is reported as such, before the option.
    let (status, body) = http(
        &rt,
        "POST",
        "/v1.0/state/nope",
        r#"[{"key":"k","value":1,"options":{"consistency":"x"}}]"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error(&body).0, "ERR_STATE_STORE_NOT_FOUND");
    // Reads ignore the consistency, as Dapr's stores do.
    let (status, body) = http(&rt, "GET", "/v1.0/state/s/k?consistency=x", "").await;
    assert_eq!((status, body.as_str()), (200, "1"));
}
