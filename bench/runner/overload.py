"""peregrine at five times the rate it sustains, with the static and the adaptive in-flight
limit (LOAD_SHED): the goodput and the p99 latency of the requests it admits.

The load is the profile route. Its capacity on the 2-core benchmark machine, about 11,000
requests/s, puts five times that within what oha sent from one core against fast 503s there
(about 60,000 requests/s). The capacity is wrk's throughput at 500 connections. The unloaded
p99 is oha's at a tenth of the capacity, and the overload is oha at five times it. oha runs
with `--latency-correction`, so a request that waits for a free connection counts the wait."""

import dataclasses
import json
import statistics
import subprocess
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from . import load
from .measure import Settings, server_database_url
from .postgres import free_port
from .servers import RunningServer, ServerSpec

SCENARIO = "profile"
UNLOADED_SHARE = 0.1
# The wait the sized static limit allows: MAX_IN_FLIGHT = capacity × SIZED_WAIT_SECONDS, the
# README's rule for sizing it.
SIZED_WAIT_SECONDS = 0.01
OVERLOAD_FACTOR = 5
# oha's request timeout, well above any admitted latency, so that a timeout is a failure.
OHA_TIMEOUT = "30s"


def run(spec: ServerSpec, settings: Settings) -> dict:
    """Measure the capacity, then the unloaded and the overloaded run of each mode, each on
    a fresh server, `settings.runs` times alternating the modes. Returns the medians and the
    runs."""
    connections = settings.connections[SCENARIO]
    capacities = []
    for _ in range(settings.runs):
        with started(spec, {}, settings) as server:
            load.run_wrk(server.port, SCENARIO, connections, settings.warmup_seconds,
                         settings.load_cpus, raw_path=None)
            result = load.run_wrk(server.port, SCENARIO, connections, settings.seconds,
                                  settings.load_cpus, raw_path=None)
        # wrk counts every response; the capacity is the successful ones.
        successes = max(result.requests - result.errors, 0)
        capacities.append(successes / result.duration_seconds if result.duration_seconds else 0.0)
    capacity = statistics.median(capacities)
    if capacity < 1:
        raise load.LoadFailed(f"the profile route served no request under wrk: {capacities}")
    unloaded_rate = max(int(capacity * UNLOADED_SHARE), 1)
    overload_rate = int(capacity * OVERLOAD_FACTOR)
    sized_limit = max(int(capacity * SIZED_WAIT_SECONDS), 1)
    # The static limit at its default (above oha's connections, so it never sheds here), the
    # static limit sized by the README's rule, and the adaptive limit.
    modes = {
        "static (MAX_IN_FLIGHT default)": {"LOAD_SHED": "static"},
        f"static (MAX_IN_FLIGHT={sized_limit})": {"LOAD_SHED": "static",
                                                  "MAX_IN_FLIGHT": str(sized_limit)},
        "adaptive": {"LOAD_SHED": "adaptive"},
    }

    runs = []
    for run_number in range(1, settings.runs + 1):
        for mode, env in modes.items():
            with started(spec, env, settings) as server:
                url_file = settings.logs_dir / "oha-urls-overload.txt"
                load.write_url_file(url_file, server.port, SCENARIO)
                unloaded = oha(url_file, unloaded_rate, connections, settings)
                shed_before = shed_count(server.metrics_port)
                overloaded = oha(url_file, overload_rate, connections, settings)
                shed = shed_count(server.metrics_port) - shed_before
            overloaded["shed_share"] = shed / overloaded["sent"] if overloaded["sent"] else 0.0
            record = {"mode": mode, "run": run_number, "unloaded": unloaded,
                      "overloaded": overloaded}
            runs.append(record)
            print(f"[overload] {mode} · run {run_number}/{settings.runs} · unloaded p99 "
                  f"{unloaded['p99_ms']:.1f} ms · at {overload_rate:,} req/s: goodput "
                  f"{overloaded['goodput']:,.0f} req/s, admitted p99 "
                  f"{overloaded['p99_ms']:.1f} ms, shed {overloaded['shed_share']:.0%}",
                  flush=True)

    summary = {}
    for mode in modes:
        mine = [record for record in runs if record["mode"] == mode]
        summary[mode] = {
            "unloaded_p99_ms": statistics.median(r["unloaded"]["p99_ms"] for r in mine),
            "goodput": statistics.median(r["overloaded"]["goodput"] for r in mine),
            "admitted_p99_ms": statistics.median(r["overloaded"]["p99_ms"] for r in mine),
            "shed_share": statistics.median(r["overloaded"]["shed_share"] for r in mine),
            "shed_p99_ms": median_or_none([r["overloaded"]["shed_p99_ms"] for r in mine]),
            "sent_rate": statistics.median(r["overloaded"]["sent_rate"] for r in mine),
            "failures": statistics.median(r["overloaded"]["failures"] for r in mine),
        }
    return {"scenario": SCENARIO, "connections": connections, "capacity": capacity,
            "capacities": capacities, "unloaded_rate": unloaded_rate,
            "overload_rate": overload_rate, "sized_limit": sized_limit,
            "sized_wait_seconds": SIZED_WAIT_SECONDS, "seconds": settings.oha_seconds,
            "summary": summary, "runs": runs}


