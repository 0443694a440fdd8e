//! Starts peregrine for a test: in process on an ephemeral port with a fresh database, or as
//! the real binary for tests that send signals or check the exit.

pub mod auth;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use clap::Parser;
use peregrine::config::Config;
use peregrine::http::AppState;
use peregrine::server::Application;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per back end from `async fn name(backend: Backend)` functions.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::harness::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::harness::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// A running in-process server with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The metrics listener, `http://127.0.0.1:PORT`.
    pub metrics_address: String,
    /// The profiling listener, `http://127.0.0.1:PORT`.
    pub admin_address: String,
    pub client: reqwest::Client,
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

/// Settings for a [`TestApp`] beyond the defaults.
#[derive(Default)]
pub struct Options {
    /// Extra command-line flags, for example `["--body-limit", "1KiB"]`.
    pub args: Vec<String>,
    /// Routes added under the API middleware.
    pub routes: Option<Router<AppState>>,
    /// A database URL to use instead of a fresh database.
    pub database_url: Option<String>,
}

impl TestApp {
    /// Starts a server on `backend` with default settings, or returns `None` when the back end
    /// is PostgreSQL and no server is available (the harness prints that once).
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        TestApp::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let database_url = match (options.database_url, backend) {
            (Some(url), _) => url,
            (None, Backend::Sqlite) => format!("sqlite://{}", dir.path().join("test.db").display()),
            (None, Backend::Postgres) => postgres::server()?.create_database().await,
        };

        let mut args = options.args;
        let sets_statements = args
            .iter()
            .any(|arg| arg.starts_with("--db-prepared-statements"));
        if backend == Backend::Postgres
            && !sets_statements
            && let Some(value) = postgres::pgbouncer::prepared_statements()
        {
            args.push(format!("--db-prepared-statements={value}"));
        }
        let config = test_config(&database_url, &args).expect("test settings parse");

        let app = Application::build_with_routes(config, options.routes.unwrap_or_default())
            .await
            .expect("build the application");
        let address = format!("http://{}", app.local_addr());
        let metrics_address = format!("http://{}", app.metrics_addr());
        let admin_address = format!("http://{}", app.admin_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _sender_dropped_or_sent = stop.await;
        }));

        Some(TestApp {
            address,
            metrics_address,
            admin_address,
            client: reqwest::Client::new(),
            database_url,
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Sends a JSON body as `POST path`.
    pub async fn post_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("send the request")
    }

    /// Creates a user and returns its JSON, failing the test unless the status is 201.
    pub async fn create_user(&self, name: &str, email: &str) -> serde_json::Value {
        let body = serde_json::json!({ "name": name, "email": email }).to_string();
        let response = self.post_json("/api/v1/users", &body).await;
        assert_eq!(response.status(), 201, "create {email}");
        response.json().await.expect("a JSON user")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("send the request")
    }

    /// Stops the server as a stop signal would and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _receiver_gone = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

/// Parses the settings of an in-process test server: loopback, ephemeral ports for all three
/// listeners, the given database, then `extra` flags.
pub fn test_config(database_url: &str, extra: &[String]) -> Result<Config, clap::Error> {
    let mut args: Vec<&str> = vec![
        "peregrine",
        "--server-host",
        "127.0.0.1",
        "--server-port",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ];
    args.extend(extra.iter().map(String::as_str));
    Config::try_parse_from(args)
}

/// Builds (but does not run) a server on `database_url` with `extra` flags, returning the
/// start-up error instead of failing the test.
pub async fn build_application(database_url: &str, extra: &[&str]) -> anyhow::Result<Application> {
    let extra: Vec<String> = extra.iter().map(|flag| flag.to_string()).collect();
    Application::build(test_config(database_url, &extra)?).await
}

/// Reads a problem+json response, checking its content type and the members every problem has.
pub async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    if response.status() != status {
        let actual = response.status();
        let body = response.text().await.unwrap_or_default();
        panic!("expected status {status}, got {actual} with the body {body}");
    }
    let content_type = response.headers().get("content-type").cloned();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let request_id = response
        .headers()
        .get("x-request-id")
        .cloned()
        .expect("x-request-id header");
    let body: serde_json::Value = response.json().await.expect("a JSON problem");
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string(), "type in {body}");
    assert!(body["title"].is_string(), "title in {body}");
    assert!(body["detail"].is_string(), "detail in {body}");
    assert_eq!(
        body["request_id"],
        request_id.to_str().unwrap(),
        "request_id in {body}"
    );
    body
}

/// The real binary, started with the given environment on an ephemeral port.
pub struct Process {
    pub child: Child,
    pub address: String,
    /// `http://HOST:PORT` of the profiling listener.
    pub admin_address: String,
    pub stdout: BufReader<ChildStdout>,
    /// The log lines up to and including the "listening" event.
    pub startup_log: String,
}

impl Process {
    /// Starts `peregrine` with JSON logs and waits for its "listening" line.
    pub fn start(env: &[(&str, &str)]) -> Process {
        let mut child = binary(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start peregrine");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        // Owned by a Process from here on, so its Drop ends the child if the start fails.
        let mut process = Process {
            child,
            address: String::new(),
            admin_address: String::new(),
            stdout,
            startup_log: String::new(),
        };
        let mut line = String::new();
        loop {
            line.clear();
            let read = process
                .stdout
                .read_line(&mut line)
                .expect("read the server log");
            assert!(read > 0, "peregrine exited before listening");
            process.startup_log.push_str(&line);
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "listening" {
                let address = event["address"]
                    .as_str()
                    .expect("address in the listening event");
                process.address = format!("http://{address}");
                let admin = event["admin_address"]
                    .as_str()
                    .expect("admin_address in the listening event");
                process.admin_address = format!("http://{admin}");
                return process;
            }
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "send signal {signal}");
    }

    /// Waits up to `timeout` for the exit, killing the process if it does not come.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _already_exited = self.child.kill();
        let _reaped = self.child.wait();
        None
    }

    /// Reads the rest of the log, once the process has exited.
    pub fn remaining_log(&mut self) -> String {
        let mut log = String::new();
        for line in (&mut self.stdout).lines() {
            log.push_str(&line.unwrap_or_default());
            log.push('\n');
        }
        log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _already_exited = self.child.kill();
            let _reaped = self.child.wait();
        }
    }
}

/// Builds a command for the binary with a clean environment, so no inherited setting leaks in.
pub fn binary(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peregrine"));
    command
        .env_clear()
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json");
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied()).stdin(Stdio::null());
    command
}

/// Sends `GET path` to `address` (`http://HOST:PORT`) on a plain blocking socket and returns
/// the status, for tests that run without an async runtime.
pub fn get_status(address: &str, path: &str) -> u16 {
    get_status_with(address, path, "")
}

/// Like [`get_status`], with `headers` (each line ending in CRLF) added to the request.
pub fn get_status_with(address: &str, path: &str, headers: &str) -> u16 {
    use std::io::{Read, Write};

    let host = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the server");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
        .get(9..12)
        .and_then(|status| status.parse().ok())
        .expect("an HTTP status line")
}
