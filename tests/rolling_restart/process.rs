//! Child processes of the test: signals, the parent-death signal, free ports and waiting
//! for a server to return 200.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::PROBE_TIMEOUT;

/// Makes the kernel send `signal` to the child when the thread that spawned it exits, so no
/// process outlives a test that panicked or was killed.
pub fn end_with_parent(command: &mut Command, signal: libc::c_int) {
    // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit in pid_t");
    // SAFETY: kill has no memory-safety preconditions; the pid is this test's own child.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "send signal {signal} to process {pid}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port")
}

/// Waits until `GET url` returns 200, failing the test after `timeout`.
pub async fn wait_for_200(url: &str, timeout: Duration, log: impl Fn() -> String) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("build the HTTP client");
    let deadline = Instant::now() + timeout;
    loop {
        let response = client.get(url).send().await;
        if response.is_ok_and(|response| response.status() == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not return 200 within {timeout:?}; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
