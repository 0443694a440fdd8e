//! A rolling restart behind a load balancer loses no request.
//!
//! Three replicas of the real binary share one PostgreSQL database behind nginx, which runs as
//! this test's own process on loopback. An endpoint controller does what Kubernetes does: it
//! keeps in nginx's upstream only the replicas whose `/readyz` returns 200, and reloads nginx
//! when that set changes. Under steady load of reads and creates, each replica in turn gets
//! SIGTERM, exits, and is replaced by a new one on a new port. The test passes only when no
//! request failed and every user created with a 201 is in the database.
//!
//! nginx does not retry (`proxy_next_upstream off`), so a replica that stopped listening, or
//! closed a connection mid-request, while still in the upstream would show as a 502. The load
//! client opens a new connection for each request, because at a reload nginx's old workers
//! close idle client keep-alive connections, which no replica can prevent.
//!
//! Without nginx the test prints one line and passes, and PEREGRINE_REQUIRE_NGINX=1 makes that
//! a failure. PostgreSQL is TEST_DATABASE_URL (a superuser URL) or a throwaway cluster started
//! from the server binaries on this machine; without either, likewise, unless
//! PEREGRINE_REQUIRE_POSTGRES=1. With PEREGRINE_TEST_PGBOUNCER=1 the replicas connect through
//! PgBouncer in transaction pooling mode, with DB_PREPARED_STATEMENTS=false.

mod nginx;
mod process;
mod replica;

// The API tests' PostgreSQL harness, of which this test uses the shared server only.
#[allow(dead_code)]
#[path = "../api/harness/postgres.rs"]
mod postgres;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use nginx::{Nginx, find_nginx};
use replica::Replica;

/// Replicas behind nginx outside a replacement, as the HPA's minimum in deploy/k8s.
const REPLICAS: usize = 3;
/// How often the controller probes `/readyz` of every replica.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Maximum time a probe may take before the replica counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A replica keeps serving this long after SIGTERM. It must cover one probe interval, a probe
/// timeout and an nginx reload, with room for a loaded machine.
const DRAIN_DELAY: &str = "3s";
/// Maximum wait for a replica to exit after SIGTERM: the drain delay plus SHUTDOWN_TIMEOUT
/// (10s) plus slack.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent load workers, each with a pause between its requests, so the load is steady
/// and leaves CPU for the replicas on a two-core machine.
const WORKERS: u64 = 4;
const REQUEST_PAUSE: Duration = Duration::from_millis(5);
/// Steady load before the first and after each replacement.
const SETTLE: Duration = Duration::from_secs(1);
/// Bounds on the whole load run, whatever happens to the replacements.
const LOAD_DEADLINE: Duration = Duration::from_secs(120);
const MAX_REQUESTS: u64 = 200_000;
/// Fewer requests than this over the run would make the test pass without testing anything.
const MIN_REQUESTS: u64 = 500;
/// Ids far above anything the test creates, read to check the expected 404 path.
const MISSING_ID_BASE: u64 = 9_000_000_000_000;
/// Time limit of the whole test, so that a hang fails it.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Failed requests whose details the failure message shows.
const MAX_FAILURE_LINES: usize = 20;

#[test]
fn rolling_restart_loses_no_request() {
    let Some(nginx) = find_nginx() else {
        assert!(
            std::env::var("PEREGRINE_REQUIRE_NGINX").as_deref() != Ok("1"),
            "nginx is required (PEREGRINE_REQUIRE_NGINX=1) but not installed"
        );
        eprintln!("skipping the rolling-restart test: nginx is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("create a temporary directory");
    // nginx's workers may run as the user `nobody`.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("open the temporary directory to other users");
    // Without a server this prints why and returns None, or fails with
    // PEREGRINE_REQUIRE_POSTGRES=1.
    let Some(postgres) = postgres::server() else {
        return;
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the async runtime");
    // Processes start from this thread only: their parent-death signal fires when the thread
    // that forked them exits, and a runtime's worker threads come and go.
    runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, run(&nginx, postgres, &dir))
            .await
            .expect("the rolling restart did not finish within its time limit");
    });
}

