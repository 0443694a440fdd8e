"""One measurement of one server: start it, check it, warm it up, load it, read its CPU
time and memory, stop it."""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import checks, load, procstat
from .postgres import Cluster, free_port
from .servers import RunningServer, ServerSpec


@dataclass
class Settings:
    """Settings shared by every measurement of one invocation."""

    runs: int
    seconds: int
    warmup_seconds: int
    oha_seconds: int
    connections: dict[str, int]
    oha_connections: int
    server_cpus: str
    load_cpus: str
    database_url: str
    cluster: Cluster | None
    results_dir: Path
    logs_dir: Path


def start_server(spec: ServerSpec, settings: Settings) -> RunningServer:
    server = RunningServer(spec, free_port(), server_database_url(spec, settings.database_url),
                           settings.logs_dir / f"{spec.name}.log", settings.server_cpus)
    server.start()
    return server


def server_database_url(spec: ServerSpec, url: str) -> str:
    # The cluster has no TLS. peregrine's default sslmode (prefer) would fall back to plain
    # TCP anyway, and the peers take no query parameters.
    return url + "?sslmode=disable" if spec.name.startswith("peregrine") else url


def pg_cpu_seconds(settings: Settings) -> float | None:
    return settings.cluster.cpu_seconds() if settings.cluster is not None else None


def measure_wrk(spec: ServerSpec, scenario: str, run: int, settings: Settings,
                name: str | None = None) -> dict:
    """Measure one wrk run. Its files are named `name`, by default SCENARIO-SERVER-RUN."""
    connections = settings.connections[scenario]
    name = name or f"{scenario}-{spec.name}-{run}"
    server = start_server(spec, settings)
    try:
        server.wait_ready()
        checks.check_server(spec.name, server.port, spec.scenarios)
        load.run_wrk(server.port, scenario, connections, settings.warmup_seconds,
                     settings.load_cpus, raw_path=None)

        cpu_before = procstat.tree_cpu_seconds(server.pid)
        pg_before = pg_cpu_seconds(settings)
        with procstat.PeakRssSampler(server.pid) as sampler:
            result = load.run_wrk(server.port, scenario, connections, settings.seconds,
                                  settings.load_cpus,
                                  raw_path=settings.results_dir / "raw" / f"{name}.wrk.txt")
        cpu_after = procstat.tree_cpu_seconds(server.pid)
        pg_after = pg_cpu_seconds(settings)
        # The 1-minute load average at the end of the run shows how busy the shared machine
        # was, this run's own server and wrk included.
        load_average = os.getloadavg()[0]
    finally:
        server.stop()

    record = {
        "tool": "wrk",
        "load_average_1m": load_average,
        "server": spec.name,
        "scenario": scenario,
        "run": run,
        "connections": connections,
        "seconds": settings.seconds,
        **result.as_dict(),
        "peak_rss_bytes": sampler.peak_bytes,
        "server_cpu_seconds": cpu_after - cpu_before,
        "server_cpu_us_per_request": per_request(cpu_after - cpu_before, result.requests),
        "pg_cpu_seconds": None if pg_before is None else pg_after - pg_before,
        "pg_cpu_us_per_request": None if pg_before is None else per_request(pg_after - pg_before, result.requests),
    }
    write_record(settings.results_dir / "runs" / f"{name}.wrk.json", record)
    return record


def measure_oha(spec: ServerSpec, scenario: str, run: int, rate: int, settings: Settings) -> dict:
    name = f"{scenario}-{spec.name}-{run}"
    server = start_server(spec, settings)
    try:
        server.wait_ready()
        checks.check_server(spec.name, server.port, spec.scenarios)
        load.run_wrk(server.port, scenario, settings.connections[scenario],
                     settings.warmup_seconds, settings.load_cpus, raw_path=None)
        url_file = settings.logs_dir / f"oha-urls-{spec.name}.txt"
        load.write_url_file(url_file, server.port, scenario)
        result = load.run_oha(url_file, rate, settings.oha_connections, settings.oha_seconds,
                              settings.load_cpus,
                              raw_path=settings.results_dir / "raw" / f"{name}.oha.json")
    finally:
        server.stop()

    record = {
        "tool": "oha",
        "server": spec.name,
        "scenario": scenario,
        "run": run,
        "rate": rate,
        "connections": settings.oha_connections,
        "seconds": settings.oha_seconds,
        **result.as_dict(),
    }
    write_record(settings.results_dir / "runs" / f"{name}.oha.json", record)
    return record


def measure_startup(spec: ServerSpec, starts: int, idle_seconds: float, database_url: str,
                    settings: Settings) -> dict:
    """Start a server `starts` times and record the time to its first 200 on GET / and its
    RSS after `idle_seconds` without requests."""
    seconds, idle_rss = [], []
    for _ in range(starts):
        server = RunningServer(spec, free_port(), database_url,
                               settings.logs_dir / f"{spec.name}.startup.log", settings.server_cpus)
        server.start()
        try:
            seconds.append(server.wait_ready(poll_seconds=0.002))
            time.sleep(idle_seconds)
            idle_rss.append(procstat.tree_rss_bytes(server.pid))
        finally:
            server.stop()

    record = {"server": spec.name, "start_seconds": seconds, "idle_rss_bytes": idle_rss,
              "idle_seconds": idle_seconds}
    write_record(settings.results_dir / "runs" / f"startup-{spec.name}.json", record)
    return record


def per_request(cpu_seconds: float, requests: int) -> float | None:
    return cpu_seconds / requests * 1e6 if requests else None


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
