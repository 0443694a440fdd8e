"""The servers under test: how each is started, checked for readiness and stopped."""

import http.client
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procstat

REPO = Path(__file__).resolve().parents[2]
PEERS_BUILD = REPO / "bench/peers/build"
HYPER_TARGET = REPO / "bench/build/hyper-baseline-target"
AXUM_TARGET = REPO / "bench/build/axum-baseline-target"
# peregrine is built from the committed HEAD, exported here, so that the measured binary is
# a known commit even while others edit the work tree.
PEREGRINE_SOURCE = REPO / "bench/build/peregrine-source"
PEREGRINE_BINARY = REPO / "bench/build/peregrine-target/release/peregrine"
# The signing key, JWKS and bearer token of the peregrine-auth variant, which prepare_auth
# writes before the runs.
AUTH_DIR = REPO / "bench/build/auth"
AUTH_ISSUER = "peregrine-bench"
AUTH_AUDIENCE = "peregrine"

STOP_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class ServerSpec:
    name: str
    label: str
    scenarios: tuple[str, ...]
    # The port and the database URL go in through the environment, not the command line.
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    # The environment variable that takes the port.
    port_variable: str = "PORT"
    database_variable: str = "DATABASE_URL"
    # A file with the bearer token that every API request of the checks and loads sends.
    token_file: Path | None = None

    def token(self) -> str | None:
        return self.token_file.read_text().strip() if self.token_file is not None else None

    @property
    def is_peregrine(self) -> bool:
        return self.command == (str(PEREGRINE_BINARY),)


# db and profile run at 500 connections, stress and profile-stress at 5,000 (cli.py).
ALL_SCENARIOS = ("hello", "db", "stress", "profile", "profile-stress")
# The scenarios of the peers without a profile route.
USERS_SCENARIOS = ("hello", "db", "stress")
PEREGRINE_ENV = {"SERVER_HOST": "127.0.0.1", "LOG_FORMAT": "json", "SHUTDOWN_TIMEOUT": "5s",
                 "METRICS_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0"}

SERVERS = (
    ServerSpec(
        name="peregrine",
        label="peregrine (Rust)",
        scenarios=ALL_SCENARIOS,
        command=(str(PEREGRINE_BINARY),),
        # The metrics and admin listeners default to fixed ports (the metrics one on every
        # address), so they move to free loopback ports, where no other process can collide
        # with them. Versions without these listeners ignore the variables.
        env=PEREGRINE_ENV,
        port_variable="SERVER_PORT",
    ),
    # The other read mode: reads check a connection out of the pool (DB_READ_CLIENTS=0)
    # instead of sharing the pipelined read connections.
    ServerSpec(
        name="peregrine-pool",
        label="peregrine (Rust), reads on the pool",
        scenarios=("db", "stress", "profile", "profile-stress"),
        command=(str(PEREGRINE_BINARY),),
        env={**PEREGRINE_ENV, "DB_READ_CLIENTS": "0"},
        port_variable="SERVER_PORT",
    ),
    # The same binary with bearer tokens required, to measure what verifying an ES256 token
    # on every request costs on the database route.
    ServerSpec(
        name="peregrine-auth",
        label="peregrine (Rust), ES256 bearer token",
        scenarios=("db",),
        command=(str(PEREGRINE_BINARY),),
        env={**PEREGRINE_ENV, "AUTH_JWKS_FILE": str(AUTH_DIR / "jwks.json"),
             "AUTH_ISSUER": AUTH_ISSUER, "AUTH_AUDIENCE": AUTH_AUDIENCE},
        port_variable="SERVER_PORT",
        token_file=AUTH_DIR / "token",
    ),
    # The same binary with the access log off (only warnings and errors are logged), to
    # measure what one JSON log line per request costs on the database route.
    ServerSpec(
        name="peregrine-quiet",
        label="peregrine (Rust), access log off",
        scenarios=("db",),
        command=(str(PEREGRINE_BINARY),),
        env={**PEREGRINE_ENV, "RUST_LOG": "warn"},
        port_variable="SERVER_PORT",
    ),
    ServerSpec(
        name="hyper",
        label="hyper baseline (Rust)",
        scenarios=("hello",),
        command=(str(HYPER_TARGET / "release/hyper-baseline"),),
    ),
    # axum and tokio-postgres with nothing around them: what the database route costs
    # without peregrine's middleware, metrics and access log.
    ServerSpec(
        name="axum",
        label="axum baseline (Rust), two shared clients",
        scenarios=("db",),
        command=(str(AXUM_TARGET / "release/axum-baseline"),),
    ),
    ServerSpec(
        name="go",
        label="Go (chi + pgx)",
        scenarios=ALL_SCENARIOS,
        command=(str(PEERS_BUILD / "go/gopeer"),),
    ),
    ServerSpec(
        name="node",
        label="Node.js (Express + pg)",
        scenarios=USERS_SCENARIOS,
        command=("node", str(PEERS_BUILD / "node/server.js")),
        env={"NODE_ENV": "production"},
    ),
    ServerSpec(
        name="python",
        label="Python (FastAPI + asyncpg)",
        scenarios=USERS_SCENARIOS,
        command=(str(PEERS_BUILD / "python/venv/bin/python"), str(PEERS_BUILD / "python/serve.py")),
    ),
    ServerSpec(
        name="java",
        label="Java (Jetty + HikariCP)",
        scenarios=USERS_SCENARIOS,
        command=("java", "-jar", str(PEERS_BUILD / "java/java-peer.jar")),
    ),
)