async fn run(nginx_binary: &Path, postgres: &postgres::Server, dir: &TempDir) {
    let database = postgres.create_database_named().await;
    let database_url = postgres.client_url_for(&database);
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(Replica::start(dir.path(), &database_url));
    }
    for replica in &replicas {
        replica.wait_ready().await;
    }
    let addresses: Vec<SocketAddr> = replicas.iter().map(|r| r.address).collect();
    let nginx = Arc::new(Nginx::start(nginx_binary, dir.path(), &addresses).await);

    let members = Arc::new(Mutex::new(addresses.clone()));
    let published = Arc::new(Mutex::new(addresses));
    let stop = Arc::new(AtomicBool::new(false));
    let controller = tokio::spawn(control_endpoints(
        Arc::clone(&nginx),
        Arc::clone(&members),
        Arc::clone(&published),
        Arc::clone(&stop),
    ));
    let load = Arc::new(Load::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(run_worker(
                worker,
                nginx.url(),
                Arc::clone(&load),
                Arc::clone(&stop),
            ))
        })
        .collect();

    tokio::time::sleep(SETTLE).await;
    let mut exits = Vec::new();
    let mut new_addresses = Vec::new();
    for index in 0..REPLICAS {
        let before = load.total();
        let mut old = replicas.remove(0);
        old.terminate();
        let status = old.wait_for_exit(EXIT_TIMEOUT).await;
        members.lock().unwrap().retain(|a| *a != old.address);
        exits.push((old.address, status, old.log()));

        let new = Replica::start(dir.path(), &database_url);
        new.wait_ready().await;
        members.lock().unwrap().push(new.address);
        wait_published(&published, new.address).await;
        new_addresses.push(new.address);
        replicas.push(new);
        tokio::time::sleep(SETTLE).await;
        let during = load.total() - before;
        eprintln!("replaced replica {index}: {during} requests while it was replaced");
        assert!(
            during > 0,
            "no request completed while replica {index} was replaced"
        );
    }

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("load worker");
    }
    let reloads = controller.await.expect("endpoint controller");
    let stored = stored_users(&postgres.url_for(&database)).await;
    report_and_check(&load, reloads, &stored, &exits, &new_addresses, &nginx);
}

/// Checks every outcome, each with its own assert, after printing the counts.
fn report_and_check(
    load: &Load,
    reloads: u64,
    stored: &HashMap<i64, String>,
    exits: &[(SocketAddr, Option<ExitStatus>, String)],
    new_addresses: &[SocketAddr],
    nginx: &Nginx,
) {
    let total = load.total();
    let failed = load.failed.load(Ordering::Relaxed);
    let created = load.created.lock().unwrap();
    let served_by = load.served_by.lock().unwrap();
    println!(
        "rolling restart: {total} requests through nginx ({} creates, {} reads, {} expected \
         404s), {failed} failed; {} replicas replaced, {reloads} nginx reloads",
        load.creates.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed),
        load.misses.load(Ordering::Relaxed),
        exits.len(),
    );

    assert_eq!(
        failed,
        0,
        "{failed} of {total} requests failed; the first ones:\n{}",
        load.failures.lock().unwrap().join("\n")
    );
    assert!(
        total >= MIN_REQUESTS,
        "only {total} requests completed; the load did not run"
    );
    let lost: Vec<_> = created
        .iter()
        .filter(|(id, email)| stored.get(id) != Some(email))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} users created with a 201 are missing from the database: {:?}",
        lost.len(),
        created.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    for (address, status, log) in exits {
        assert!(
            status.is_some_and(|status| status.success()),
            "replica {address} exited with {status:?}; its log:\n{log}"
        );
    }
    for address in new_addresses {
        assert!(
            served_by.contains(&address.to_string()),
            "no request reached the new replica {address}; upstreams seen: {served_by:?}"
        );
    }
    let errors = nginx.error_lines();
    assert!(errors.is_empty(), "nginx logged errors:\n{errors}");
}

/// Returns every stored user's email address by id, read straight from PostgreSQL.
async fn stored_users(database_url: &str) -> HashMap<i64, String> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let rows = client
        .query("SELECT id, email FROM users", &[])
        .await
        .expect("read the users table");
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// Counts and outcomes of the load, shared by the workers.
#[derive(Default)]
struct Load {
    creates: AtomicU64,
    reads: AtomicU64,
    misses: AtomicU64,
    failed: AtomicU64,
    /// One line per failed request, up to MAX_FAILURE_LINES: what was sent and what came back.
    failures: Mutex<Vec<String>>,
    /// Every user created with a 201: id and email address.
    created: Mutex<Vec<(i64, String)>>,
    /// The replica addresses nginx named in X-Upstream.
    served_by: Mutex<BTreeSet<String>>,
}

impl Load {
    fn total(&self) -> u64 {
        self.creates.load(Ordering::Relaxed)
            + self.reads.load(Ordering::Relaxed)
            + self.misses.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }

    fn fail(&self, request: &str, outcome: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < MAX_FAILURE_LINES {
            failures.push(format!("{request}: {outcome}"));
        }
    }
}

/// Sends creates, reads of created users and reads of missing ids, in the ratio 5:4:1, until
/// `stop` is set or a bound is reached.
async fn run_worker(worker: u64, base: String, load: Arc<Load>, stop: Arc<AtomicBool>) {
    // No idle connections are kept, so every request opens its own connection to nginx.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("build the HTTP client");
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && load.total() < MAX_REQUESTS
    {
        sequence += 1;
        let known = {
            let created = load.created.lock().unwrap();
            (!created.is_empty()).then(|| created[(sequence as usize * 7919) % created.len()].0)
        };
        match (sequence % 10, known) {
            (5..=8, Some(id)) => read_user(&client, &base, id, &load).await,
            (9, _) => read_missing(&client, &base, MISSING_ID_BASE + sequence, &load).await,
            _ => create_user(&client, &base, worker, sequence, &load).await,
        }
        tokio::time::sleep(REQUEST_PAUSE).await;
    }
}

