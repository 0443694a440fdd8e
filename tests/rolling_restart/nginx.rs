//! nginx as the load balancer in front of the replicas.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{end_with_parent, free_port, send_signal, wait_for_200};

/// nginx as this test's own process: `daemon off`, every file inside the test's directory,
/// and the upstream servers in a file the main configuration includes.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    pub async fn start(binary: &Path, dir: &Path, upstream: &[SocketAddr]) -> Nginx {
        let dir = dir.join("nginx");
        fs::create_dir_all(dir.join("temp")).expect("create the nginx directory");
        let port = free_port();
        fs::write(dir.join("nginx.conf"), nginx_config(&dir, port)).expect("write nginx.conf");
        write_upstream(&dir, upstream);

        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGQUIT is nginx's graceful stop, which also stops its workers.
        end_with_parent(&mut command, libc::SIGQUIT);
        let nginx = Nginx {
            child: command.spawn().expect("start nginx"),
            dir,
            port,
        };
        let url = format!("{}/readyz", nginx.url());
        wait_for_200(&url, Duration::from_secs(30), || nginx.error_lines()).await;
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the upstream servers and reloads nginx (SIGHUP to its master process).
    pub fn set_upstream(&self, servers: &[SocketAddr]) {
        write_upstream(&self.dir, servers);
        send_signal(&self.child, libc::SIGHUP);
    }

    /// Returns the lines of nginx's error log at level error or above.
    pub fn error_lines(&self) -> String {
        let log = fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        log.lines()
            .filter(|line| {
                ["[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|l| line.contains(l))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            send_signal(&self.child, libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _already_exited = self.child.kill();
            let _reaped = self.child.wait();
        }
    }
}

/// Returns nginx's configuration: one worker, every file under `dir`, no retries.
fn nginx_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    upstream peregrine {{
        include {d}/upstream.conf;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://peregrine;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_next_upstream off;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"
    )
}

/// Writes the upstream servers to the file nginx.conf includes. The rename is atomic, so a
/// reload never reads a half-written file.
fn write_upstream(dir: &Path, servers: &[SocketAddr]) {
    let lines: String = servers
        .iter()
        .map(|address| format!("server {address};\n"))
        .collect();
    let partial = dir.join("upstream.conf.new");
    fs::write(&partial, lines).expect("write the upstream file");
    fs::rename(&partial, dir.join("upstream.conf")).expect("replace the upstream file");
}

/// Returns nginx from the PATH or Debian's /usr/sbin, if installed.
pub fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}
