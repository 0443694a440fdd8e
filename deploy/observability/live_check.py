#!/usr/bin/env python3
"""Run every dashboard and alert query on a real Prometheus that scrapes a running peregrine.

The script starts BINARY (peregrine on SQLite in a temporary directory, every listener on
127.0.0.1 at a port the kernel picks) and Debian's `prometheus` on 127.0.0.1, which scrapes
peregrine's metrics listener every second and loads alerts.rules.yml. It sends a bounded load
of creates, reads, 404s and rejected requests, waits for two scrapes after it, and then, for
every expression of grafana-dashboard.json and alerts.rules.yml:

- runs it through /api/v1/query, and a query that returns an error is a problem;
- looks up every metric it names in /api/v1/label/__name__/values;
- looks up every label it matches on a metric among the labels of that metric's series, and
  every label of a by, without, on or ignoring clause among the labels of the series of the
  metrics it names.

An expression may return an empty vector (no 5xx happened, no request was shed) as long as
every name in it exists. The static labels namespace and pod in the scrape configuration
stand in for the ones the Prometheus operator adds from Kubernetes service discovery.
kube_pod_status_ready comes from kube-state-metrics, which does not run here: its rule still
runs through the query API, but its name and labels are not looked up.

Before that, the script checks itself: a few wrong expressions must each be reported.

Usage: live_check.py BINARY. Exits 1 with one line per problem. Every wait is bounded, and
the script stops the processes it started by their PIDs; they also get SIGTERM when the
script dies.
"""

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

# Importing check_queries from the source tree must leave no __pycache__ there.
sys.dont_write_bytecode = True
from check_queries import DASHBOARD, RULES, dashboard_queries, metric_names, substitute  # noqa: E402

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL_SECONDS = 1
# Metrics of other exporters that the queries name and that nothing scrapes here.
NOT_SCRAPED = {"kube_pod_status_ready"}
# The PromQL clauses that take a list of label names.
GROUPING_KEYWORDS = r"by|without|on|ignoring|group_left|group_right"
# Expressions that the check must report, each for its own reason.
WRONG_EXPRESSIONS = {
    "an unknown metric": "sum(rate(http_server_no_such_metric_total[1m]))",
    "an unknown matcher label": 'http_server_requests_total{no_such_label="x"}',
    "an unknown grouping label": "sum by (no_such_label) (http_server_requests_total)",
    "a syntax error": "sum(rate(http_server_requests_total[1m])",
}
# Bounds of every wait.
START_TIMEOUT = 30
SCRAPE_TIMEOUT = 30
RULES_TIMEOUT = 30
STOP_TIMEOUT = 10
REQUEST_TIMEOUT = 5


def die_with_parent():
    """Make the kernel send SIGTERM to this child when the script exits (Linux prctl)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method, url, body=None):
    """Send one request and return (status, body); a refused connection is status 0."""
    data = None if body is None else body.encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def start_peregrine(binary, work):
    """Start peregrine and return (process, API address, metrics address)."""
    log_path = work / "peregrine.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": f"sqlite://{work / 'peregrine.db'}",
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "0",
        "METRICS_ADDR": "127.0.0.1:0",
        "ADMIN_ADDR": "127.0.0.1:0",
        "LOG_FORMAT": "json",
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("message") == "listening":
                return process, event["address"], event["metrics_address"]
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop(process)
    sys.exit(f"peregrine did not start within {START_TIMEOUT}s; its log:\n"
             f"{log_path.read_text()}")


def start_prometheus(metrics_address, work):
    """Start Prometheus scraping `metrics_address` and return (process, its URL)."""
    port = free_port()
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "peregrine",
            "static_configs": [{
                "targets": [metrics_address],
                "labels": {"namespace": "peregrine", "pod": "peregrine-live-check"},
            }],
        }],
    }
    config_path = work / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))

    log_path = work / "prometheus.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}",
             f"--storage.tsdb.path={work / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if http("GET", f"{url}/-/ready")[0] == 200:
            return process, url
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop(process)
    sys.exit(f"Prometheus did not become ready within {START_TIMEOUT}s; its log:\n"
             f"{log_path.read_text()}")


def stop(process):
    """Send SIGTERM to `process` by its PID, and SIGKILL if it has not exited in time."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def send_load(address):
    """Send a fixed set of requests and return the number of responses by status."""
    base = f"http://{address}"
    statuses = {}

    def record(method, path, body=None):
        status, text = http(method, base + path, body)
        statuses[status] = statuses.get(status, 0) + 1
        return status, text

    ids = []
    for i in range(20):
        body = json.dumps({"name": f"Live {i}", "email": f"live{i}@example.com"})
        status, text = record("POST", "/api/v1/users", body)
        if status == 201:
            ids.append(json.loads(text)["id"])
    for i in range(20):
        if ids:
            record("GET", f"/api/v1/users/{ids[i % len(ids)]}")
    record("GET", "/api/v1/users?limit=5")
    for i in range(10):
        record("GET", f"/api/v1/users/{9_000_000 + i}")
    for _ in range(5):
        record("POST", "/api/v1/users", "{not json")
        record("POST", "/api/v1/users", json.dumps({"name": "X", "email": "not an address"}))
        record("GET", "/api/v1/users/not-a-number")
        record("GET", "/no/such/route")
    return statuses


def query(prometheus, path, params=None):
    """Return the decoded JSON of a Prometheus API GET, errors included."""
    url = f"{prometheus}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    status, text = http("GET", url)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"status": "error", "error": f"HTTP {status}: {text[:200]}"}


def scrapes(prometheus):
    """Return the number of scrapes of peregrine stored so far."""
    result = query(prometheus, "/api/v1/query",
                   {"query": 'count_over_time(up{job="peregrine"}[1h])'})
    vector = result.get("data", {}).get("result", [])
    return int(vector[0]["value"][1]) if vector else 0


