"""The results page (Markdown) and its charts (PNG), written from a run's results."""

import os
import platform
import statistics
import subprocess
from pathlib import Path

from .servers import REPO, SERVERS, SERVERS_BY_NAME

SCENARIO_TITLES = {
    "hello": "hello: `GET /`",
    "db": "db: `GET /api/v1/users/{id}`",
    "stress": "stress: `GET /api/v1/users/{id}` under many connections",
    "profile": "profile: `GET /api/v1/users/{id}/profile`",
    "profile-stress": "profile-stress: `GET /api/v1/users/{id}/profile` under many connections",
}
ARTICLE = ("\"Why Go Is Ideal for High-Throughput APIs in Kubernetes Environments\" "
           "(support.tools, https://support.tools/go-language-high-throughput-apis-kubernetes/)")
MIB = 1024 * 1024


def machine() -> dict:
    model = "unknown"
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    with open("/proc/meminfo") as meminfo:
        memory_kib = int(meminfo.readline().split()[1])
    return {"cpu_model": model, "cores": os.cpu_count(), "memory_gib": round(memory_kib / 1024 / 1024, 1),
            "kernel": platform.release()}


def median_of(records: list[dict], key: str) -> float | None:
    values = [record[key] for record in records if record.get(key) is not None]
    return statistics.median(values) if values else None


def group(records: list[dict], scenario: str, server: str) -> list[dict]:
    return [r for r in records if r["scenario"] == scenario and r["server"] == server]


def fmt_number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def fmt_mib(value: float | None) -> str:
    return "–" if value is None else f"{value / MIB:.1f} MiB"


def fmt_us(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} µs"


def scenario_rows(results: dict, scenario: str) -> list[dict]:
    """Return one row of medians per server that has runs in the scenario."""
    rows = []
    for spec in SERVERS:
        runs = group(results["wrk"], scenario, spec.name)
        if not runs:
            continue
        oha_runs = group(results["oha"], scenario, spec.name)
        rates = [r["requests_per_second"] for r in runs]
        rows.append({
            "server": spec.name, "label": spec.label, "runs": len(runs),
            "rps": statistics.median(rates), "rps_min": min(rates), "rps_max": max(rates),
            "mean_ms": median_of(runs, "latency_mean_ms"), "p99_ms": median_of(runs, "latency_p99_ms"),
            "error_rate": median_of(runs, "error_rate"), "rss": median_of(runs, "peak_rss_bytes"),
            "cpu_us": median_of(runs, "server_cpu_us_per_request"),
            "pg_us": median_of(runs, "pg_cpu_us_per_request"),
            "oha_p99_ms": median_of(oha_runs, "latency_p99_ms"),
            "oha_error_rate": median_of(oha_runs, "error_rate"),
        })
    return rows


