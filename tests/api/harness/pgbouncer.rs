//! PgBouncer in transaction pooling mode in front of the test cluster, started when
//! PEREGRINE_TEST_PGBOUNCER=1.
//!
//! It runs Debian's `pgbouncer` (1.18 on bookworm) on a free loopback port, as the user that
//! owns the cluster, because PgBouncer 1.18 exits as root ("PgBouncer should not run as root"). Every database name maps to the
//! same name on the cluster, and clients log in without a password (`auth_type = trust`,
//! with the `postgres` user listed in an auth file written here). It stops when the test
//! process exits: it gets SIGTERM (an immediate shutdown) as its parent-death signal.

use std::fs;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// Returns whether this test process runs its PostgreSQL clients through PgBouncer.
pub fn requested() -> bool {
    std::env::var("PEREGRINE_TEST_PGBOUNCER").as_deref() == Ok("1")
}

/// Returns the DB_PREPARED_STATEMENTS value for a server under test behind PgBouncer:
/// `false` (unnamed statements, which transaction pooling needs), unless the environment sets
/// DB_PREPARED_STATEMENTS, so that `DB_PREPARED_STATEMENTS=true` shows what breaks without it.
/// Returns `None` without PEREGRINE_TEST_PGBOUNCER=1.
pub fn prepared_statements() -> Option<String> {
    if !requested() {
        return None;
    }
    Some(std::env::var("DB_PREPARED_STATEMENTS").unwrap_or_else(|_| "false".to_owned()))
}

/// Finds Debian's `/usr/sbin/pgbouncer`, or `pgbouncer` on the PATH.
fn find_binary() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("pgbouncer"))
        .find(|binary| binary.is_file())
}

/// Writes a configuration into `dir` and starts PgBouncer on `port`, forwarding to the
/// PostgreSQL server on `postgres_port`. Returns once PgBouncer accepts connections.
pub fn start(
    dir: &Path,
    port: u16,
    postgres_port: u16,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let binary = find_binary().ok_or(
        "PEREGRINE_TEST_PGBOUNCER=1, but pgbouncer is not installed (apt-get install pgbouncer)",
    )?;
    let auth_file = dir.join("pgbouncer-users.txt");
    let log_file = dir.join("pgbouncer.log");
    let config_file = dir.join("pgbouncer.ini");
    // `options` carries DB_STATEMENT_TIMEOUT at connection start. PgBouncer 1.18 rejects a
    // startup parameter it does not track unless it is listed here, and then drops it, so
    // behind PgBouncer the timeout has to be set on the role or the database instead.
    let config = format!(
        "[databases]\n\
         * = host=127.0.0.1 port={postgres_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         pool_mode = transaction\n\
         auth_type = trust\n\
         auth_file = {auth_file}\n\
         ignore_startup_parameters = options\n\
         max_client_conn = 1000\n\
         default_pool_size = 10\n\
         logfile = {log_file}\n",
        auth_file = auth_file.display(),
        log_file = log_file.display(),
    );
    let files = [
        (&auth_file, "\"postgres\" \"\"\n".to_owned()),
        (&config_file, config),
    ];
    for (path, contents) in files {
        fs::write(path, contents).map_err(|err| format!("write {}: {err}", path.display()))?;
        if let Some((uid, gid)) = owner {
            chown(path, Some(uid), Some(gid))
                .map_err(|err| format!("chown {}: {err}", path.display()))?;
        }
    }

    let mut command = Command::new(binary);
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            fs::File::create(dir.join("pgbouncer.stderr"))
                .map_err(|err| format!("create the pgbouncer stderr file: {err}"))?,
        );
    // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    // The parent-death signal fires when the thread that forked the child exits, so the
    // child is started and waited for on a thread that lives as long as the process.
    let (started, result) = mpsc::channel();
    std::thread::Builder::new()
        .name("pgbouncer".to_owned())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ignored = started.send(Ok(()));
                let _ignored = child.wait();
            }
            Err(err) => {
                let _ignored = started.send(Err(format!("start pgbouncer: {err}")));
            }
        })
        .map_err(|err| format!("start the pgbouncer thread: {err}"))?;
    result
        .recv()
        .map_err(|err| format!("start pgbouncer: {err}"))??;

    super::wait_for_port(port, std::time::Duration::from_secs(10)).map_err(|err| {
        let log = fs::read_to_string(&log_file).unwrap_or_default();
        let stderr = fs::read_to_string(dir.join("pgbouncer.stderr")).unwrap_or_default();
        format!("pgbouncer: {err}; its log:\n{log}{stderr}")
    })
}
