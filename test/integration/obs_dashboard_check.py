#!/usr/bin/env python3
"""Validates the Grafana dashboard shipped in the chart (deploy/helm/tessera/dashboards/tessera.json).

  obs_dashboard_check.py DASHBOARD --metrics FILE...      structure + every metric a panel queries is in
                                                          one of the FILEs (Prometheus text from /metrics)
  obs_dashboard_check.py DASHBOARD --prometheus URL       also runs every panel query through a live
                                                          Prometheus: it must parse and return data
Exit status 1 with one line per problem.
"""
import json
import re
import sys
import urllib.parse
import urllib.request

PROMQL_WORDS = {
    # aggregations, functions and keywords the dashboard may use
    "sum", "avg", "max", "min", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
    "rate", "irate", "increase", "delta", "histogram_quantile", "topk", "bottomk", "label_values", "clamp_min",
    "clamp_max", "abs", "and", "or", "unless", "offset", "bool", "vector", "scalar", "time", "sort", "sort_desc",
}


def metric_names(expr):
    """Metric names an expression reads: identifiers left after removing strings, label matchers,
    ranges, grouping clauses, numbers and PromQL words."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r'\{[^}]*\}', ' ', e)
    e = re.sub(r'\[[^\]]*\]', ' ', e)
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', e)
    names = set()
    for tok in re.findall(r'[A-Za-z_:][A-Za-z0-9_:]*', e):
        if tok in PROMQL_WORDS or re.fullmatch(r'\d', tok):
            continue
        names.add(tok)
    return names


def exported_names(paths):
    """Series names in the files, plus families declared by # TYPE (a family may have no series yet, e.g.
    no bind has failed); a histogram family also exports <name>_bucket, _sum and _count."""
    names = set()
    for p in paths:
        for line in open(p):
            m = re.match(r'^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) (\w+)', line)
            if m:
                names.add(m.group(1))
                if m.group(2) in ("histogram", "summary"):
                    names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
                continue
            m = re.match(r'^([A-Za-z_:][A-Za-z0-9_:]*)', line)
            if m:
                names.add(m.group(1))
    return names


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):
            yield q


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in ("--metrics", "--prometheus"):
        print(__doc__, file=sys.stderr)
        return 2
    problems = []
    dash = json.load(open(sys.argv[1]))
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.append(f"dashboard has no {key}")
    ids = set()
    exprs = []
    for p in panels_of(dash):
        pid = p.get("id")
        if pid in ids:
            problems.append(f"panel id {pid} used twice")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(k in g for k in ("x", "y", "w", "h")) or g.get("x", 0) + g.get("w", 0) > 24:
            problems.append(f"panel {p.get('title')!r}: gridPos {g} outside the 24-column grid")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {p.get('title')!r} has no query")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p.get('title')!r} does not use the $datasource variable")
        for t in targets:
            if not t.get("expr"):
                problems.append(f"panel {p.get('title')!r} target {t.get('refId')} has no expr")
            else:
                exprs.append((p.get("title"), t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict) and q.get("query"):
            m = re.match(r'label_values\(([A-Za-z_:][A-Za-z0-9_:]*)', q["query"])
            if m:
                exprs.append((f"variable {v['name']}", m.group(1)))

    if sys.argv[2] == "--metrics":
        have = exported_names(sys.argv[3:])
        for title, expr in exprs:
            for n in sorted(metric_names(expr)):
                if n not in have:
                    problems.append(f"{title!r} queries {n}, which no endpoint exports")
    else:
        base = sys.argv[3].rstrip("/")
        for title, expr in exprs:
            q = expr.replace("$gpu", ".*").replace("$namespace", ".*")
            url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = json.load(r)
            except urllib.error.HTTPError as e:
                body = json.load(e)
            if body.get("status") != "success":
                problems.append(f"{title!r}: Prometheus refused {q!r}: {body.get('error')}")
    for p in problems:
        print(p)
    print(f"checked {len(exprs)} queries in {sum(1 for _ in panels_of(dash))} panels", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