async fn create_user(client: &reqwest::Client, base: &str, worker: u64, n: u64, load: &Load) {
    let email = format!("rolling-{worker}-{n}@example.com");
    let request = format!("POST /api/v1/users {email}");
    let body = serde_json::json!({ "name": format!("User {worker}-{n}"), "email": email });
    let sent = client
        .post(format!("{base}/api/v1/users"))
        .json(&body)
        .send()
        .await;
    match read_reply(sent, load).await {
        Ok(reply) => match (reply.status, reply.id()) {
            (201, Some(id)) => {
                load.created.lock().unwrap().push((id, email));
                load.creates.fetch_add(1, Ordering::Relaxed);
            }
            _ => load.fail(&request, reply.describe()),
        },
        Err(err) => load.fail(&request, err),
    }
}

async fn read_user(client: &reqwest::Client, base: &str, id: i64, load: &Load) {
    let request = format!("GET /api/v1/users/{id}");
    let sent = client.get(format!("{base}/api/v1/users/{id}")).send().await;
    match read_reply(sent, load).await {
        Ok(reply) if reply.status == 200 && reply.id() == Some(id) => {
            load.reads.fetch_add(1, Ordering::Relaxed);
        }
        Ok(reply) => load.fail(&request, reply.describe()),
        Err(err) => load.fail(&request, err),
    }
}

async fn read_missing(client: &reqwest::Client, base: &str, id: u64, load: &Load) {
    let request = format!("GET /api/v1/users/{id}");
    let sent = client.get(format!("{base}/api/v1/users/{id}")).send().await;
    match read_reply(sent, load).await {
        Ok(reply) if reply.status == 404 => {
            load.misses.fetch_add(1, Ordering::Relaxed);
        }
        Ok(reply) => load.fail(&request, reply.describe()),
        Err(err) => load.fail(&request, err),
    }
}

/// A response read in full, with the replica nginx sent the request to.
struct Reply {
    status: u16,
    body: String,
    /// The X-Upstream header nginx adds: the replica's address, or "none".
    upstream: String,
}

impl Reply {
    /// Returns the `id` member of a JSON body, if there is one.
    fn id(&self) -> Option<i64> {
        let json: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        json["id"].as_i64()
    }

    /// Describes the reply on one line, for a failure message.
    fn describe(&self) -> String {
        let body: Vec<&str> = self.body.split_whitespace().collect();
        let body: String = body.join(" ").chars().take(300).collect();
        format!("{} from {}: {body}", self.status, self.upstream)
    }
}

/// Reads a response in full and records the replica that served it. A socket error, before
/// or during the body, is the error.
async fn read_reply(
    sent: reqwest::Result<reqwest::Response>,
    load: &Load,
) -> Result<Reply, String> {
    let response = sent.map_err(|err| format!("socket error: {err:?}"))?;
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-upstream")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let body = response
        .text()
        .await
        .map_err(|err| format!("{status} from {upstream}, then a socket error: {err:?}"))?;
    load.served_by.lock().unwrap().insert(upstream.clone());
    Ok(Reply {
        status,
        body,
        upstream,
    })
}

/// Keeps nginx's upstream equal to the ready replicas among `members` until `stop` is set, and
/// returns the number of reloads. An empty ready set keeps the last upstream, because nginx
/// rejects an empty upstream block; the replacement order never empties it.
async fn control_endpoints(
    nginx: Arc<Nginx>,
    members: Arc<Mutex<Vec<SocketAddr>>>,
    published: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("build the probe client");
    let deadline = Instant::now() + LOAD_DEADLINE + Duration::from_secs(60);
    let mut reloads = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let candidates = members.lock().unwrap().clone();
        let probes = candidates.iter().map(|address| {
            let probe = probe.clone();
            async move {
                let ready = probe.get(format!("http://{address}/readyz")).send().await;
                ready.is_ok_and(|response| response.status() == 200)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let ready: Vec<SocketAddr> = candidates
            .into_iter()
            .zip(results)
            .filter_map(|(address, ready)| ready.then_some(address))
            .collect();
        let changed = *published.lock().unwrap() != ready;
        if changed && !ready.is_empty() {
            nginx.set_upstream(&ready);
            *published.lock().unwrap() = ready;
            reloads += 1;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    reloads
}

async fn wait_published(published: &Mutex<Vec<SocketAddr>>, address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !published.lock().unwrap().contains(&address) {
        assert!(
            Instant::now() < deadline,
            "the controller did not add {address} to nginx within 30s"
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
