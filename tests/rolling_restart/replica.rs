//! One peregrine replica: the real binary on a free loopback port, logging JSON to a file.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::DRAIN_DELAY;
use super::process::{end_with_parent, send_signal, wait_for_200};

/// One peregrine process, logging JSON to a file.
pub struct Replica {
    child: Child,
    pub address: SocketAddr,
    log_path: PathBuf,
}

impl Replica {
    /// Starts the binary on a free loopback port and waits for its "listening" log line.
    pub fn start(dir: &Path, database_url: &str) -> Replica {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log_path = dir.join(format!("replica-{n}.log"));
        let log = File::create(&log_path).expect("create the replica log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_peregrine"));
        command
            .env_clear()
            .envs([
                ("SERVER_HOST", "127.0.0.1"),
                ("SERVER_PORT", "0"),
                ("METRICS_ADDR", "127.0.0.1:0"),
                ("ADMIN_ADDR", "127.0.0.1:0"),
                ("DATABASE_URL", database_url),
                ("DB_MAX_CONNS", "4"),
                ("SHUTDOWN_DRAIN_DELAY", DRAIN_DELAY),
                ("SHUTDOWN_TIMEOUT", "10s"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        if let Some(value) = super::postgres::pgbouncer::prepared_statements() {
            command.env("DB_PREPARED_STATEMENTS", value);
        }
        end_with_parent(&mut command, libc::SIGKILL);
        let child = command.spawn().expect("start peregrine");
        let mut replica = Replica {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
        };
        replica.address = replica.wait_listening();
        replica
    }

    fn wait_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            let address = log
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|event| event["message"] == "listening")
                .and_then(|event| event["address"].as_str()?.parse().ok());
            if let Some(address) = address {
                return address;
            }
            let exited = self.child.try_wait().expect("poll the replica");
            assert!(
                exited.is_none(),
                "peregrine exited with {exited:?} before listening; its log:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "peregrine did not listen within 60s; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.address);
        wait_for_200(&url, Duration::from_secs(30), || self.log()).await;
    }

    pub fn terminate(&self) {
        send_signal(&self.child, libc::SIGTERM);
    }

    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the replica") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _already_exited = self.child.kill();
            let _reaped = self.child.wait();
        }
    }
}
