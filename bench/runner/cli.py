"""The command line of bench/run and the order of its phases."""

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from . import build, flame, measure, overload, report
from .load import LoadFailed
from .postgres import Cluster, prepare_schema
from .servers import (ALL_SCENARIOS, PEREGRINE_BINARY, REPO, SERVERS, SERVERS_BY_NAME, ServerFailed,
                      prepare_auth)

BUILD_DIR = REPO / "bench/build"
FULL_RESULTS_DIR = REPO / "bench/results"
OPEN_FILES_LIMIT = 65536
# 5,000 connections plus what a runtime opens itself (libraries, logs, database pool).
MIN_OPEN_FILES = 6000
# The fixed-rate oha runs use this share of the slowest server's median wrk throughput, so
# that every server sustains the same rate.
OHA_RATE_SHARE = 0.5
OHA_SCENARIOS = ("hello", "db")
# Measurements beside the scenarios, of peregrine alone, that --only also selects.
PHASES = ("overload",)
FULL_CONNECTIONS = {"hello": 500, "db": 500, "stress": 5000, "profile": 500, "profile-stress": 5000}
QUICK_CONNECTIONS = {"hello": 50, "db": 50, "stress": 200, "profile": 50, "profile-stress": 200}
# Seconds each measurement spends outside the load runs (start, checks, stop), an estimate
# for the time left that is corrected by the measured pace as the run goes.
OVERHEAD_ESTIMATE_SECONDS = 4


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Build peregrine, the hyper and axum baselines and the peers, run the load scenarios "
                    "against each and write BENCHMARKS.md.")
    parser.add_argument("--quick", action="store_true",
                        help="check that every server builds, responds correctly and that the page "
                             "is produced: short runs, fewer connections, one run; writes "
                             "bench/build/quick/ and asserts no figures")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this server, scenario or phase; repeatable. Servers: "
                             f"{', '.join(SERVERS_BY_NAME)}; scenarios: {', '.join(ALL_SCENARIOS)}; "
                             f"phases: {', '.join(PHASES)}. The page then goes to "
                             "bench/build/partial/")
    parser.add_argument("--runs", type=int, help="measured runs per server and scenario (default 3)")
    parser.add_argument("--seconds", type=int, help="length of one wrk run in seconds (default 30)")
    parser.add_argument("--pg-cpus", default="1",
                        help="CPUs of the PostgreSQL cluster, in taskset's list syntax (default 1, "
                             "the server's CPU)")
    parser.add_argument("--no-build", action="store_true",
                        help="skip the builds and installs, using what an earlier run built")
    args = parser.parse_args(argv)

    known = (*SERVERS_BY_NAME, *ALL_SCENARIOS, *PHASES)
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"unknown --only value {', '.join(unknown)}: expected a server "
                     f"({', '.join(SERVERS_BY_NAME)}), a scenario ({', '.join(ALL_SCENARIOS)}) "
                     f"or a phase ({', '.join(PHASES)})")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = " ".join(["bench/run", *argv])
    # SIGTERM unwinds like Ctrl-C, so that every finally block stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_open_files_limit()
    # The runner samples /proc beside wrk on CPU 0, away from the server on CPU 1.
    os.sched_setaffinity(0, {0})

    servers = [spec for spec in SERVERS if spec.name in args.only] or list(SERVERS)
    scenarios = [name for name in ALL_SCENARIOS if name in args.only]
    phases = [name for name in PHASES if name in args.only]
    if not scenarios and not phases:
        scenarios, phases = list(ALL_SCENARIOS), list(PHASES)
    if args.quick:
        kind = "quick"
    elif args.only:
        kind = "partial"
    else:
        kind = "full"
    out_dir = output_dir(kind)
    charts_dir = REPO / "bench/charts" if kind == "full" else out_dir / "charts"

    build.ensure_path()
    if not args.no_build:
        build.install_tools()
        build.build_peers()
        build.build_rust()

    cluster = None
    database_url = os.environ.get("BENCH_DATABASE_URL")
    started = time.monotonic()
    try:
        if database_url is None:
            cluster = Cluster(args.pg_cpus)
            cluster.start()
            database_url = cluster.url()
            build.step(f"PostgreSQL 15 runs on 127.0.0.1:{cluster.port}, CPUs {args.pg_cpus}")
        prepare_schema(PEREGRINE_BINARY, database_url)
        if any(spec.token_file is not None for spec in servers):
            prepare_auth()

        settings = measure.Settings(
            runs=args.runs or (1 if args.quick else 3),
            seconds=args.seconds or (3 if args.quick else 30),
            warmup_seconds=1 if args.quick else 5,
            oha_seconds=3 if args.quick else 15,
            connections=QUICK_CONNECTIONS if args.quick else FULL_CONNECTIONS,
            oha_connections=QUICK_CONNECTIONS["db"] if args.quick else FULL_CONNECTIONS["db"],
            server_cpus="1", load_cpus="0",
            database_url=database_url, cluster=cluster,
            results_dir=out_dir / "results" if kind != "full" else FULL_RESULTS_DIR,
            logs_dir=BUILD_DIR / "logs",
        )
        binary_sizes = build.binary_sizes(BUILD_DIR)
        results = run_phases(servers, scenarios, settings, quick=args.quick)
        results["binary_sizes"] = binary_sizes
        if "overload" in phases:
            results["overload"] = overload_phase(servers, settings, results)
            if results["overload"] is not None:
                results["overload"]["command"] = command
                results["overload"]["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        results["flame_graph"] = flame_phase(servers, scenarios, settings, results, charts_dir,
                                             quick=args.quick)
    finally:
        if cluster is not None:
            cluster.stop()

    results["meta"] = {
        "kind": kind,
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_seconds": round(time.monotonic() - started),
        "pg_cpus": args.pg_cpus if cluster is not None else "external (BENCH_DATABASE_URL)",
        "server_cpus": settings.server_cpus,
        "load_cpus": settings.load_cpus,
        "runs": settings.runs,
        "seconds": settings.seconds,
        "warmup_seconds": settings.warmup_seconds,
        "oha_seconds": settings.oha_seconds,
        "oha_rate_share": OHA_RATE_SHARE,
        "connections": settings.connections,
        "machine": report.machine(),
        "versions": build.tool_versions(),
        "peregrine": build.peregrine_commit(),
    }
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    (settings.results_dir / "summary.json").write_text(json.dumps(results, indent=2) + "\n")

    page = REPO / "BENCHMARKS.md" if kind == "full" else out_dir / "BENCHMARKS.md"
    report.write_page(results, page, charts_dir)
    build.step(f"wrote {page.relative_to(REPO)} and the charts in {charts_dir.relative_to(REPO)}")

    if results["failures"]:
        build.step(f"{len(results['failures'])} failure(s):")
        for failure in results["failures"]:
            print(f"  {failure}")
        return 1
    return 0


