//! The access log of the real binary: one JSON line per request, naming the request.

use std::time::Duration;

use crate::harness::{Process, get_status_with};

/// Starts the binary on a fresh SQLite database with loopback peers trusted as proxies.
fn start(dir: &tempfile::TempDir) -> Process {
    let url = format!("sqlite://{}", dir.path().join("access_log.db").display());
    Process::start(&[
        ("DATABASE_URL", url.as_str()),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
}

/// Stops the process and returns its log lines after the start-up, parsed.
fn stop_and_read(mut server: Process) -> Vec<serde_json::Value> {
    server.signal(libc::SIGTERM);
    server
        .wait_for_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    server
        .remaining_log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

/// Returns the one line whose request carries `request_id`.
fn line_of<'a>(lines: &'a [serde_json::Value], request_id: &str) -> &'a serde_json::Value {
    let matching: Vec<_> = lines
        .iter()
        .filter(|line| line["request"]["request_id"] == request_id)
        .collect();
    assert_eq!(matching.len(), 1, "lines of {request_id}: {lines:?}");
    matching[0]
}

#[test]
fn request_logs_one_line_with_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir);

    let missing = get_status_with(
        &server.address,
        "/api/v1/users/987654",
        "X-Request-Id: log-missing-user\r\nX-Forwarded-For: 198.51.100.7\r\n",
    );
    let unmatched = get_status_with(
        &server.address,
        "/no/such/path",
        "X-Request-Id: log-unmatched\r\n",
    );
    let lines = stop_and_read(server);

    assert_eq!(missing, 404);
    assert_eq!(unmatched, 404);
    let line = line_of(&lines, "log-missing-user");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request completed");
    assert_eq!(line["status"], 404);
    assert!(line["latency_us"].is_u64(), "{line}");
    assert!(line["error"].as_str().unwrap().contains("987654"), "{line}");
    let request = &line["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["route"], "/api/v1/users/{id}");
    assert_eq!(request["client"], "198.51.100.7");
    let peer = request["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{line}");

    let line = line_of(&lines, "log-unmatched");
    assert_eq!(line["request"]["route"], "unmatched");
    assert_eq!(line["request"]["client"], "127.0.0.1");
}
