#!/usr/bin/env python3
"""Tables for scripts/bench-suite.sh.

  suite_report.py open-rate RUN.json FRACTION   FRACTION x the run's req/s, an integer
  suite_report.py report DIR                    markdown summary of a suite directory

DIR holds manifest.tsv (one row per run: name, scenario, value_size, mode,
tool, status, note), meta.txt, and per run NAME.json + NAME.hlog
(nexuscache-bench) or NAME.txt with a BENCH_RESULT line (wrk).
Standard library only.
"""

import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hdrlog  # noqa: E402

SCENARIO_LABELS = {
    "nginx": "nginx fixed body",
    "single": "single node",
    "cluster": "3-node cluster",
}


def fmt_us(us):
    if us is None:
        return "—"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def fmt_rps(rps):
    return "—" if rps is None else f"{rps:,.0f}"


def fmt_value(size):
    size = int(size)
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def load_bench(directory, name):
    """Summary of one nexuscache-bench run: req/s, latency over all ops, ..."""
    with open(os.path.join(directory, name + ".json")) as f:
        r = json.load(f)
    # An operation that never ran (writes under --read-ratio 1) has count 0
    # and null latencies.
    ops = {k: v for k, v in (r.get("operations") or {}).items() if v and v.get("count")}
    count = sum(op.get("count", 0) for op in ops.values())
    lat = None
    lat_scope = "all"
    hlog = os.path.join(directory, name + ".hlog")
    try:
        hist = hdrlog.read_log(hlog)
        # The log covers the measured seconds; it must hold every request.
        if hist is not None and hist.total == count:
            lat = {k: hist.quantile(q) / 1000 for k, q in
                   (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999))}
            lat["max"] = hist.max() / 1000
        elif hist is not None:
            lat_scope = f"reads (hdr log holds {hist.total} of {count} requests)"
    except (OSError, ValueError) as e:
        lat_scope = f"reads (hdr log unreadable: {e})"
    if lat is None and "read" in ops:
        lat = ops["read"]["latency_us"]
        if lat_scope == "all":
            lat_scope = "reads"
    errors = r.get("errors") or {}
    kinds = [f"{k} {v}" for k, v in errors.items() if k != "total" and v]
    read = ops.get("read", {})
    return {
        "rps": r.get("throughput_rps"),
        "lat": lat,
        "lat_scope": lat_scope,
        "hit_rate": read.get("hit_rate"),
        "errors": errors.get("total", 0),
        "error_kinds": kinds,
        "rate": r.get("config", {}).get("rate"),
        "send_lag": r.get("send_lag_us"),
        "backlog": r.get("backlog_at_end"),
        "in_flight": r.get("in_flight_at_end"),
        "ops": ops,
        "prefill": r.get("prefill"),
        "config": r.get("config", {}),
        # Per-second p99 of the measured seconds: on a shared machine the
        # median second shows the server, the worst one the disturbances.
        "interval_p99": sorted(i["p99_us"] for i in r.get("intervals") or []
                               if not i.get("warmup") and i.get("p99_us") is not None),
    }


def median(values):
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def load_wrk(directory, name):
    with open(os.path.join(directory, name + ".txt")) as f:
        line = next(l for l in f if l.startswith("BENCH_RESULT "))
    w = json.loads(line[len("BENCH_RESULT "):])
    errors = sum(w["errors"].values())
    return {
        "rps": w["requests"] / (w["duration_us"] / 1e6),
        "lat": {"p50": w["p50_us"], "p90": w["p90_us"], "p99": w["p99_us"],
                "p99_9": w["p99_9_us"], "max": w["max_us"]},
        "lat_scope": "wrk (closed loop)",
        "hit_rate": None,
        "errors": errors,
        "error_kinds": [f"{k} {v}" for k, v in w["errors"].items() if v],
    }


def open_rate(path, fraction):
    with open(path) as f:
        rps = json.load(f)["throughput_rps"]
    print(max(1, int(round(rps * float(fraction)))))


