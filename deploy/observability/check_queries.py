#!/usr/bin/env python3
"""Check the dashboard's and the alert rules' queries without a running Prometheus.

- Every metric a query names must be one the service exports (EXPORTED below), or one of
  the few that Prometheus or kube-state-metrics provide (EXTERNAL).
- The PrometheusRule in the monitoring overlay must carry exactly the groups of
  alerts.rules.yml.
- Every dashboard query, with its Grafana variables replaced by sample values, is written
  as a recording rule to OUTPUT, so that `promtool check rules OUTPUT` parses it.

Usage: check_queries.py OUTPUT. Exits 1 with one line per problem.

With `--scraped FILE`, it checks instead that FILE, a /metrics page of a running peregrine,
has a sample of every metric in EXPORTED.
"""

import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "grafana-dashboard.json"
RULES = HERE / "alerts.rules.yml"
PROMETHEUS_RULE = HERE.parent / "k8s" / "overlays" / "monitoring" / "prometheusrule.yaml"

# The names peregrine exports. A histogram's series carry the suffixes _bucket, _sum and
# _count, and a counter's the suffix _total, as in the Prometheus text format.
EXPORTED = {
    "http_server_requests_total",
    "http_server_request_duration_seconds",
    "http_server_requests_in_flight",
    "http_server_requests_shed_total",
    "db_pool_connections",
    "db_pool_max_connections",
    "db_pool_wait_seconds",
    "db_query_duration_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_threads",
    "build_info",
}
EXTERNAL = {"up", "kube_pod_status_ready"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Sample values for the dashboard's variables, so its queries parse as plain PromQL.
GRAFANA_VARIABLES = {
    "${datasource}": "prometheus",
    "$__rate_interval": "1m",
    "$job": "peregrine",
    "$namespace": ".*",
    "$route": ".*",
}

PROMQL_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "le",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "absent",
    "absent_over_time", "label_values", "clamp_min", "clamp_max", "time", "vector",
}


def metric_names(expr):
    """Return the metric names in a PromQL expression: identifiers outside braces and
    strings that are not functions, keywords, label names in by/without, or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()[:1]
        if word in PROMQL_KEYWORDS or following == "(":
            continue
        names.add(word)
    return names


def is_known(name):
    if name in EXPORTED or name in EXTERNAL:
        return True
    return any(name.endswith(s) and name[: -len(s)] in EXPORTED for s in HISTOGRAM_SUFFIXES)


def dashboard_queries(dashboard):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and query["query"].startswith("label_values("):
            inner = query["query"][len("label_values("):].rsplit(",", 1)[0]
            yield f"variable {variable['name']}", inner


def substitute(expr):
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def check_scraped(page):
    """Exit 1, naming them, unless every exported metric has a sample on the page."""
    sampled = {line.split("{")[0].split(" ")[0] for line in page.splitlines()
               if line and not line.startswith("#")}
    missing = []
    for name in sorted(EXPORTED):
        if name not in sampled and f"{name}_bucket" not in sampled:
            missing.append(name)
    for name in missing:
        print(f"no sample of {name} on the /metrics page")
    print(f"{len(EXPORTED) - len(missing)} of {len(EXPORTED)} exported metrics on the /metrics page")
    sys.exit(1 if missing else 0)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--scraped":
        check_scraped(Path(sys.argv[2]).read_text())
    if len(sys.argv) != 2:
        sys.exit("usage: check_queries.py OUTPUT, or check_queries.py --scraped FILE")
    output = Path(sys.argv[1])
    problems = []

    groups = yaml.safe_load(RULES.read_text())["groups"]
    wrapped = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"]
    if groups != wrapped:
        problems.append(
            f"{PROMETHEUS_RULE.name}: spec.groups differ from {RULES.name}; copy the groups "
            f"of {RULES.name} under spec"
        )
    for group in groups:
        for rule in group["rules"]:
            for name in sorted(metric_names(rule["expr"])):
                if not is_known(name):
                    problems.append(f"{RULES.name}: {rule['alert']} uses unknown metric {name}")

    dashboard = json.loads(DASHBOARD.read_text())
    recording = []
    for index, (where, expr) in enumerate(dashboard_queries(dashboard)):
        plain = substitute(expr)
        if "$" in plain:
            problems.append(f"{DASHBOARD.name}: {where}: unknown variable in {expr}")
        for name in sorted(metric_names(plain)):
            if not is_known(name):
                problems.append(f"{DASHBOARD.name}: {where}: unknown metric {name}")
        recording.append({"record": f"dashboard:query_{index}", "expr": plain})
    output.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))

    for problem in problems:
        print(problem)
    print(f"{len(recording)} dashboard queries and {sum(len(g['rules']) for g in groups)} "
          f"alert rules checked against {len(EXPORTED)} exported metrics")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
