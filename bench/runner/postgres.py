"""The PostgreSQL database the servers read: a throwaway cluster or BENCH_DATABASE_URL."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from . import procstat

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "bench"
USER_COUNT = 10_000
# Each user has this many orders, so a profile always shows its full 10, and every second
# user has saved preferences, so profiles read both stored rows and the defaults.
ORDERS_PER_USER = 20

SEED_SQL = f"""
INSERT INTO users (name, email, email_lower)
SELECT 'User ' || i, 'user' || i || '@example.com', 'user' || i || '@example.com'
FROM generate_series(1, {USER_COUNT}) AS i;
ANALYZE users;
"""

SEED_ORDERS_SQL = f"""
INSERT INTO orders (user_id, amount, currency, status)
SELECT u, 100 + (u * 7 + n) % 10000, (ARRAY['EUR', 'USD', 'GBP', 'JPY'])[1 + n % 4],
       (ARRAY['pending', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + n % 5]
FROM generate_series(1, {USER_COUNT}) AS u, generate_series(1, {ORDERS_PER_USER}) AS n;
INSERT INTO preferences (user_id, language, time_zone, notify_email, notify_sms, notify_push,
                         theme, version)
SELECT u, 'de-DE', 'Europe/Berlin', true, false, u % 3 = 0, 'dark', 1
FROM generate_series(2, {USER_COUNT}, 2) AS u;
ANALYZE orders;
ANALYZE preferences;
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def psql(url: str, sql: str) -> str:
    result = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )
    return result.stdout.strip()


class Cluster:
    """A PostgreSQL 15 cluster in a temporary directory, run as the postgres user because
    initdb refuses to run as root. Its processes run on `cpus` (taskset syntax)."""

    def __init__(self, cpus: str):
        self.cpus = cpus
        self.port = free_port()
        self.directory: Path | None = None
        self.started = False

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = DATABASE) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="peregrine-bench-pg."))
        shutil.chown(self.directory, "postgres", "postgres")
        run_as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"],
            log=self.directory / "initdb.log",
        )

        # The servers hold 25 connections each and run one at a time, so the default
        # max_connections (100) leaves room. The data set is a few MB and fits in the
        # default shared_buffers.
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        run_as_postgres(
            ["taskset", "-c", self.cpus, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w",
             "-t", "60", "-l", str(self.directory / "postgres.log"), "-o", options, "start"],
            log=self.directory / "pg_ctl.log",
        )
        self.started = True
        psql(self.url("postgres"), f"CREATE DATABASE {DATABASE}")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def cpu_seconds(self) -> float:
        """Return the CPU time of every process of the cluster. Backends that have exited
        count through the postmaster's cutime and cstime."""
        return procstat.tree_cpu_seconds(self.postmaster_pid())

    def set_cpus(self, cpus: str) -> None:
        """Move every process of the cluster to `cpus`; new backends inherit it."""
        self.cpus = cpus
        for pid in procstat.tree_pids(self.postmaster_pid()):
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False,
                           capture_output=True)

    def stop(self) -> None:
        if self.started:
            result = subprocess.run(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                 "-m", "fast", "-w", "stop"],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                print(f"bench: pg_ctl stop failed, the cluster in {self.data} may still run: "
                      f"{result.stderr.strip()}")
                return
            self.started = False
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def run_as_postgres(command: list[str], log: Path) -> None:
    with open(log, "wb") as output:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *command],
                                stdout=output, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {result.returncode}:\n"
                           f"{log.read_text(errors='replace')[-2000:]}")


def prepare_schema(peregrine: Path, url: str) -> None:
    """Create the tables with `peregrine migrate` and seed USER_COUNT users, unless the
    database already contains exactly users 1 to USER_COUNT. Then seed their orders and
    preferences, unless the database already contains orders."""
    subprocess.run([str(peregrine), "migrate"], check=True, capture_output=True,
                   env={**os.environ, "DATABASE_URL": url + "?sslmode=disable"})

    count = int(psql(url, "SELECT count(*) FROM users"))
    if count == 0:
        psql(url, SEED_SQL)
        count = int(psql(url, "SELECT count(*) FROM users"))
    seeded = int(psql(url, f"SELECT count(*) FROM users WHERE id BETWEEN 1 AND {USER_COUNT}"))
    if count != USER_COUNT or seeded != USER_COUNT:
        raise RuntimeError(
            f"the users table at {url} contains {count} rows, {seeded} of them with ids 1 to "
            f"{USER_COUNT}; the benchmark needs exactly users 1 to {USER_COUNT}: point "
            "BENCH_DATABASE_URL at an empty database"
        )

    orders = int(psql(url, "SELECT count(*) FROM orders"))
    if orders == 0:
        psql(url, SEED_ORDERS_SQL)
        orders = int(psql(url, "SELECT count(*) FROM orders"))
    if orders != USER_COUNT * ORDERS_PER_USER:
        raise RuntimeError(
            f"the orders table at {url} contains {orders} rows; the benchmark needs "
            f"{ORDERS_PER_USER} per user ({USER_COUNT * ORDERS_PER_USER}): point "
            "BENCH_DATABASE_URL at an empty database"
        )