SERVERS_BY_NAME = {spec.name: spec for spec in SERVERS}


class ServerFailed(Exception):
    """A server did not start, did not become ready or responded incorrectly."""


def prepare_auth() -> None:
    """Write a new EC P-256 key, its JWKS and an admin token valid for a day into AUTH_DIR,
    with `peregrine token`. The token has admin scope because the load reads every user."""
    AUTH_DIR.mkdir(parents=True, exist_ok=True)
    key = AUTH_DIR / "key.pem"
    key.unlink(missing_ok=True)
    result = subprocess.run(
        [str(PEREGRINE_BINARY), "token", "--key", str(key), "--generate-key",
         "--jwks", str(AUTH_DIR / "jwks.json"), "--sub", "bench", "--scope", "admin",
         "--issuer", AUTH_ISSUER, "--audience", AUTH_AUDIENCE, "--ttl", "24h"],
        capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    if result.returncode != 0:
        raise ServerFailed(f"peregrine token failed with status {result.returncode}: {result.stderr}")
    (AUTH_DIR / "token").write_text(result.stdout)


def http_get(port: int, path: str, timeout: float = 5.0,
             token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send GET to 127.0.0.1:port, with a bearer token when given, and return the status,
    headers (lower-case names) and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


class RunningServer:
    """One started server process. Use it as a context manager so that it always stops."""

    def __init__(self, spec: ServerSpec, port: int, database_url: str, log_path: Path, cpus: str):
        self.spec = spec
        self.port = port
        self.database_url = database_url
        self.log_path = log_path
        self.cpus = cpus
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.spec.env)
        env[self.spec.port_variable] = str(self.port)
        env[self.spec.database_variable] = self.database_url

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.started_at = time.monotonic()
            # taskset replaces itself with the server (exec), so the PID is the server's.
            # A new session keeps a Ctrl-C in the terminal from reaching the server before
            # the runner stops it.
            self.process = subprocess.Popen(
                ["taskset", "-c", self.cpus, *self.spec.command],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout_seconds: float = 60.0, poll_seconds: float = 0.01) -> float:
        """Wait for the first 200 on GET / and return the seconds since start."""
        deadline = self.started_at + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.spec.name} exited with status {self.process.returncode} before it "
                    f"responded to GET /; its log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                status, _, _ = http_get(self.port, "/", timeout=1.0)
                if status == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            time.sleep(poll_seconds)
        raise ServerFailed(
            f"{self.spec.name} did not return 200 on GET / within {timeout_seconds:.0f} s; "
            f"its log: {self.log_path}\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Send SIGTERM, wait for the process tree, and SIGKILL what is left, all by PID."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return

        pids = procstat.tree_pids(self.pid)
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while time.monotonic() < deadline and any(procstat.is_alive(pid) for pid in pids):
            time.sleep(0.05)
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"bench: {self.spec.name} did not stop within {STOP_TIMEOUT_SECONDS} s; killing it")
        for pid in pids:
            if procstat.is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "RunningServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
