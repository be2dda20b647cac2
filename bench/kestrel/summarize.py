#!/usr/bin/env python3
"""Markdown summary of a bench/kestrel/wrk-rounds.sh results file.

usage: summarize.py RESULTS.csv [SERVERS.csv]

Per load and pool: median req/s with min-max, median p50 and p99 latency, total socket errors and non-2xx responses,
median allocated bytes per request, median RSS after the loads and after the decay; then the ratios of every other
pool to kestrel. With the servers file (RESULTS-servers.csv, written next to the results), one line per pool on the
servers' health: exit codes, warnings and errors in their logs, failed correctness checks, fallback rents, arena checks.
"""
import csv
import os
import statistics
import sys


def median(values):
    return statistics.median(values) if values else float("nan")


def num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def intval(text):
    v = num(text)
    return int(v) if v == v else 0


def fmt(value, digits=0):
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    servers_path = sys.argv[2] if len(sys.argv) > 2 else path[:-4] + "-servers.csv" if path.endswith(".csv") else None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{path}: no measurements")
        return 1

    loads, pools = [], []
    for r in rows:
        if r["load"] not in loads:
            loads.append(r["load"])
        if r["pool"] not in pools:
            pools.append(r["pool"])
    pools.sort(key=lambda p: (p != "kestrel", p))
    rounds = len({r["round"] for r in rows})

    groups = {}
    for r in rows:
        groups.setdefault((r["load"], r["pool"]), []).append(r)

    def col(load, pool, name):
        return [v for v in (num(r[name]) for r in groups.get((load, pool), [])) if v == v]

    print(f"Kestrel buffer pools under wrk: {rounds} round(s), results {path}")
    print()
    print("| load | pool | n | req/s median (min–max) | spread | p50 ms | p99 ms | socket errors | non-2xx "
          "| alloc B/req | gen0/1/2 per run | RSS load MB | RSS after decay MB |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    med = {}
    for load in loads:
        for pool in pools:
            if (load, pool) not in groups:
                continue
            rps = col(load, pool, "rps")
            m = median(rps)
            spread = (max(rps) - min(rps)) / m * 100 if rps and m else float("nan")
            rss_decay = median(col(load, pool, "rss_after_decay_mb"))
            med[(load, pool)] = (m, rss_decay)
            gens = "/".join(fmt(median(col(load, pool, g)), 1) for g in ("gen0", "gen1", "gen2"))
            print(f"| {load} | {pool} | {len(rps)} "
                  f"| {fmt(m)} ({fmt(min(rps) if rps else float('nan'))}–{fmt(max(rps) if rps else float('nan'))}) "
                  f"| {fmt(spread, 1)}% "
                  f"| {fmt(median(col(load, pool, 'p50_ms')), 2)} | {fmt(median(col(load, pool, 'p99_ms')), 2)} "
                  f"| {fmt(sum(col(load, pool, 'socket_errors')))} | {fmt(sum(col(load, pool, 'non2xx')))} "
                  f"| {fmt(median(col(load, pool, 'alloc_bytes_per_req')))} | {gens} "
                  f"| {fmt(median(col(load, pool, 'rss_load_mb')), 1)} | {fmt(rss_decay, 1)} |")

    others = [p for p in pools if p != "kestrel"]
    if "kestrel" in pools and others:
        print()
        print("| load | ratio | req/s (median) | RSS after decay (median) |")
        print("|---|---|--:|--:|")
        for load in loads:
            base = med.get((load, "kestrel"))
            for pool in others:
                cur = med.get((load, pool))
                if not base or not cur:
                    continue
                r_rps = cur[0] / base[0] if base[0] else float("nan")
                r_rss = cur[1] / base[1] if base[1] else float("nan")
                print(f"| {load} | {pool}/kestrel | {fmt(r_rps, 3)} | {fmt(r_rss, 3)} |")

    if servers_path and os.path.exists(servers_path):
        with open(servers_path, newline="") as f:
            servers = list(csv.DictReader(f))
        print()
        print("| pool | servers | exit ≠ 0 | log warnings+errors | failed checks | fallback rents (max) "
              "| arena verify | peak RSS MB (median) |")
        print("|---|--:|--:|--:|--:|--:|---|--:|")
        for pool in pools:
            s = [x for x in servers if x["pool"] == pool]
            if not s:
                continue
            bad_exit = sum(1 for x in s if x["exit_code"] not in ("0",))
            problems = sum(intval(x["log_problems"]) for x in s)
            checks = sum(intval(x["failed_checks"]) for x in s)
            fallback = [num(x["fallback_rents"]) for x in s if x["fallback_rents"] not in ("", "-")]
            verify = [x["verify"] for x in s if x["verify"] not in ("", "-")]
            verify_text = "-" if not verify else (
                "clean" if all(v == "clean" for v in verify) else "; ".join(sorted(set(verify))))
            print(f"| {pool} | {len(s)} | {bad_exit} | {problems} | {checks} "
                  f"| {fmt(max(fallback)) if fallback else '-'} | {verify_text} "
                  f"| {fmt(median([num(x['rss_peak_mb']) for x in s]), 1)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
