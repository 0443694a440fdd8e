//! The binary's configuration and subcommand. Invalid settings stop the start with exit code 2
//! and a message naming the variable and value, secrets stay out of help and logs, and
//! `peregrine migrate` prepares a database.

use std::process::Output;
use std::time::Duration;

use crate::harness::{Process, binary, get_status};

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    binary(env).args(args).output().expect("run peregrine")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn invalid_settings_exit_2_naming_variable() {
    let cases = [
        ("SERVER_PORT", "abc"),
        ("SERVER_PORT", "70000"),
        ("SERVER_READ_TIMEOUT", "fast"),
        ("SERVER_IDLE_TIMEOUT", "10"),
        ("BODY_LIMIT", "huge"),
        ("DB_SSLMODE", "sometimes"),
        ("DB_MAX_CONNS", "0"),
        ("DB_MIGRATE", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("RUST_LOG", "info,[[["),
        ("DATABASE_URL", "mysql://db/app"),
    ];
    for (variable, value) in cases {
        let output = run(&[(variable, value)], &[]);
        let message = stderr(&output);

        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {message}"
        );
        assert!(message.contains(variable), "{variable}={value}: {message}");
        assert!(
            message.contains(value) || variable == "DATABASE_URL",
            "{variable}={value}: {message}"
        );
    }
}

#[test]
fn help_lists_settings_without_secrets() {
    let output = run(
        &[
            ("DB_PASSWORD", "hunter2-help"),
            ("DATABASE_URL", "postgres://u:hunter2-url@db/app"),
        ],
        &["--help"],
    );
    let help = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(0));
    for variable in [
        "SERVER_PORT",
        "SERVER_READ_TIMEOUT",
        "DB_PASSWORD",
        "DATABASE_URL",
        "SHUTDOWN_DRAIN_DELAY",
    ] {
        assert!(help.contains(variable), "{variable} missing from --help");
    }
    assert!(!help.contains("hunter2"), "{help}");
}

#[test]
fn password_stays_out_of_failure_logs() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:hunter2-secret@127.0.0.1:{closed_port}/app?sslmode=disable");

    let output = run(
        &[("DATABASE_URL", &url), ("DB_CONNECT_TIMEOUT", "500ms")],
        &[],
    );

    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("did not answer"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn migrate_subcommand_prepares_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("migrated.db").display());

    let first = run(&[("DATABASE_URL", &url)], &["migrate"]);
    let second = run(&[("DATABASE_URL", &url)], &["migrate"]);
    let mut server = Process::start(&[("DATABASE_URL", &url), ("DB_MIGRATE", "false")]);
    let list = get_status(&server.address, "/api/v1/users");
    server.signal(libc::SIGTERM);

    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("\"applied\":2"));
    assert!(String::from_utf8_lossy(&second.stdout).contains("\"applied\":0"));
    assert_eq!(list, 200);
    assert_eq!(
        server
            .wait_for_exit(Duration::from_secs(5))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn verify_full_without_root_cert_exits_2() {
    let output = run(
        &[("DB_HOST", "db.example"), ("DB_SSLMODE", "verify-full")],
        &[],
    );
    let message = stderr(&output);

    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("DB_SSLROOTCERT"), "{message}");
}

#[test]
fn unmigrated_database_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());

    let output = run(&[("DATABASE_URL", &url), ("DB_MIGRATE", "false")], &[]);

    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("peregrine migrate"), "{log}");
}
