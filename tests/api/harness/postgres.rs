//! A PostgreSQL server for the tests: the one TEST_DATABASE_URL names, or a throwaway cluster
//! started from the server binaries on this machine, once per test process.
//!
//! The throwaway cluster runs with TLS on, from a certificate authority made here, so that the
//! TLS tests can check verification. It stops when the test process exits: the postmaster gets
//! SIGINT (a fast shutdown) as its parent-death signal.
//!
//! With PEREGRINE_TEST_PGBOUNCER=1 the harness also starts PgBouncer in transaction pooling
//! mode in front of the throwaway cluster (see [`pgbouncer`]), and [`Server::create_database`]
//! returns URLs through it. The harness itself still connects to the cluster directly. The
//! users tests, the pooler test and the rolling restart run that way in CI. A few other tests
//! check a direct connection, so they fail through PgBouncer. PgBouncer drops the `options`
//! that carry the statement timeout, and it keeps the client side open when the server kills
//! a connection. The test of a start that waits for a late database rewrites the cluster's
//! port in the URL.
//!
//! The rolling-restart test includes this file too, through a `#[path]` module.

#[path = "pgbouncer.rs"]
pub mod pgbouncer;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

/// The server every PostgreSQL test uses, and what it was started with.
pub struct Server {
    /// A URL for the `postgres` maintenance database, as a superuser.
    admin_url: String,
    /// Set only for a cluster started here: the certificates the TLS tests need.
    pub tls: Option<TlsFiles>,
    pub host: String,
    pub port: u16,
    /// The loopback port of PgBouncer, set only with PEREGRINE_TEST_PGBOUNCER=1.
    pub pgbouncer_port: Option<u16>,
    /// Set only for a cluster started here.
    cluster: Option<Cluster>,
}

/// Certificates of a cluster started here.
pub struct TlsFiles {
    /// The authority that signed the server's certificate.
    pub ca_cert: PathBuf,
    /// A different authority, which verification must reject.
    pub other_ca_cert: PathBuf,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// Returns the shared server, or why there is none. With PEREGRINE_REQUIRE_POSTGRES=1 a missing
/// server fails the test instead.
pub fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(start) {
        Ok(server) => Some(server),
        Err(reason) if std::env::var("PEREGRINE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!(
                "PostgreSQL is required (PEREGRINE_REQUIRE_POSTGRES=1) but unavailable: {reason}"
            )
        }
        Err(reason) => {
            static ONCE: OnceLock<()> = OnceLock::new();
            ONCE.get_or_init(|| eprintln!("skipping PostgreSQL tests: {reason}"));
            None
        }
    }
}

impl Server {
    /// Creates an empty database for one test and returns the URL a server under test gets:
    /// through PgBouncer when the harness started one, else straight to PostgreSQL. TLS is off.
    pub async fn create_database(&self) -> String {
        let name = self.create_database_named().await;
        self.client_url_for(&name)
    }

    /// Creates an empty database for one test and returns its name.
    pub async fn create_database_named(&self) -> String {
        let name = format!(
            "peregrine_test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        name
    }

    /// Returns a URL for database `name` through PgBouncer when the harness started one,
    /// else [`Server::url_for`]. TLS is off.
    pub fn client_url_for(&self, name: &str) -> String {
        match self.pgbouncer_port {
            Some(port) => format!("postgres://postgres@127.0.0.1:{port}/{name}?sslmode=disable"),
            None => self.url_for(name),
        }
    }

    /// Returns a URL for database `name` on this server, straight to PostgreSQL, with TLS off.
    pub fn url_for(&self, name: &str) -> String {
        let base = self.admin_url.split('?').next().unwrap_or_default();
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        format!("{server}/{name}?sslmode=disable")
    }

    /// Connects as the superuser to the maintenance database, retrying while a freshly
    /// started cluster still rejects clients with "the database system is starting up".
    pub async fn admin(&self) -> tokio_postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(err) if Instant::now() < deadline => {
                    eprintln!("waiting for the test PostgreSQL server: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("connect to the test PostgreSQL server: {err}"),
            }
        }
    }
}

fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        if pgbouncer::requested() {
            return Err(
                "PEREGRINE_TEST_PGBOUNCER=1 needs the throwaway cluster; unset TEST_DATABASE_URL"
                    .to_owned(),
            );
        }
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|err| format!("invalid TEST_DATABASE_URL: {err}"))?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        return Ok(Server {
            admin_url: url,
            tls: None,
            host,
            port,
            pgbouncer_port: None,
            cluster: None,
        });
    }
    let mut server = start_cluster(0)?;
    if pgbouncer::requested() {
        let cluster = server
            .cluster
            .as_ref()
            .expect("start_cluster sets the cluster");
        let port = free_port()?;
        pgbouncer::start(&cluster.dir, port, server.port, cluster.owner)?;
        server.pgbouncer_port = Some(port);
    }
    Ok(server)
}

/// Starts a cluster of this test process's own that a test may stop and start again, or
/// returns `None` when there are no server binaries (the harness has printed why).
pub fn private_cluster() -> Option<Server> {
    if server()?.cluster.is_none() {
        eprintln!(
            "skipped: a restart test needs a cluster the harness starts, not TEST_DATABASE_URL"
        );
        return None;
    }
    static PRIVATE: AtomicUsize = AtomicUsize::new(1);
    match start_cluster(PRIVATE.fetch_add(1, Ordering::Relaxed)) {
        Ok(server) => Some(server),
        Err(reason) => panic!("start a private PostgreSQL cluster: {reason}"),
    }
}