def median_or_none(values: list) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


@contextmanager
def started(spec: ServerSpec, env: dict, settings: Settings):
    """Start a peregrine server with `env` added to its spec's, stopped on leaving the block.
    Its metrics listener's port is the server's `metrics_port`."""
    metrics_port = free_port()
    spec = dataclasses.replace(
        spec, env={**spec.env, **env, "METRICS_ADDR": f"127.0.0.1:{metrics_port}"})
    server = RunningServer(spec, free_port(), server_database_url(spec, settings.database_url),
                           settings.logs_dir / f"{spec.name}.overload.log", settings.server_cpus)
    server.metrics_port = metrics_port
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def oha(url_file: Path, rate: int, connections: int, settings: Settings) -> dict:
    """Send `rate` requests/s for `settings.oha_seconds` and return the goodput (2xx
    responses/s), the p99 of the 2xx responses, the share of 503 responses, the p99 of the
    non-2xx responses, and the failures (other statuses and socket errors)."""
    command = [
        "taskset", "-c", settings.load_cpus, "oha", "--no-tui", "--output-format", "json",
        "-z", f"{settings.oha_seconds}s", "-c", str(connections), "-q", str(rate),
        "--latency-correction", "--stats-success-breakdown", "-t", OHA_TIMEOUT,
        "--urls-from-file", str(url_file),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=settings.oha_seconds + 120)
    except subprocess.TimeoutExpired as err:
        raise load.LoadFailed(f"oha did not finish within {err.timeout} s") from err
    if result.returncode != 0:
        raise load.LoadFailed(f"oha exited with status {result.returncode}:\n"
                              f"{result.stderr[-2000:]}")

    try:
        report = json.loads(result.stdout)
    except ValueError as err:
        raise load.LoadFailed(f"oha printed no JSON report: {err}: {result.stdout[-500:]}") from err
    statuses = {int(code): count
                for code, count in report.get("statusCodeDistribution", {}).items()}
    duration = report.get("summary", {}).get("total") or float(settings.oha_seconds)
    ok = sum(count for code, count in statuses.items() if 200 <= code < 300)
    shed = statuses.get(503, 0)
    # oha counts the requests still due when the duration ends as "aborted due to deadline".
    socket_errors = sum(count for kind, count in report.get("errorDistribution", {}).items()
                        if kind != "aborted due to deadline")
    sent = sum(statuses.values()) + socket_errors

    p99 = report.get("latencyPercentilesSuccessful", {}).get("p99")
    shed_p99 = report.get("latencyPercentilesNotSuccessful", {}).get("p99")
    return {
        "rate": rate,
        "sent_rate": sent / duration if duration else 0.0,
        "goodput": ok / duration if duration else 0.0,
        "p99_ms": p99 * 1000 if p99 is not None else float("nan"),
        "sent": sent,
        "status_503_share": shed / sent if sent else 0.0,
        "shed_p99_ms": shed_p99 * 1000 if shed_p99 is not None else None,
        "failures": sent - ok - shed,
        "statuses": statuses,
    }


def shed_count(metrics_port: int) -> int:
    """Return the requests the in-flight limit has shed, from the server's /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith('http_server_requests_shed_total{reason="in_flight_limit"}'):
            return int(float(line.split()[-1]))
    return 0
