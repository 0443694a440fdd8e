//! The PostgreSQL server the replicas share.

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::TcpStream;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{end_with_parent, free_port, send_signal};

/// A PostgreSQL server: the one TEST_DATABASE_URL names, or a throwaway cluster that stops
/// when the test ends.
pub struct Postgres {
    admin_url: String,
    postmaster: Option<Child>,
}

impl Postgres {
    pub fn start(dir: &Path) -> Result<Postgres, String> {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return Ok(Postgres {
                admin_url: url,
                postmaster: None,
            });
        }
        let bin = find_postgres_bin().ok_or(
            "no PostgreSQL server binaries (initdb, postgres) found; set TEST_DATABASE_URL or \
             install PostgreSQL",
        )?;
        let cluster = dir.join("postgres");
        fs::create_dir_all(&cluster)
            .map_err(|err| format!("create {}: {err}", cluster.display()))?;
        let owner = cluster_owner()?;
        if let Some((uid, gid)) = owner {
            chown(&cluster, Some(uid), Some(gid))
                .map_err(|err| format!("chown the cluster: {err}"))?;
        }
        let data = cluster.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
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
            .stdout(Stdio::null());
        let output = as_owner(&mut initdb, owner)
            .output()
            .map_err(|err| format!("run initdb: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }

        let port = free_port();
        let log = File::create(cluster.join("postgres.log"))
            .map_err(|err| format!("create the server log: {err}"))?;
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&cluster)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        as_owner(&mut postgres, owner);
        // SIGINT is PostgreSQL's fast shutdown.
        end_with_parent(&mut postgres, libc::SIGINT);
        let postmaster = postgres
            .spawn()
            .map_err(|err| format!("start postgres: {err}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("postgres did not listen on port {port} within 30s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Postgres {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
            postmaster: Some(postmaster),
        })
    }

    /// Connects to `url`, retrying while a fresh cluster still reports that it is starting.
    async fn connect(url: &str) -> tokio_postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(err) if Instant::now() < deadline => {
                    eprintln!("waiting for PostgreSQL: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("connect to PostgreSQL: {err}"),
            }
        }
    }

    /// Creates an empty database for this run and returns its URL, with TLS off.
    pub async fn create_database(&self) -> String {
        let name = format!("peregrine_rolling_{}", std::process::id());
        Postgres::connect(&self.admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let base = self.admin_url.split('?').next().unwrap_or_default();
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        format!("{server}/{name}?sslmode=disable")
    }

    /// Returns every stored user's email address by id.
    pub async fn users(&self, database_url: &str) -> HashMap<i64, String> {
        let rows = Postgres::connect(database_url)
            .await
            .query("SELECT id, email FROM users", &[])
            .await
            .expect("read the users table");
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(postmaster) = &mut self.postmaster {
            send_signal(postmaster, libc::SIGINT);
            let _reaped = postmaster.wait();
        }
    }
}

/// Finds the newest `/usr/lib/postgresql/N/bin`, or the directory of `initdb` on the PATH.
fn find_postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path())))
        .map(|(version, path)| (version, path.join("bin")))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
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
        .ok_or_else(|| "running as root, and there is no postgres user to own the cluster".into())
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}