def scenario_table(results: dict, scenario: str, rows: list[dict]) -> list[str]:
    go = next((row for row in rows if row["server"] == "go"), None)
    rate = results["oha_rates"].get(scenario)
    oha_header = f"p99 at {rate:,} req/s (oha)" if rate else "p99 fixed rate (oha)"
    lines = [
        f"| server | req/s (min–max) | vs Go | avg latency | p99 | {oha_header} | errors "
        "| peak RSS | server CPU / req | PostgreSQL CPU / req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        ratio = f"{row['rps'] / go['rps']:.2f}×" if go and go["rps"] else "–"
        pg = fmt_us(row["pg_us"]) if scenario != "hello" else "–"
        oha = fmt_ms(row["oha_p99_ms"]) if scenario in results["oha_rates"] else "not run"
        lines.append(
            f"| {row['label']} | {fmt_number(row['rps'])} ({fmt_number(row['rps_min'])}–"
            f"{fmt_number(row['rps_max'])}) | {ratio} | {fmt_ms(row['mean_ms'])} | {fmt_ms(row['p99_ms'])} "
            f"| {oha} | {row['error_rate']:.2%} | {fmt_mib(row['rss'])} | {fmt_us(row['cpu_us'])} | {pg} |"
        )
    return lines


# The variants of peregrine that differ from it in one setting, and how a sentence names
# that setting.
VARIANT_SETTINGS = {
    "peregrine-auth": "Token validation: with an ES256 bearer token verified on every request",
    "peregrine-quiet": "Access log: with the access log off (`RUST_LOG=warn`)",
}


def variant_cost_lines(rows: list[dict]) -> list[str]:
    """Return one sentence per variant of peregrine that ran in the scenario, comparing its
    median throughput and CPU per request with the same binary in its default settings."""
    plain = next((row for row in rows if row["server"] == "peregrine"), None)
    if plain is None or not plain["rps"]:
        return []
    lines = []
    for row in rows:
        setting = VARIANT_SETTINGS.get(row["server"])
        if setting is None:
            continue
        cpu = "–"
        if plain["cpu_us"] is not None and row["cpu_us"] is not None:
            cpu = f"{row['cpu_us'] - plain['cpu_us']:+.1f} µs"
        lines += [
            f"{setting}, peregrine's median throughput is {row['rps'] / plain['rps'] - 1:+.1%} "
            f"and its server CPU per request {cpu} against the same binary in its default "
            "settings.",
            "",
        ]
    return lines


def startup_table(results: dict) -> list[str]:
    sizes = results.get("binary_sizes", {})
    lines = [
        "| server | start to first 200 on `GET /` (median, min–max) | idle RSS (median) | binary |",
        "|---|--:|--:|--:|",
    ]
    for record in results["startup"]:
        spec = SERVERS_BY_NAME[record["server"]]
        seconds = record["start_seconds"]
        binary = "–"
        if spec.name == "peregrine" and "peregrine" in sizes:
            binary = (f"{sizes['peregrine'] / MIB:.1f} MiB "
                      f"({sizes['peregrine_stripped'] / MIB:.1f} MiB stripped)")
        elif spec.name in sizes:
            binary = f"{sizes[spec.name] / MIB:.1f} MiB"
        lines.append(
            f"| {spec.label} | {statistics.median(seconds) * 1000:,.0f} ms ({min(seconds) * 1000:,.0f}–"
            f"{max(seconds) * 1000:,.0f}) | {fmt_mib(statistics.median(record['idle_rss_bytes']))} "
            f"| {binary} |"
        )
    return lines


def placement_lines(results: dict) -> list[str]:
    if not results["placement"]:
        return []
    lines = [
        "| server | db req/s, PostgreSQL on CPU 1 (median) | db req/s, PostgreSQL on CPUs 0–1 (one run) "
        "| p99 on CPU 1 | p99 on CPUs 0–1 |",
        "|---|--:|--:|--:|--:|",
    ]
    for record in results["placement"]:
        pinned = group(results["wrk"], "db", record["server"])
        lines.append(
            f"| {SERVERS_BY_NAME[record['server']].label} | {fmt_number(median_of(pinned, 'requests_per_second'))} "
            f"| {fmt_number(record['requests_per_second'])} | {fmt_ms(median_of(pinned, 'latency_p99_ms'))} "
            f"| {fmt_ms(record['latency_p99_ms'])} |"
        )
    return lines


def write_charts(results: dict, charts_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for scenario in SCENARIO_TITLES:
        rows = scenario_rows(results, scenario)
        if not rows:
            continue
        labels = [row["label"] for row in rows]
        colors = ["#c0392b" if row["server"] == "peregrine" else "#7f8c8d" for row in rows]
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.55 * len(rows) + 1.6))
        for axis, key, title in ((left, "rps", "requests/s (median)"), (right, "p99_ms", "p99 latency, ms (wrk, median)")):
            values = [row[key] or 0 for row in rows]
            axis.barh(labels, values, color=colors)
            axis.invert_yaxis()
            axis.set_title(title, fontsize=10)
            for index, value in enumerate(values):
                axis.text(value, index, f" {value:,.0f}" if key == "rps" else f" {value:,.1f}",
                          va="center", fontsize=8)
            axis.margins(x=0.2)
        right.set_yticklabels([])
        connections = results["meta"]["connections"][scenario]
        figure.suptitle(f"{scenario} scenario, {connections:,} connections", fontsize=11)
        figure.tight_layout()
        path = charts_dir / f"{scenario}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written[scenario] = path
    return written