/// What restarting a cluster started here needs.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Server {
    /// Stops the cluster (fast shutdown, as a database failover or upgrade would) and starts it
    /// again on the same port. Panics for a server the harness did not start.
    pub fn restart(&self) {
        let cluster = self
            .cluster
            .as_ref()
            .expect("only a cluster started here restarts");
        let stopped = as_owner(Command::new(cluster.bin.join("pg_ctl")), cluster.owner)
            .args(["-m", "fast", "-w", "stop", "-D"])
            .arg(&cluster.data)
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl stop");
        assert!(stopped.success(), "pg_ctl stop failed");
        spawn_postmaster(
            &cluster.bin.join("postgres"),
            &cluster.dir,
            &cluster.data,
            self.port,
            cluster.owner,
        )
        .expect("start postgres again");
        wait_for_port(self.port, Duration::from_secs(30)).expect("postgres listens again");
    }
}

fn start_cluster(index: usize) -> Result<Server, String> {
    let bin = find_bin_dir().ok_or("no PostgreSQL server binaries (initdb, postgres) found; set TEST_DATABASE_URL or install PostgreSQL")?;
    if index == 0 {
        remove_stale_clusters();
    }
    let dir = std::env::temp_dir().join(format!("peregrine-pg-{}-{index}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|err| format!("create {}: {err}", dir.display()))?;
    let owner = cluster_owner()?;
    if let Some((uid, gid)) = owner {
        chown(&dir, Some(uid), Some(gid))
            .map_err(|err| format!("chown {}: {err}", dir.display()))?;
    }

    let data = dir.join("data");
    let status = as_owner(Command::new(bin.join("initdb")), owner)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| format!("run initdb: {err}"))?;
    if !status.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }

    let tls = write_certificates(&dir, owner)?;
    let port = free_port()?;
    spawn_postmaster(&bin.join("postgres"), &dir, &data, port, owner)?;
    wait_for_port(port, Duration::from_secs(30)).map_err(|err| format!("postgres: {err}"))?;

    Ok(Server {
        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
        tls: Some(tls),
        host: "127.0.0.1".to_owned(),
        port,
        pgbouncer_port: None,
        cluster: Some(Cluster {
            bin,
            dir,
            data,
            owner,
        }),
    })
}

/// Finds the newest `/usr/lib/postgresql/N/bin`, or the directory of `initdb` on the PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            Some((
                entry.file_name().to_str()?.parse().ok()?,
                entry.path().join("bin"),
            ))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
}

/// initdb refuses to run as root, so as root the cluster belongs to the `postgres` user.
fn cluster_owner() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|err| format!("read /etc/passwd: {err}"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            "running as root, and there is no postgres user to own the cluster".to_owned()
        })
}

fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

/// Removes the directories of clusters whose test process has exited.
fn remove_stale_clusters() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("peregrine-pg-"))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ignored = fs::remove_dir_all(entry.path());
        }
    }
}

fn write_certificates(dir: &Path, owner: Option<(u32, u32)>) -> Result<TlsFiles, String> {
    let fail = |err: rcgen::Error| format!("generate test certificates: {err}");
    let make_ca = |name: &str| -> Result<
        (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>),
        String,
    > {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok((cert, rcgen::Issuer::new(params, key)))
    };
    let (ca_cert, ca) = make_ca("peregrine test CA")?;
    let (other_ca_cert, _) = make_ca("another test CA")?;

    // The server certificate names localhost only, so verify-full to 127.0.0.1 must fail.
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).map_err(fail)?;
    let server_key = rcgen::KeyPair::generate().map_err(fail)?;
    let server_cert = params.signed_by(&server_key, &ca).map_err(fail)?;

    let files = [
        ("ca.crt", ca_cert.pem(), 0o644),
        ("other-ca.crt", other_ca_cert.pem(), 0o644),
        ("server.crt", server_cert.pem(), 0o644),
        ("server.key", server_key.serialize_pem(), 0o600),
    ];
    for (name, contents, mode) in files {
        let path = dir.join(name);
        fs::write(&path, contents).map_err(|err| format!("write {}: {err}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|err| format!("chmod {name}: {err}"))?;
        if let Some((uid, gid)) = owner {
            chown(&path, Some(uid), Some(gid)).map_err(|err| format!("chown {name}: {err}"))?;
        }
    }
    Ok(TlsFiles {
        ca_cert: dir.join("ca.crt"),
        other_ca_cert: dir.join("other-ca.crt"),
    })
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|err| format!("find a free port: {err}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| format!("find a free port: {err}"))
}

/// Starts the postmaster from a thread that lives as long as the process, because the
/// parent-death signal fires when the thread that forked the child exits.
fn spawn_postmaster(
    postgres: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let mut command = as_owner(Command::new(postgres), owner);
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
        ])
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .args(["-c", "ssl=on"])
        .arg("-c")
        .arg(format!(
            "ssl_cert_file={}",
            dir.join("server.crt").display()
        ))
        .arg("-c")
        .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            fs::File::create(dir.join("postgres.log"))
                .map_err(|err| format!("create the server log: {err}"))?,
        );
    // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let (started, result) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres".to_owned())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ignored = started.send(Ok(()));
                let _ignored = child.wait();
            }
            Err(err) => {
                let _ignored = started.send(Err(format!("start postgres: {err}")));
            }
        })
        .map_err(|err| format!("start the postgres thread: {err}"))?;
    result
        .recv()
        .map_err(|err| format!("start postgres: {err}"))?
}

/// Waits until something accepts connections on loopback `port`.
fn wait_for_port(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no connection accepted on port {port} within {timeout:?}"
    ))
}