def raise_open_files_limit() -> None:
    """Raise the open-file limit, which wrk and the servers inherit, because the stress
    scenario keeps 5,000 connections open in each. Without CAP_SYS_RESOURCE the hard limit stays
    and the soft limit rises to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))
        return
    except (ValueError, OSError):
        pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < MIN_OPEN_FILES:
        sys.exit(f"bench: the open-file hard limit is {hard}, below the {MIN_OPEN_FILES} the stress "
                 "scenario needs: raise it (ulimit -Hn) or run as a user that may")


def output_dir(kind: str) -> Path:
    """Return where a run's page goes, emptied of an earlier run of the same kind. A full run
    replaces bench/results, whose previous content moves under bench/build/."""
    if kind == "full":
        if FULL_RESULTS_DIR.exists():
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            shutil.move(FULL_RESULTS_DIR, BUILD_DIR / "previous-results" / stamp)
        FULL_RESULTS_DIR.mkdir(parents=True)
        return REPO
    directory = BUILD_DIR / kind
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


class Progress:
    """Prints one line per finished step with the estimated time left. Each step has a kind
    and an estimate in seconds. The time left scales each kind's estimates by how long the
    finished steps of that kind took, so the estimate improves as the run goes."""

    def __init__(self, steps: list[tuple[str, float]]):
        self.remaining = list(steps)
        self.total = len(steps)
        self.done = 0
        self.estimated = {}
        self.actual = {}
        self.last = time.monotonic()

    def finish(self, text: str) -> None:
        now = time.monotonic()
        kind, estimate = self.remaining.pop(0)
        self.done += 1
        self.estimated[kind] = self.estimated.get(kind, 0.0) + estimate
        self.actual[kind] = self.actual.get(kind, 0.0) + now - self.last
        self.last = now

        left = 0.0
        for kind, estimate in self.remaining:
            pace = self.actual[kind] / self.estimated[kind] if self.estimated.get(kind) else 1.0
            left += estimate * pace
        print(f"[{self.done:3}/{self.total}] {text} · about {left / 60:.0f} min left", flush=True)


def run_phases(servers, scenarios, settings: measure.Settings, quick: bool) -> dict:
    results = {"startup": [], "wrk": [], "oha": [], "placement": [], "failures": [], "oha_rates": {}}
    broken: set[str] = set()
    wrk_plan = [(run, scenario, spec) for run in range(1, settings.runs + 1)
                for scenario in scenarios for spec in servers if scenario in spec.scenarios]
    oha_plan = [(run, scenario, spec) for run, scenario, spec in wrk_plan if scenario in OHA_SCENARIOS]
    starts = 2 if quick else 10
    idle_seconds = 0.5 if quick else 2.0
    results["startup_settings"] = {"starts": starts, "idle_seconds": idle_seconds}
    wrk_estimate = settings.warmup_seconds + settings.seconds + OVERHEAD_ESTIMATE_SECONDS
    oha_estimate = settings.warmup_seconds + settings.oha_seconds + OVERHEAD_ESTIMATE_SECONDS
    progress = Progress([("start-up", starts * (idle_seconds + 1.5))] * (len(servers) if scenarios else 0)
                        + [("wrk", wrk_estimate)] * len(wrk_plan)
                        + [("oha", oha_estimate)] * len(oha_plan))

    sqlite_url = f"sqlite://{BUILD_DIR / 'startup.db'}"
    # A run of phases alone (`--only overload`) skips the start-up measurement too.
    for spec in servers if scenarios else []:
        url = sqlite_url if spec.is_peregrine else measure.server_database_url(spec, settings.database_url)
        try:
            record = measure.measure_startup(spec, starts, idle_seconds, url, settings)
            results["startup"].append(record)
            progress.finish(f"start-up · {spec.name} · median {statistics.median(record['start_seconds']) * 1000:.0f} ms")
        except ServerFailed as err:
            fail(results, broken, spec.name, "start-up", err)
            progress.finish(f"start-up · {spec.name} · FAILED")

    for run, scenario, spec in wrk_plan:
        label = f"wrk {scenario} · {spec.name} · run {run}/{settings.runs}"
        if spec.name in broken:
            progress.finish(f"{label} · skipped, the server failed before")
            continue
        try:
            record = measure.measure_wrk(spec, scenario, run, settings)
            results["wrk"].append(record)
            check_responses(record)
            progress.finish(f"{label} · {record['requests_per_second']:,.0f} req/s, "
                            f"p99 {record['latency_p99_ms'] or 0:.1f} ms, errors {record['error_rate']:.2%}")
        except (ServerFailed, LoadFailed) as err:
            fail(results, broken, spec.name, scenario, err)
            progress.finish(f"{label} · FAILED")

    rates = oha_rates(results["wrk"], quick)
    results["oha_rates"] = rates
    for run, scenario, spec in oha_plan:
        label = f"oha {scenario} at {rates.get(scenario, 0)} req/s · {spec.name} · run {run}/{settings.runs}"
        if spec.name in broken or scenario not in rates:
            progress.finish(f"{label} · skipped")
            continue
        try:
            record = measure.measure_oha(spec, scenario, run, rates[scenario], settings)
            results["oha"].append(record)
            check_responses(record)
            progress.finish(f"{label} · p99 {record['latency_p99_ms'] or 0:.1f} ms, "
                            f"errors {record['error_rate']:.2%}")
        except (ServerFailed, LoadFailed) as err:
            fail(results, broken, spec.name, f"oha {scenario}", err)
            progress.finish(f"{label} · FAILED")

    if not quick:
        results["placement"] = placement_check(servers, scenarios, settings, results, broken)
    return results


def overload_phase(servers, settings: measure.Settings, results: dict) -> dict | None:
    """Measure peregrine's load shedding at five times its capacity, unless this run leaves
    peregrine out."""
    spec = SERVERS_BY_NAME["peregrine"]
    if spec not in servers:
        return None
    build.step("measuring peregrine at five times its capacity, with each LOAD_SHED mode")
    try:
        return overload.run(spec, settings)
    except (ServerFailed, LoadFailed, OSError, subprocess.SubprocessError) as err:
        fail(results, set(), spec.name, "overload", err)
        return None


def flame_phase(servers, scenarios, settings: measure.Settings, results: dict, charts_dir: Path,
                quick: bool) -> dict | None:
    """Profile peregrine under the db load and draw its flame graph, unless this run leaves
    peregrine or the db scenario out. Returns the figures the page reports."""
    spec = SERVERS_BY_NAME["peregrine"]
    if spec not in servers or "db" not in scenarios:
        return None
    seconds = 2 if quick else 20
    build.step(f"profiling peregrine for {seconds} s under the db load")
    try:
        return flame.record(spec, settings, seconds, settings.results_dir / "raw", charts_dir)
    except (ServerFailed, LoadFailed, RuntimeError, OSError, subprocess.SubprocessError) as err:
        fail(results, set(), spec.name, "flame graph", err)
        return None


def check_responses(record: dict) -> None:
    """Raise when a load run got no successful response at all: the server or the runner
    is broken, whatever the load."""
    successes = record["requests"] - record["errors"]
    if successes <= 0:
        raise LoadFailed(f"{record['tool']} got no successful response from {record['server']} "
                         f"in {record['scenario']}: {record['errors']} errors")


def fail(results: dict, broken: set[str], server: str, step: str, err: Exception) -> None:
    broken.add(server)
    message = f"{server} · {step}: {err}"
    results["failures"].append(message)
    print(f"bench: FAILED {message}", file=sys.stderr, flush=True)


def oha_rates(wrk_records: list[dict], quick: bool) -> dict[str, int]:
    """Return the fixed rate of each oha scenario: OHA_RATE_SHARE of the slowest server's
    median wrk throughput, rounded down to two significant digits (50 in a quick run)."""
    rates = {}
    for scenario in OHA_SCENARIOS:
        medians = []
        for server in {record["server"] for record in wrk_records if record["scenario"] == scenario}:
            values = [record["requests_per_second"] for record in wrk_records
                      if record["scenario"] == scenario and record["server"] == server]
            medians.append(statistics.median(values))
        if medians:
            rates[scenario] = 50 if quick else round_down(min(medians) * OHA_RATE_SHARE)
    return rates


def round_down(value: float) -> int:
    digits = len(str(int(value)))
    scale = 10 ** max(digits - 2, 0)
    return max(int(value) // scale * scale, 1)


def placement_check(servers, scenarios, settings: measure.Settings, results: dict,
                    broken: set[str]) -> list[dict]:
    """Measure the db scenario once with PostgreSQL unpinned, for Go and peregrine, so the
    page can show what pinning PostgreSQL changes."""
    cluster = settings.cluster
    if cluster is None or "db" not in scenarios:
        return []
    pinned_cpus = cluster.cpus
    records = []
    try:
        cluster.set_cpus("0-1")
        for spec in servers:
            if spec.name not in ("peregrine", "go") or spec.name in broken:
                continue
            try:
                record = measure.measure_wrk(spec, "db", 1, settings, name=f"db-{spec.name}-pg-unpinned")
            except (ServerFailed, LoadFailed) as err:
                fail(results, broken, spec.name, "db with PostgreSQL unpinned", err)
                continue
            record["pg_cpus"] = "0-1"
            records.append(record)
            print(f"[placement] db · {spec.name} · PostgreSQL on CPUs 0-1 · "
                  f"{record['requests_per_second']:,.0f} req/s", flush=True)
    finally:
        cluster.set_cpus(pinned_cpus)
    return records
