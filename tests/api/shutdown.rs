//! Graceful shutdown of the real binary: SIGTERM lets in-flight requests finish, does not wait
//! for idle connections, refuses new connections after the drain, and exits 0 within the
//! shutdown timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Process, get_status};

const BODY: &str = r#"{"name":"Slow","email":"slow@example.com"}"#;

/// Starts the server on a fresh SQLite file with extra settings.
fn start(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Process {
    let url = format!("sqlite://{}", dir.path().join("shutdown.db").display());
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend_from_slice(env);
    Process::start(&all)
}

/// Opens a POST whose body is only half sent, so the request stays in flight.
fn start_slow_post(server: &Process) -> TcpStream {
    let mut stream = TcpStream::connect(host(server)).unwrap();
    let head = format!(
        "POST /api/v1/users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&BODY.as_bytes()[..10]).unwrap();
    stream
}

fn finish_slow_post(mut stream: TcpStream) -> String {
    stream.write_all(&BODY.as_bytes()[10..]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut response = vec![0; 4096];
    let read = stream.read(&mut response).unwrap();
    String::from_utf8_lossy(&response[..read]).into_owned()
}

fn host(server: &Process) -> String {
    server.address.trim_start_matches("http://").to_owned()
}

#[test]
fn in_flight_request_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir, &[("SHUTDOWN_TIMEOUT", "5s")]);
    let slow = start_slow_post(&server);
    std::thread::sleep(Duration::from_millis(200));

    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let response = finish_slow_post(slow);

    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = server
        .wait_for_exit(Duration::from_secs(5))
        .expect("exits after the request");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn idle_connection_does_not_delay_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir, &[("SHUTDOWN_TIMEOUT", "10s")]);
    let mut idle = TcpStream::connect(host(&server)).unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut buffer = [0; 1024];
    assert!(idle.read(&mut buffer).unwrap() > 0);

    let signalled = Instant::now();
    server.signal(libc::SIGINT);
    let status = server.wait_for_exit(Duration::from_secs(5)).expect("exits");

    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        signalled.elapsed()
    );
    assert_eq!(
        idle.read(&mut buffer).unwrap_or(0),
        0,
        "the idle connection was closed"
    );
}

#[test]
fn drain_serves_then_refuses_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(
        &dir,
        &[
            ("SHUTDOWN_DRAIN_DELAY", "700ms"),
            ("SHUTDOWN_TIMEOUT", "5s"),
        ],
    );
    let slow = start_slow_post(&server);
    assert_eq!(get_status(&server.address, "/readyz"), 200);

    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let ready_while_draining = get_status(&server.address, "/readyz");
    let live_while_draining = get_status(&server.address, "/livez");
    std::thread::sleep(Duration::from_millis(1000));
    let after_drain = TcpStream::connect(host(&server));
    let response = finish_slow_post(slow);

    assert_eq!(ready_while_draining, 503);
    assert_eq!(live_while_draining, 200);
    assert!(
        after_drain.is_err(),
        "a new connection after the drain is refused"
    );
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(
        server
            .wait_for_exit(Duration::from_secs(5))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn stuck_request_does_not_outlive_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir, &[("SHUTDOWN_TIMEOUT", "500ms")]);
    let _stuck = start_slow_post(&server);
    std::thread::sleep(Duration::from_millis(100));

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_for_exit(Duration::from_secs(5))
        .expect("exits despite the stuck request");

    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        signalled.elapsed()
    );
    let log = server.remaining_log();
    assert!(log.contains("shutdown timeout elapsed"), "{log}");
}
