"""A flame graph of peregrine's hot path: a CPU profile taken from its admin listener while
wrk loads the database route, folded from `go tool pprof -traces` and drawn with inferno."""

import dataclasses
import re
import shutil
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import load, procstat
from .measure import Settings, server_database_url
from .postgres import free_port
from .servers import REPO, RunningServer, ServerSpec

GO = "/usr/lib/go-1.23/bin/go"
# A sample's weight in `go tool pprof -traces` output, such as "10.10ms".
WEIGHT = re.compile(r"^\s*(?P<value>[0-9.]+)(?P<unit>ns|us|µs|ms|s)\s+(?P<frame>.+)$")
MICROSECONDS = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6}
# The parts of the request path the page reports, by the prefixes of their frames. Each sample
# counts for the part of its frame nearest the leaf, or for "other".
PARTS = {
    "metrics (prometheus-client)": ("prometheus_client::", "peregrine::metrics::",
                                    "peregrine::middleware::metrics::"),
    "access log (tracing)": ("tracing_subscriber::", "tracing_core::", "tracing::",
                             "peregrine::telemetry::", "peregrine::middleware::access_log::"),
    "PostgreSQL client (tokio-postgres)": ("tokio_postgres::", "postgres_protocol::",
                                           "peregrine::store::postgres::"),
    "HTTP (hyper)": ("hyper::", "hyper_util::"),
    "allocator (jemalloc)": ("_rjem_", "tikv_jemalloc"),
    "async runtime (tokio)": ("tokio::",),
    "JSON (serde_json)": ("serde_json::", "serde_core::", "serde::"),
    # Last, so that the parts above claim their own modules first.
    "routing, middleware and handlers (axum, peregrine)": ("peregrine::", "axum::", "axum_core::",
                                                          "tower::", "tower_service::"),
}


def record(spec: ServerSpec, settings: Settings, seconds: int, out_dir: Path,
           charts_dir: Path) -> dict:
    """Profile `spec` for `seconds` under the db load and write the profile, its folded
    stacks and the flame graph. Returns the graph's path, the requests wrk counted over the
    load and the sampled microseconds of each part of `PARTS`."""
    admin_port = free_port()
    spec = dataclasses.replace(spec, env={**spec.env, "ADMIN_ADDR": f"127.0.0.1:{admin_port}"})
    server = RunningServer(spec, free_port(), server_database_url(spec, settings.database_url),
                           settings.logs_dir / f"{spec.name}.profile.log", settings.server_cpus)
    server.start()
    try:
        server.wait_ready()
        connections = settings.connections["db"]
        load.run_wrk(server.port, "db", connections, settings.warmup_seconds, settings.load_cpus,
                     raw_path=None)
        # The load starts a second before the profile and ends a second after it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            loader = pool.submit(load.run_wrk, server.port, "db", connections, seconds + 2,
                                 settings.load_cpus, None)
            time.sleep(1)
            user_before, system_before = procstat.user_system_seconds(server.pid)
            url = f"http://127.0.0.1:{admin_port}/debug/pprof/profile?seconds={seconds}"
            with urllib.request.urlopen(url, timeout=seconds + 30) as response:
                profile = response.read()
            user_after, system_after = procstat.user_system_seconds(server.pid)
            result = loader.result()
    finally:
        server.stop()

    out_dir.mkdir(parents=True, exist_ok=True)
    profile_path = out_dir / "flame-db.pb"
    profile_path.write_bytes(profile)
    traces = subprocess.run([GO, "tool", "pprof", "-traces", str(profile_path)], check=True,
                            capture_output=True, text=True).stdout
    stacks = fold(traces)
    folded = "".join(f"{stack} {weight}\n" for stack, weight in sorted(stacks.items()))
    (out_dir / "flame-db.folded").write_text(folded)

    charts_dir.mkdir(parents=True, exist_ok=True)
    svg_path = charts_dir / "flame-db.svg"
    title = f"peregrine, GET /api/v1/users/{{id}} at {connections} connections, {seconds} s of CPU samples"
    with open(svg_path, "w") as svg:
        subprocess.run([flamegraph_tool(), "--title", title, "--countname", "µs"],
                       input=folded, stdout=svg, check=True, text=True)
    return {"path": str(svg_path.relative_to(REPO)), "seconds": seconds, "connections": connections,
            # The load ran 2 s longer than the profile, so these are the requests of about
            # `seconds` + 2 s.
            "load_seconds": seconds + 2, "requests": result.requests,
            "sampled_us": sum(stacks.values()), "parts_us": parts(stacks),
            # The server's own CPU over the profile's seconds, from /proc/PID/stat.
            "user_us": (user_after - user_before) * 1e6,
            "system_us": (system_after - system_before) * 1e6}


def parts(stacks: dict[str, int]) -> dict[str, int]:
    """Return the sampled microseconds of each part of `PARTS`, and of "other"."""
    totals = dict.fromkeys([*PARTS, "other"], 0)
    for stack, weight in stacks.items():
        totals[part_of(stack.split(";"))] += weight
    return totals


def part_of(frames: list[str]) -> str:
    """Return the part of the frame nearest the leaf (the last) that belongs to one."""
    for frame in reversed(frames):
        # Trait methods appear as `<Type as Trait>::method`: the type's crate decides.
        name = frame.lstrip("<&")
        for part, prefixes in PARTS.items():
            if name.startswith(prefixes):
                return part
    return "other"


def fold(traces: str) -> dict[str, int]:
    """Turn `go tool pprof -traces` output into folded stacks: frames from the root to the
    leaf joined by `;`, each with its weight in microseconds."""
    stacks: dict[str, int] = {}
    for block in traces.split("-----------+")[1:]:
        frames, weight = [], 0
        for line in block.splitlines()[1:]:
            match = WEIGHT.match(line)
            if match:
                weight = round(float(match["value"]) * MICROSECONDS[match["unit"]])
                frames.append(match["frame"].strip())
            elif line.strip() and not line.strip().startswith(("thread:", "bytes:")) and frames:
                frames.append(line.strip())
        if frames and weight:
            # Semicolons separate frames in the folded format.
            stack = ";".join(frame.replace(";", ",") for frame in reversed(frames))
            stacks[stack] = stacks.get(stack, 0) + weight
    return stacks


def flamegraph_tool() -> str:
    tool = shutil.which("inferno-flamegraph")
    if tool is None:
        raise RuntimeError("inferno-flamegraph is missing: `cargo install --locked inferno`")
    return tool
