"""Load runs with wrk (closed loop, as the original comparison ran) and oha (fixed rate,
with latency correction for coordinated omission), and the parsing of their output."""

import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .postgres import USER_COUNT

LUA_DIR = Path(__file__).resolve().parents[1] / "lua"
WRK_THREADS = 2
# wrk counts a response slower than this as a timeout error. It is set high so that slow
# responses count in the latency instead.
WRK_TIMEOUT = "30s"
OHA_TIMEOUT = "30s"


@dataclass
class LoadResult:
    requests: int
    duration_seconds: float
    requests_per_second: float
    errors: int
    error_rate: float
    latency_mean_ms: float | None
    latency_p99_ms: float | None
    details: dict

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class LoadFailed(Exception):
    """The load generator failed or printed no summary."""


# The wrk script of each scenario.
SCRIPTS = {
    "hello": "hello.lua",
    "db": "users.lua",
    "stress": "users.lua",
    "profile": "profile.lua",
    "profile-stress": "profile.lua",
}


def run_wrk(port: int, scenario: str, connections: int, seconds: int, cpus: str,
            raw_path: Path | None, token_file: Path | None = None) -> LoadResult:
    """Run wrk; with `token_file`, the db scenario sends the bearer token in that file with
    every request."""
    script = SCRIPTS[scenario]
    if token_file is not None and scenario == "db":
        script = "users_auth.lua"
    command = [
        "taskset", "-c", cpus, "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}", "--latency", "-s", str(LUA_DIR / script),
        f"http://127.0.0.1:{port}/", "--", str(USER_COUNT),
    ]
    if token_file is not None:
        command.append(str(token_file))
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    output = result.stdout + result.stderr
    if raw_path is not None:
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(" ".join(command) + "\n\n" + output)

    summary_line = next((line for line in result.stdout.splitlines()
                         if line.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or summary_line is None:
        raise LoadFailed(f"wrk exited with status {result.returncode} and no summary:\n{output[-2000:]}")

    summary = json.loads(summary_line.removeprefix("WRK_JSON "))
    socket_errors = sum(summary["errors"][kind] for kind in ("connect", "read", "write", "timeout"))
    errors = socket_errors + summary["errors"]["status"]
    requests = summary["requests"]
    duration = summary["duration_us"] / 1e6
    latency = summary["latency_us"]
    # wrk's requests are completed responses, non-2xx/3xx ones included; a socket error
    # is an attempt that got no response, so it is added to the attempts.
    attempts = requests + socket_errors
    return LoadResult(
        requests=requests,
        duration_seconds=duration,
        requests_per_second=requests / duration if duration else 0.0,
        errors=errors,
        error_rate=errors / attempts if attempts else 1.0,
        latency_mean_ms=latency["mean"] / 1000 if requests else None,
        latency_p99_ms=latency["p99"] / 1000 if requests else None,
        details=summary,
    )


def write_url_file(path: Path, port: int, scenario: str, count: int = 10_000) -> None:
    """Write the URLs oha draws from: GET / alone, or the user or profile route with user
    ids drawn from 1 to USER_COUNT."""
    if scenario == "hello":
        urls = [f"http://127.0.0.1:{port}/"]
    else:
        suffix = "/profile" if scenario.startswith("profile") else ""
        ids = random.Random(1).choices(range(1, USER_COUNT + 1), k=count)
        urls = [f"http://127.0.0.1:{port}/api/v1/users/{user_id}{suffix}" for user_id in ids]
    path.write_text("\n".join(urls) + "\n")


def run_oha(url_file: Path, rate: int, connections: int, seconds: int, cpus: str,
            raw_path: Path | None, token: str | None = None) -> LoadResult:
    command = [
        "taskset", "-c", cpus, "oha", "--no-tui", "--output-format", "json",
        "-z", f"{seconds}s", "-c", str(connections), "-q", str(rate), "--latency-correction",
        "-t", OHA_TIMEOUT, "--urls-from-file", str(url_file),
    ]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if raw_path is not None:
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(result.stdout if result.returncode == 0 else result.stdout + result.stderr)
    if result.returncode != 0:
        raise LoadFailed(f"oha exited with status {result.returncode}:\n{result.stderr[-2000:]}")

    report = json.loads(result.stdout)
    status_counts = {int(code): count for code, count in report.get("statusCodeDistribution", {}).items()}
    responses = sum(status_counts.values())
    failed_status = sum(count for code, count in status_counts.items() if code >= 400)
    # oha counts the requests still due or in flight when the duration ends as "aborted due to
    # deadline": the run's end, not the server, stopped them.
    socket_errors = sum(count for kind, count in report.get("errorDistribution", {}).items()
                        if kind != "aborted due to deadline")
    summary = report["summary"]
    percentiles = report.get("latencyPercentiles", {})
    duration = summary.get("total") or float(seconds)
    attempts = responses + socket_errors
    return LoadResult(
        requests=responses,
        duration_seconds=duration,
        requests_per_second=responses / duration if duration else 0.0,
        errors=failed_status + socket_errors,
        error_rate=(failed_status + socket_errors) / attempts if attempts else 1.0,
        latency_mean_ms=summary["average"] * 1000 if summary.get("average") is not None else None,
        latency_p99_ms=percentiles["p99"] * 1000 if percentiles.get("p99") is not None else None,
        details={"rate": rate, "connections": connections, "summary": summary,
                 "latencyPercentiles": percentiles, "statusCodeDistribution": status_counts,
                 "errorDistribution": report.get("errorDistribution", {})},
    )