def report(directory):
    with open(os.path.join(directory, "manifest.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    meta = []
    meta_path = os.path.join(directory, "meta.txt")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = [l.rstrip("\n") for l in f if l.strip()]

    results = {}
    for row in rows:
        name = row["name"]
        if row["status"] != "ok":
            results[name] = None
            continue
        try:
            results[name] = load_wrk(directory, name) if row["tool"] == "wrk" else load_bench(directory, name)
        except (OSError, ValueError, KeyError, StopIteration) as e:
            print(f"<!-- {name}: unreadable result: {e} -->")
            results[name] = None

    ceiling_row = next((r for r in rows if r["scenario"] == "nginx" and r["mode"] == "closed"
                        and r["tool"] == "bench" and results.get(r["name"])), None)
    ceiling = results[ceiling_row["name"]]["rps"] if ceiling_row else None

    out = []
    out.append(f"# NexusCache benchmark suite ({os.path.basename(os.path.normpath(directory))})")
    out.append("")
    for line in meta:
        out.append(f"- {line}")
    out.append("")
    out.append("Figures from one run on a shared machine: other work on the same CPUs moves "
               "them by tens of percent from run to run. Compare rows of the same run, "
               "not runs of different days.")
    out.append("")
    loads = []
    for row in rows:
        for part in (row.get("load") or "").split("-"):
            try:
                loads.append(float(part))
            except ValueError:
                pass
    cpus = os.cpu_count() or 1
    if loads and max(loads) > cpus:
        out.append(f"**The machine was busy**: the 1-minute load average reached {max(loads):.1f} on {cpus} CPUs "
                   "during the runs (column *load*). Rows with a high load are disturbed by other work; "
                   "the open-loop table below shows how much.")
        out.append("")
    out.append("| scenario | value | mode | req/s | p50 | p90 | p99 | p99.9 | max | hit rate | errors | req/s vs nginx | load |")
    out.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    notes = []
    for row in rows:
        name = row["name"]
        res = results.get(name)
        scenario = SCENARIO_LABELS.get(row["scenario"], row["scenario"])
        mode = row["mode"]
        if row["tool"] == "wrk":
            scenario += " (wrk -t1 -c50)"
            mode = "closed"
        elif mode == "closed-t1c50":
            scenario += " (bench -t1 -c50)"
            mode = "closed"
        elif row["scenario"] == "nginx":
            scenario += " (bench)"
        if res is None:
            out.append(f"| {scenario} | {fmt_value(row['value_size'])} | {mode} | failed: see {name}.txt "
                       f"| | | | | | | | | {row.get('load') or ''} |")
            continue
        if mode == "open" and res.get("rate"):
            mode = f"open @ {res['rate']:,.0f}/s"
        lat = res["lat"] or {}
        if res["hit_rate"] is None or row["scenario"] == "nginx":
            hit = "—"
        elif res["hit_rate"] >= 1:
            hit = "100%"
        else:
            # Enough digits that a handful of misses in a million reads shows.
            hit = f"{res['hit_rate'] * 100:.3f}%"
        errors = str(res["errors"])
        if res["error_kinds"]:
            errors += " (" + ", ".join(res["error_kinds"]) + ")"
        ratio = "—"
        if mode == "closed" and ceiling and res["rps"]:
            ratio = f"{res['rps'] / ceiling:.2f}"
        out.append(f"| {scenario} | {fmt_value(row['value_size'])} | {mode} | {fmt_rps(res['rps'])} | "
                   f"{fmt_us(lat.get('p50'))} | {fmt_us(lat.get('p90'))} | {fmt_us(lat.get('p99'))} | "
                   f"{fmt_us(lat.get('p99_9'))} | {fmt_us(lat.get('max'))} | {hit} | {errors} | {ratio} | "
                   f"{(row.get('load') or '').replace('-', '→')} |")
        if res["lat_scope"] not in ("all", "wrk (closed loop)"):
            notes.append(f"{name}: latency of {res['lat_scope']}")
        if res.get("rate") and res["rps"] and res["rps"] < 0.97 * res["rate"]:
            notes.append(f"{name}: achieved {res['rps']:,.0f} of {res['rate']:,.0f} req/s: the server "
                         f"(or the generator) fell behind; {res.get('backlog') or 0} requests due but never sent")
    out.append("")
    out.append("Latency: closed loop from sending a request to its answer; open loop from the request's "
               "intended send time, so queueing behind a slow answer counts. Percentiles are over all "
               "requests of a run (reads and writes). req/s vs nginx: closed-loop req/s divided by "
               f"nginx's under nexuscache-bench with the same settings ({fmt_rps(ceiling)} req/s); "
               "for the wrk and -t1 -c50 rows it compares the two tools.")
    out.append("")

    # Open-loop details: was the generator keeping its schedule?
    open_rows = [r for r in rows if r["mode"] == "open" and results.get(r["name"])]
    if open_rows:
        out.append("## Open loop: per operation and send lag")
        out.append("")
        out.append("| run | target req/s | achieved | read p99 | read p99.9 | write p99 | write p99.9 | send lag p99 | send lag max | p99 of the median second | p99 of the worst second |")
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in open_rows:
            res = results[r["name"]]
            rd = res["ops"].get("read", {}).get("latency_us") or {}
            wr = res["ops"].get("write", {}).get("latency_us") or {}
            lag = res["send_lag"] or {}
            out.append(f"| {r['name']} | {fmt_rps(res['rate'])} | {fmt_rps(res['rps'])} | {fmt_us(rd.get('p99'))} | "
                       f"{fmt_us(rd.get('p99_9'))} | {fmt_us(wr.get('p99'))} | {fmt_us(wr.get('p99_9'))} | "
                       f"{fmt_us(lag.get('p99'))} | {fmt_us(lag.get('max'))} | {fmt_us(median(res['interval_p99']))} | "
                       f"{fmt_us(res['interval_p99'][-1] if res['interval_p99'] else None)} |")
        out.append("")
        out.append("Send lag is intended -> actual send time. When its tail nears the latency tail, the "
                   "generator (sharing the CPUs) is part of what was measured. The last two columns take "
                   "each measured second's p99: a median second far below the run's p99 means a few "
                   "disturbed seconds (other work, a stall) make the tail.")
        out.append("")

    prefills = [(r["name"], results[r["name"]]["prefill"]) for r in rows
                if results.get(r["name"]) and results[r["name"]].get("prefill")]
    counters_path = os.path.join(directory, "server-counters.tsv")
    if prefills or os.path.exists(counters_path):
        out.append("## Server side")
        out.append("")
        for name, p in prefills:
            perr = p.get("errors", {}).get("total", 0)
            out.append(f"- {name}: prefill stored {p.get('stored')} of {p.get('keys')} keys in "
                       f"{p.get('elapsed_s', 0):.1f} s, errors {perr}")
        if os.path.exists(counters_path):
            with open(counters_path) as f:
                for line in f:
                    fields = line.rstrip("\n").split("\t")
                    if fields and fields[0]:
                        out.append(f"- /metrics of {fields[0]} after its runs: {', '.join(fields[1:])}")
        out.append("")
    if notes:
        out.append("## Notes")
        out.append("")
        for n in notes:
            out.append(f"- {n}")
        out.append("")
    print("\n".join(out))


def main(argv):
    if len(argv) == 4 and argv[1] == "open-rate":
        open_rate(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "report":
        report(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