def write_page(results: dict, page: Path, charts_dir: Path) -> None:
    charts = write_charts(results, charts_dir)
    meta = results["meta"]
    page.write_text("\n".join(page_lines(results, meta, charts, charts_dir, page.parent)) + "\n")


def overload_lines(results: dict, charts_dir: Path, page_dir: Path) -> list[str]:
    data = results.get("overload")
    if not data:
        return []
    summary = data["summary"]
    lines = [
        "## Overload: five times the sustainable rate",
        "",
        f"peregrine on the profile route (`GET /api/v1/users/{{id}}/profile`), first loaded by wrk at",
        f"{data['connections']:,} connections to find its capacity ({data['capacity']:,.0f} requests/s, the median of",
        f"{len(data['capacities'])} runs), then sent a fixed rate by oha (`-q`, `--latency-correction`, "
        f"{data['connections']:,} connections,",
        f"{data['seconds']} s): a tenth of the capacity ({data['unloaded_rate']:,} requests/s) for the "
        "unloaded p99, then five",
        f"times the capacity ({data['overload_rate']:,} requests/s). One fresh server per mode and run, "
        "the modes alternating;",
        "medians of the runs. Goodput is the 2xx responses per second and the admitted p99 is the",
        "p99 of those 2xx responses. Shed is the share of the requests sent that the in-flight",
        "limit rejected with 503, by its counter in `/metrics`. Other failures are the responses",
        "neither 2xx nor 503, and socket errors. The",
        f"sized static limit is the capacity times {data.get('sized_wait_seconds', 0.01) * 1000:g} ms, "
        "the README's rule; the default",
        "(10,000) is above oha's connections, so it never sheds and the requests wait in oha.",
        f"Command: `{data.get('command', results['meta']['command'])}`, "
        f"{data.get('date', results['meta']['date'])}.",
        "",
        "| LOAD_SHED | unloaded p99 | admitted p99 at 5× | admitted p99 / unloaded | goodput at 5× | "
        "goodput / capacity | shed | p99 of the non-2xx | sent (oha) | other failures |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode, row in summary.items():
        ratio = row["admitted_p99_ms"] / row["unloaded_p99_ms"] if row["unloaded_p99_ms"] else None
        lines.append(
            f"| {mode} | {fmt_ms(row['unloaded_p99_ms'])} | {fmt_ms(row['admitted_p99_ms'])} | "
            f"{'n/a' if ratio is None else f'{ratio:.1f}×'} | {row['goodput']:,.0f} req/s | "
            f"{row['goodput'] / data['capacity']:.0%} | {row['shed_share']:.0%} | "
            f"{fmt_ms(row.get('shed_p99_ms'))} | "
            f"{row['sent_rate']:,.0f} req/s | {row['failures']:,.0f} |")
    lines += [
        "",
        "The goals: at five times the capacity, an admitted p99 within twice the unloaded p99 and",
        "a goodput of at least 90% of the capacity. oha sends from one core, so the sent column",
        "shows whether it reached the rate it was given.",
        "",
    ]
    chart = overload_chart(data, charts_dir)
    lines += [f"![overload: goodput and admitted p99 per LOAD_SHED mode]"
              f"({os.path.relpath(chart, page_dir)})", ""]
    return lines


def overload_chart(data: dict, charts_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(data["summary"])
    rows = [data["summary"][mode] for mode in modes]
    positions = range(len(modes))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.bar(list(positions), [row["goodput"] for row in rows], color="#c0392b")
    left.axhline(data["capacity"], color="#2c3e50", linestyle="--", linewidth=1,
                 label=f"capacity {data['capacity']:,.0f}")
    left.axhline(0.9 * data["capacity"], color="#7f8c8d", linestyle=":", linewidth=1,
                 label="90% of capacity")
    left.set_title(f"goodput at {data['overload_rate']:,} req/s sent, req/s", fontsize=10)
    left.legend(fontsize=8, loc="upper right")
    width = 0.38
    right.bar([p - width / 2 for p in positions], [row["unloaded_p99_ms"] for row in rows], width,
              color="#7f8c8d", label="unloaded")
    right.bar([p + width / 2 for p in positions], [row["admitted_p99_ms"] for row in rows], width,
              color="#c0392b", label="admitted at 5×")
    for position, row in zip(positions, rows):
        right.plot([position - 0.45, position + 0.45], [2 * row["unloaded_p99_ms"]] * 2,
                   color="#2c3e50", linestyle="--", linewidth=1)
    # The mode labels carry their limit in brackets: one line each.
    tick_labels = [mode.replace(" (", "\n(") for mode in modes]
    left.set_xticks(list(positions), tick_labels, fontsize=8)
    right.set_xticks(list(positions), tick_labels, fontsize=8)
    # The unloaded p99 is under a millisecond and the queued one seconds: a log scale shows both.
    right.set_yscale("log")
    right.set_title("p99 of 2xx responses, ms, log scale (dashed: twice unloaded)", fontsize=10)
    right.legend(fontsize=8)
    figure.tight_layout()
    charts_dir.mkdir(parents=True, exist_ok=True)
    path = charts_dir / "overload.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def flame_lines(results: dict, page_dir: Path) -> list[str]:
    flame = results.get("flame_graph")
    if not flame:
        return []

    path = os.path.relpath(REPO / flame["path"], page_dir)
    # The profile covers `seconds` of the `load_seconds` of load, so the requests in it are
    # about that share of wrk's count.
    requests = flame["requests"] * flame["seconds"] / flame["load_seconds"]
    sampled = flame["sampled_us"]

    lines = [
        "## Where peregrine's time goes",
        "",
        f"A CPU profile of peregrine over {flame['seconds']} s of the db load at "
        f"{flame['connections']:,} connections, taken",
        "from its admin listener (`/debug/pprof/profile`) in a separate, unmeasured run, drawn",
        "with inferno. The profiler drops the samples that land in libc, libgcc, pthread and the",
        "vDSO (system calls, `memcpy`, clock reads), so the graph shows user-space time outside",
        "those libraries only.",
    ]

    if requests and flame.get("user_us") is not None:
        user = flame["user_us"] / requests
        system = flame["system_us"] / requests
        lines += [
            f"Over the same {flame['seconds']} s, `/proc/PID/stat` counts {user:.1f} µs of user "
            f"and {system:.1f} µs of system CPU",
            "per request: the system time, which the graph leaves out, is mostly the kernel's TCP",
            "work for the HTTP and PostgreSQL connections.",
        ]

    lines += [
        "Open the SVG to search it and to read the narrow frames.",
        "",
        f"[![flame graph of the db route]({path})]({path})",
        "",
    ]

    if sampled and requests:
        lines += [
            "The sampled time per request of each part of the request path. A sample counts for",
            "the library of its frame nearest the leaf, so time the allocator spends for the log",
            "counts as the allocator's; the requests are wrk's count over the load, scaled to the",
            "profile's length:",
            "",
            "| part | share of the samples | sampled µs per request |",
            "|---|--:|--:|",
            f"| all | 100% | {sampled / requests:.1f} |",
        ]
        for name, micros in flame["parts_us"].items():
            lines.append(f"| {name} | {micros / sampled:.0%} | {micros / requests:.1f} |")
        lines.append("")
    return lines


def load_average_sentence(results: dict) -> str:
    values = [r["load_average_1m"] for r in results["wrk"] if r.get("load_average_1m") is not None]
    if not values:
        return ""
    return (f" The 1-minute load average at the end of the wrk runs was {min(values):.1f} to "
            f"{max(values):.1f}, of which the server under test and wrk make about 2.")


# Figures measured outside bench/run's scenarios (allocators, logging and metrics cost), each
# with its own command and date, kept by hand and copied onto every generated page.
MEASUREMENTS = REPO / "bench/measurements.md"


def measurement_lines() -> list[str]:
    if not MEASUREMENTS.exists():
        return []
    return [f"<!-- copied from {MEASUREMENTS.relative_to(REPO)} -->",
            *MEASUREMENTS.read_text().rstrip("\n").split("\n"), ""]


def page_lines(results: dict, meta: dict, charts: dict[str, Path], charts_dir: Path,
               page_dir: Path) -> list[str]:
    machine_info = meta["machine"]
    connections = meta["connections"]
    runs = f"{meta['runs']} run" + ("s" if meta["runs"] != 1 else "")
    lines = [
        "# Benchmarks",
        "",
        "peregrine beside minimal hyper and axum servers and the peer services in Go, Node.js, Python",
        "and Java (`bench/peers/`), re-measuring on one machine the well-known \"Go for high-throughput",
        "APIs\" comparison, which ran wrk with 16 threads, 500 connections and 30 s runs. The",
        f"article that matches it best among the stored copies searched is {ARTICLE}, but that copy",
        "shows only its introduction, so neither its set-up nor its figures could be checked.",
        "`bench/run` wrote this page; do not edit it by hand.",
        "",
        f"- Date: {meta['date']}; the run took {meta['elapsed_seconds'] / 60:.0f} minutes.",
        f"- Command: `{meta['command']}`",
        f"- peregrine: commit {meta['peregrine']['commit']}, built by the runner from the committed tree"
        + (" (the work tree had uncommitted changes to peregrine, which were not measured)."
           if meta["peregrine"]["work_tree_changed"] else "."),
        f"- Machine: {machine_info['cpu_model']}, {machine_info['cores']} cores, "
        f"{machine_info['memory_gib']} GiB of memory, Linux {machine_info['kernel']}.",
        "- The machine is shared: other engineers compiled and ran tests on it during the run, so",
        "  the figures carry noise that repeated runs reduce but do not remove. The min–max range",
        "  beside each throughput shows the spread." + load_average_sentence(results),
        f"- Each figure is the median of {runs} of {meta['seconds']} s, taken column by "
        "column, after",
        f"  {meta['warmup_seconds']} s of unmeasured warm-up load on a freshly started server. The runs "
        "alternate",
        "  between servers (run 1 of every server, then run 2 of every server), so drift hits all alike.",
        f"- Load: wrk with 2 threads (the original used 16 threads on a larger machine) and "
        f"{connections['hello']:,},",
        f"  {connections['db']:,} and {connections['stress']:,} connections, `--timeout 30s`.",
        f"- Placement: the server under test runs on CPU {meta['server_cpus']}, wrk on CPU "
        f"{meta['load_cpus']} (taskset), PostgreSQL on CPU {meta['pg_cpus']}.",
        "  Every runtime sizes itself to the one CPU it may use: one Go `GOMAXPROCS`, one tokio",
        "  worker, one Node.js and one uvicorn worker, and Java's `availableProcessors()` of 1.",
        "",
    ]
    if results["failures"]:
        lines += ["## Failures in this run", ""]
        lines += [f"- {' '.join(failure.split())[:400]}" for failure in results["failures"]] + [""]

    for scenario, title in SCENARIO_TITLES.items():
        rows = scenario_rows(results, scenario)
        if not rows:
            continue
        lines += [f"## {title}, {connections[scenario]:,} connections", ""]
        lines += scenario_table(results, scenario, rows) + [""]
        lines += variant_cost_lines(rows)
        if scenario in charts:
            lines += [f"![{scenario}: throughput and p99]({os.path.relpath(charts[scenario], page_dir)})", ""]

    lines += overload_lines(results, charts_dir, page_dir)
    lines += flame_lines(results, page_dir)

    lines += ["## Start-up, idle memory and binary size", ""]
    lines += startup_table(results) + [""]
    startup = results["startup_settings"]
    lines += [
        "Start-up is the time from starting the process to its first 200 on `GET /`, polled every",
        f"2 ms, over {startup['starts']} starts. peregrine runs on SQLite there (a migrated file), the",
        f"peers on PostgreSQL as they start. Idle RSS is read {startup['idle_seconds']:g} s after that "
        "first 200, before any load.",
        "",
    ]

    placement = placement_lines(results)
    if placement:
        lines += ["## Where PostgreSQL runs", ""]
        lines += [
            "PostgreSQL shares CPU 1 with the server under test, so wrk keeps CPU 0 to itself and",
            "a server pays for the database work its requests cause. For comparison, one db run of",
            "Go and of peregrine with PostgreSQL free to use both CPUs (one run each, so noisier):",
            "",
        ] + placement + [""]

    lines += [
        "## Java: Jetty and HikariCP, not Spring Boot",
        "",
        "The original comparison measured Spring Boot. No Maven registry is reachable from this",
        "machine, so the Java peer is a Jetty 9 servlet service with HikariCP and pgjdbc from Debian's",
        "packages, labelled \"Java (Jetty + HikariCP)\". The original article's Spring Boot figures would",
        "belong beside it as \"not re-measured\", but they could not be found (see the top of this",
        "page), so none are quoted here.",
        "",
        "## What each column means",
        "",
        "- **req/s**: responses per second over the run, as wrk counts them (all statuses).",
        "- **vs Go**: the server's median req/s over the Go peer's.",
        "- **avg latency, p99**: wrk's, measured from when each request was sent. wrk sends the next",
        "  request on a connection only after the response, so a stalled server delays the requests",
        "  it would have received and their wait is not counted (coordinated omission).",
        "- **p99 at a fixed rate (oha)**: oha sends requests at a fixed rate shared by every server",
        f"  ({meta['oha_rate_share']:.0%} of the slowest server's median req/s, rounded down) for "
        f"{meta['oha_seconds']} s over up to {connections['db']:,}",
        "  connections, with `--latency-correction`, which measures from when each request was due.",
        "  Not run for stress: at a rate all servers sustain, its extra connections are idle.",
        "- **errors**: socket errors (connect, read, write, timeout) plus responses with status 400",
        "  or more, over responses plus socket errors.",
        "- **peak RSS**: the largest sum of RSS over the server's process tree, sampled every 100 ms",
        "  during the measured run. Pages shared by forked workers (Node.js, Python) count once per",
        "  process.",
        "- **server CPU / req**: user and system CPU time of every process in the server's tree,",
        "  exited and reaped children included (cutime, cstime), over the measured run, divided by",
        "  its responses.",
        "- **PostgreSQL CPU / req**: the same for every process of the PostgreSQL cluster; backends",
        "  that exited count through the postmaster's cutime and cstime.",
        "",
        "## Versions",
        "",
    ]
    lines += [f"- {name}: {version}" for name, version in meta["versions"].items()]
    lines += [
        "",
        *measurement_lines(),
        "## Reproduce",
        "",
        "    bench/run                          # everything: builds, then about an hour of runs",
        "    bench/run --only peregrine --only go --only db",
        "    bench/run --quick                  # a few minutes after the builds; checks, no figures",
        "",
        "`bench/run --help` lists the options. Raw wrk and oha output and one JSON file per run are",
        "in `bench/results/`.",
    ]
    return lines
