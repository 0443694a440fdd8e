"""Builds everything the benchmark runs and installs the load generators when missing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .servers import AXUM_TARGET, HYPER_TARGET, PEREGRINE_BINARY, PEREGRINE_SOURCE, REPO

CARGO_BIN = Path.home() / ".cargo/bin"


def step(message: str) -> None:
    print(f"bench: {message}", flush=True)


def run(command: list[str], **kwargs) -> None:
    step("$ " + " ".join(command))
    subprocess.run(command, check=True, **kwargs)


def ensure_path() -> None:
    """Put cargo's bin directory on PATH, where `cargo install` puts oha and inferno."""
    if str(CARGO_BIN) not in os.environ.get("PATH", "").split(":"):
        os.environ["PATH"] = f"{os.environ.get('PATH', '')}:{CARGO_BIN}"


def install_tools() -> None:
    ensure_path()
    for tool in ("taskset", "psql", "runuser"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is missing: install util-linux and postgresql-client-15")
    if shutil.which("wrk") is None:
        step("installing wrk from Debian's packages")
        run(["apt-get", "update", "-q"])
        run(["apt-get", "install", "-q", "-y", "--no-install-recommends", "wrk"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if shutil.which("oha") is None:
        step("installing oha from crates.io (a few minutes)")
        run(["cargo", "install", "--locked", "oha"])
    if shutil.which("inferno-flamegraph") is None:
        step("installing inferno, which draws the flame graph, from crates.io (a few minutes)")
        run(["cargo", "install", "--locked", "inferno"])


def build_peers() -> None:
    step("building the peers with bench/peers/setup.sh")
    run([str(REPO / "bench/peers/setup.sh")], stdin=subprocess.DEVNULL)


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def peregrine_commit() -> dict:
    """Return the commit peregrine was last built from, and whether the work tree then had
    uncommitted changes to it, which the build left out."""
    stamp = PEREGRINE_SOURCE / ".commit"
    built = json.loads(stamp.read_text()) if stamp.exists() else {}
    return {"commit": built.get("commit", "unknown")[:12],
            "work_tree_changed": built.get("work_tree_changed", False)}


def export_head() -> str:
    """Export the committed HEAD to PEREGRINE_SOURCE and return its hash. Exporting only on
    a new commit keeps the files' times, so cargo rebuilds only what changed."""
    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "build.rs")
    stamp = PEREGRINE_SOURCE / ".commit"
    if not (stamp.exists() and json.loads(stamp.read_text())["commit"] == commit):
        shutil.rmtree(PEREGRINE_SOURCE, ignore_errors=True)
        PEREGRINE_SOURCE.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(PEREGRINE_SOURCE)], input=archive, check=True)
    stamp.write_text(json.dumps({"commit": commit, "work_tree_changed": bool(changed)}))
    return commit


def build_rust() -> None:
    commit = export_head()
    step(f"building peregrine {commit[:12]}, the committed HEAD (release, LTO)")
    run(["cargo", "build", "--release", "--locked"], cwd=PEREGRINE_SOURCE,
        env={**os.environ, "CARGO_TARGET_DIR": str(PEREGRINE_BINARY.parents[1])})
    step("building the hyper baseline (release, LTO)")
    run(["cargo", "build", "--release", "--locked"], cwd=REPO / "bench/hyper-baseline",
        env={**os.environ, "CARGO_TARGET_DIR": str(HYPER_TARGET)})
    step("building the axum baseline (release, LTO)")
    run(["cargo", "build", "--release", "--locked"], cwd=REPO / "bench/axum-baseline",
        env={**os.environ, "CARGO_TARGET_DIR": str(AXUM_TARGET)})


def binary_sizes(build_dir: Path) -> dict[str, int]:
    """Return the sizes in bytes of the compiled servers, peregrine also stripped."""
    peregrine = PEREGRINE_BINARY
    stripped = build_dir / "peregrine.stripped"
    subprocess.run(["strip", "-o", str(stripped), str(peregrine)], check=True)
    return {
        "peregrine": peregrine.stat().st_size,
        "peregrine_stripped": stripped.stat().st_size,
        "hyper": (HYPER_TARGET / "release/hyper-baseline").stat().st_size,
        "go": (REPO / "bench/peers/build/go/gopeer").stat().st_size,
    }


def tool_versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"unknown ({err})"
        text = (result.stdout or result.stderr).strip()
        return text.splitlines()[0] if text else "unknown"

    return {
        "rustc": first_line(["rustc", "--version"]),
        "go": first_line(["/usr/lib/go-1.23/bin/go", "version"]),
        "node": first_line(["node", "--version"]),
        "python": first_line([str(REPO / "bench/peers/build/python/venv/bin/python"), "--version"]),
        "java": first_line(["java", "-version"]),
        "postgres": first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "wrk": first_line(["wrk", "-v"]),
        "oha": first_line(["oha", "--version"]),
    }
