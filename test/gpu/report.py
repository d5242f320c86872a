#!/usr/bin/env python3
"""Folds the results/checks JSON lines written by test/gpu/run into one gpu-results.json document."""
import json
import sys


def main():
    results, checks = {}, []
    for line in open(sys.argv[1]):
        if line.strip():
            r = json.loads(line)
            results.setdefault(r["section"], {})[r["name"]] = r["data"]
    for line in open(sys.argv[2]):
        if line.strip():
            checks.append(json.loads(line))
    summary = {"pass": sum(c["status"] == "pass" for c in checks),
               "fail": sum(c["status"] != "pass" for c in checks)}
    json.dump({"summary": summary, "checks": checks, "results": results}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