def wait_for_scrapes(prometheus, count):
    """Wait until `count` more scrapes of peregrine are stored."""
    target = scrapes(prometheus) + count
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while scrapes(prometheus) < target:
        if time.monotonic() > deadline:
            sys.exit(f"Prometheus did not scrape peregrine {count} times within "
                     f"{SCRAPE_TIMEOUT}s; see {prometheus}/api/v1/targets")
        time.sleep(0.2)


def rule_expressions():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"{RULES.name}: {rule['alert']}", rule["expr"], []


def dashboard_expressions():
    """Yield (where, expression, extra labels) for each dashboard query. For a variable
    `label_values(selector, label)` the expression is the selector, and its metric must carry
    the extra label."""
    dashboard = json.loads(DASHBOARD.read_text())
    for where, expr in dashboard_queries(dashboard):
        extra = []
        if where.startswith("variable "):
            variable = next(v for v in dashboard["templating"]["list"]
                            if f"variable {v['name']}" == where)
            extra = [variable["query"]["query"].rsplit(",", 1)[1].strip(" )")]
        yield f"{DASHBOARD.name}: {where}", substitute(expr), extra


class Names:
    """The metric names and the labels of each metric's series that Prometheus stores."""

    def __init__(self, prometheus):
        self.prometheus = prometheus
        names = query(prometheus, "/api/v1/label/__name__/values")
        if names.get("status") != "success":
            sys.exit(f"Prometheus did not list the metric names: {names.get('error')}")
        self.metrics = set(names["data"])
        self.labels = {}

    def labels_of(self, metric):
        if metric not in self.labels:
            series = query(self.prometheus, "/api/v1/series", {"match[]": metric})
            self.labels[metric] = {label for labels in series.get("data", [])
                                   for label in labels if label != "__name__"}
        return self.labels[metric]


def selectors(expr):
    """Yield (metric, matcher labels) for every `metric{...}` selector of `expr`."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}", text):
        labels = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(2))
        yield match.group(1), labels


def grouping_labels(expr):
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = []
    for match in re.finditer(rf"\b(?:{GROUPING_KEYWORDS})\s*\(([^)]*)\)", text):
        labels += [label.strip() for label in match.group(1).split(",") if label.strip()]
    return labels


def check(prometheus, names, where, expr, extra_labels):
    """Return the problems of one expression, and the number of series it returned."""
    problems = []
    result = query(prometheus, "/api/v1/query", {"query": expr})
    if result.get("status") != "success":
        problems.append(f"{where}: query failed: {result.get('error')}")
    returned = len(result.get("data", {}).get("result", []))

    metrics = metric_names(expr) - NOT_SCRAPED
    for metric in sorted(metrics - names.metrics):
        problems.append(f"{where}: no series named {metric}")
    known = metrics & names.metrics
    for metric, labels in selectors(expr):
        if metric not in known:
            continue
        for label in labels + extra_labels:
            if label not in names.labels_of(metric):
                problems.append(f"{where}: {metric} has no label {label}")
    on_some_metric = set().union(*(names.labels_of(metric) for metric in known))
    for label in grouping_labels(expr):
        if known and label not in on_some_metric:
            problems.append(f"{where}: no series of {', '.join(sorted(known))} has label "
                            f"{label}")
    return problems, returned


def wait_for_rules(prometheus):
    """Return the problems of the loaded alert rules once each has been evaluated."""
    deadline = time.monotonic() + RULES_TIMEOUT
    while True:
        groups = query(prometheus, "/api/v1/rules").get("data", {}).get("groups", [])
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("health") != "unknown" for rule in rules):
            break
        if time.monotonic() > deadline:
            return [f"Prometheus did not evaluate the alert rules within {RULES_TIMEOUT}s"]
        time.sleep(0.2)
    expected = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    problems = [f"{RULES.name}: {rule['name']}: evaluation failed: {rule.get('lastError')}"
                for rule in rules if rule.get("health") != "ok"]
    if len(rules) != expected:
        problems.append(f"Prometheus loaded {len(rules)} alert rules, not {expected}")
    return problems


def run(binary, work):
    peregrine, address, metrics_address = start_peregrine(binary, work)
    prometheus_process = None
    try:
        prometheus_process, prometheus = start_prometheus(metrics_address, work)
        statuses = send_load(address)
        print("load sent, responses by status:",
              ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())))
        wait_for_scrapes(prometheus, 2)
        names = Names(prometheus)

        problems = []
        for reason, expr in WRONG_EXPRESSIONS.items():
            found, _ = check(prometheus, names, f"self-check, {reason}", expr, [])
            if not found:
                problems.append(f"the check did not report {reason} in {expr}")
            print(found[0] if found else f"self-check, {reason}: NOT REPORTED")

        expressions = list(dashboard_expressions()) + list(rule_expressions())
        for where, expr, extra in expressions:
            found, returned = check(prometheus, names, where, expr, extra)
            problems += found
            print(f"{'FAIL' if found else 'ok  '} {returned:3} series  {where}")
        problems += wait_for_rules(prometheus)
        if 0 in statuses:
            problems.append(f"{statuses[0]} load requests got no response")
        return problems, len(expressions), len(names.metrics)
    finally:
        if prometheus_process is not None:
            stop(prometheus_process)
        stop(peregrine)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: live_check.py BINARY")
    binary = str(Path(sys.argv[1]).resolve())
    with tempfile.TemporaryDirectory(prefix="peregrine-live-check-") as work:
        problems, expressions, metrics = run(binary, Path(work))
    for problem in problems:
        print(problem)
    print(f"{expressions} expressions run on Prometheus against {metrics} scraped metric "
          f"names; {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
