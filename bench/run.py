"""Benchmark runner: every implementation in its own subprocess, repeated, order shuffled.

    uv run python bench/envs.py                 # once: build bench/.venvs/*
    uv run python bench/run.py --quick          # a few minutes
    uv run python bench/run.py                  # full run
    uv run python bench/run.py --workloads chain agent --impls none floor llmtrace-instrument openinference

Each repetition starts one subprocess per implementation (with that implementation's venv python),
in a freshly shuffled order; inside it the workloads also run in a shuffled order, each with a
warm-up and then N timed invocations. Results: medians across repetitions of the per-process
median µs per invocation, overhead over ``none``, and the issue's two ratios. Raw results go to
``bench/results/``; the report to ``docs/benchmarks.md`` (the block between the ``bench`` markers).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _doc
import impls
import workloads as wl
from envs import OVERRIDE_REASONS

WORKER = Path(__file__).resolve().parent / "worker.py"
PEER_TARGET = 0.5
FLOOR_TARGET = 1.5


def run_worker(
    impl: str,
    names: list[str],
    n: int,
    warmup: int,
    floor: dict[str, int],
    timeout: float,
    scripts: dict[str, Any] | None = None,
    probe: bool = False,
) -> list[dict[str, Any]]:
    py = _doc.env_python(impls.ENV_OF[impl])
    spec = {
        "impl": impl,
        "workloads": names,
        "n": n,
        "warmup": warmup,
        "floor_spans": floor,
        "floor_scripts": scripts or {},
        "probe": probe,
    }
    try:
        out = subprocess.run(
            [str(py), "-W", "ignore", str(WORKER), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(_doc.ROOT),
        )
    except subprocess.TimeoutExpired:
        return [{"impl": impl, "workload": w, "error": f"timeout after {timeout:.0f} s"} for w in names]
    results = [json.loads(line[6:]) for line in out.stdout.splitlines() if line.startswith("BENCH ")]
    seen = {r["workload"] for r in results}
    missing = [w for w in names if w not in seen and (impl, w) not in impls.NOT_APPLICABLE]
    if missing:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        error = f"exit {out.returncode}: {tail[0][:300]}"
        results += [{"impl": impl, "workload": w, "error": error} for w in missing]
    return results


def fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+,.0f}" if signed else f"{x:,.0f}"


def ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def aggregate(raw: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    errors: dict[tuple[str, str], str] = {}
    for r in raw:
        key = (r["workload"], r["impl"])
        if "error" in r:
            errors[key] = r["error"]
        else:
            per[key].append(r)
    stats: dict[tuple[str, str], dict[str, float]] = {}
    for key, rs in per.items():
        meds = [r["median_us"] for r in rs]
        cpus = [r["cpu_median_us"] for r in rs if "cpu_median_us" in r]
        stats[key] = {
            "median_us": statistics.median(meds),
            "cpu_us": statistics.median(cpus) if cpus else float("nan"),
            "min_us": min(meds),
            "max_us": max(meds),
            "spans": statistics.median(r["spans_per_inv"] for r in rs),
            "records": statistics.median(r.get("metric_records_per_inv", math.nan) for r in rs),
            "reps": len(rs),
        }
    return {"stats": stats, "errors": errors}


def report(
    args: argparse.Namespace,
    raw: list[dict[str, Any]],
    floor: dict[str, int],
    scripts: dict[str, Any],
    started: str,
    elapsed: float,
    load_before: str,
) -> str:
    agg = aggregate(raw)
    stats, errors = agg["stats"], agg["errors"]
    m = _doc.machine()
    lines: list[str] = []
    add = lines.append
    mode = "quick" if args.quick else "full"
    add(f"## Results ({mode} run)\n")
    add(f"- Date: {started} (took {elapsed / 60:.1f} min)")
    add(f"- Command: `uv run python bench/run.py {' '.join(sys.argv[1:])}`".replace("  ", " "))
    add(f"- Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}; {m['os']}")
    add(f"- Load average before / after: {load_before} / {m['load']}")
    add(
        f"- {args.reps} repetitions x (warm-up {args.warmup} + {args.n} timed invocations) per "
        "implementation and workload; implementation order shuffled every repetition, workload order "
        "shuffled in each process"
    )
    add("- A peer that exports no span on a workload is not traced there and never counts as the best peer.")
    add(
        "- Cells: median over repetitions of each process's median µs per invocation; `+x` is the "
        "overhead over `none`; spans = spans exported per invocation; records = synchronous metric "
        "records (histogram records, counter adds) per invocation, counted over 20 extra invocations "
        "after the timed ones; range = min-max of the "
        "repetitions' medians; CPU = median process CPU time per invocation (all threads, so the "
        "batch exporter thread's work counts; insensitive to other processes taking the cores).\n"
    )

    targets: list[str] = []
    for w in args.workloads:
        base = stats.get((w, "none"))
        flo = stats.get((w, "floor"))
        add(f"### {wl.TITLES[w]}\n")
        add(
            "| implementation | median µs | overhead µs | spans/inv | records/inv | range µs | CPU µs "
            "| CPU overhead µs | vs best peer | vs floor | vs floor-telemetry |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        peer_over = {
            p: stats[(w, p)]["median_us"] - base["median_us"]
            for p in impls.PEERS
            if (w, p) in stats and base is not None and stats[(w, p)]["spans"] > 0
        }
        best_peer = min(peer_over, key=lambda p: peer_over[p]) if peer_over else None
        floor_over = flo["median_us"] - base["median_us"] if flo and base else None
        tel = stats.get((w, "floor-telemetry"))
        tel_over = tel["median_us"] - base["median_us"] if tel and base else None
        cpu_peer = {p: stats[(w, p)]["cpu_us"] - base["cpu_us"] for p in peer_over} if base else {}
        cpu_best = min(cpu_peer.values()) if cpu_peer else None
        cpu_floor = flo["cpu_us"] - base["cpu_us"] if flo and base else None
        for impl in args.impls:
            key = (w, impl)
            if (impl, w) in impls.NOT_APPLICABLE:
                add(f"| {impl} | n/a | | | | | | | | | {impls.NOT_APPLICABLE[(impl, w)]} |")
                continue
            if key not in stats:
                add(f"| {impl} | failed | | | | | | | | | {errors.get(key, 'no result')[:160]} |")
                continue
            s = stats[key]
            over = s["median_us"] - base["median_us"] if base else None
            vs_peer = vs_floor = vs_tel = None
            if impl in impls.OURS and over is not None:
                if tel_over is not None and tel_over > 0:
                    vs_tel = over / tel_over
                if best_peer is not None and peer_over[best_peer] > 0:
                    vs_peer = over / peer_over[best_peer]
                if floor_over is not None and floor_over > 0:
                    vs_floor = over / floor_over
            name = f"**{impl}**" if impl in impls.OURS else impl
            if impl == best_peer:
                name += " (best peer)"
            over_cell = fmt(over, True) if impl != "none" else ""
            cpu_over = s["cpu_us"] - base["cpu_us"] if base else None
            cpu_cell = fmt(cpu_over, True) if impl != "none" else ""
            add(
                f"| {name} | {fmt(s['median_us'])} | {over_cell} | {s['spans']:g} | {s['records']:g} | "
                f"{fmt(s['min_us'])}-{fmt(s['max_us'])} | {fmt(s['cpu_us'])} | {cpu_cell} | "
                f"{ratio(vs_peer)} | {ratio(vs_floor)} | {ratio(vs_tel)} |"
            )
            if impl in ("llmtrace-handler", "llmtrace-instrument"):
                ok_peer = vs_peer is not None and vs_peer <= PEER_TARGET
                ok_floor = vs_floor is not None and vs_floor <= FLOOR_TARGET
                best = fmt(peer_over[best_peer], True) if best_peer else "n/a"
                cpu_over_ours = s["cpu_us"] - base["cpu_us"] if base else None
                cpu_ratios = "n/a / n/a"
                if cpu_over_ours is not None:
                    cp = cpu_over_ours / cpu_best if cpu_best and cpu_best > 0 else None
                    cf = cpu_over_ours / cpu_floor if cpu_floor and cpu_floor > 0 else None
                    cpu_ratios = f"{ratio(cp)} / {ratio(cf)}"
                targets.append(
                    f"| {w} | {impl} | {fmt(over, True)} | {best} ({best_peer or 'no peer ran'}) | "
                    f"{ratio(vs_peer)} | {'PASS' if ok_peer else 'FAIL'} | {fmt(floor_over, True)} | "
                    f"{ratio(vs_floor)} | {'PASS' if ok_floor else 'FAIL'} | {fmt(tel_over, True)} | "
                    f"{ratio(vs_tel)} | {cpu_ratios} |"
                )
        add("")
    add("### Targets\n")
    add(
        f"Issue 6: llmtrace's overhead at most {PEER_TARGET}x the best peer's, and at most "
        f"{FLOOR_TARGET}x the floor's overhead (`(llmtrace - none) / (floor - none)`). Judged on the "
        "medians above; with overheads of a few hundred µs the repetition ranges show how much of a "
        "difference is noise.\n"
    )
    add(
        "`floor-telemetry` is not the issue's floor: it makes exactly llmtrace's spans (with their "
        "attributes and events) and metric records with the bare SDK, so its overhead is what the SDK "
        "work of llmtrace's output costs; the last ratio shows how far llmtrace's own code is from it.\n"
    )
    add(
        "| workload | impl | overhead µs | best peer overhead µs | ratio | <= 0.5x peer | "
        "floor overhead µs | ratio | <= 1.5x floor | floor-telemetry overhead µs | ratio | "
        "CPU-time ratios (peer / floor) |"
    )
    add("|---|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|")
    lines.extend(targets)
    add("")
    add("### Floor spans\n")
    add(
        "The floor creates, per invocation, as many bare spans as `llmtrace-instrument` exported per "
        "invocation in a probe run: " + ", ".join(f"{w} {floor.get(w, 0)}" for w in args.workloads) + ".\n"
    )
    if scripts:
        add(
            "`floor-telemetry` replays, per invocation, the telemetry of one `llmtrace-instrument` "
            "invocation recorded by the same probe: "
            + ", ".join(
                f"{w} {len(sc.get('spans', []))} spans + "
                f"{sum(m['per_invocation'] for m in sc.get('metrics', []))} metric records"
                for w, sc in scripts.items()
            )
            + ".\n"
        )
    add("### Environments\n")
    envs = sorted({impls.ENV_OF[i] for i in args.impls})
    cols = ["python", *_doc.VERSION_PACKAGES]
    versions = {e: _doc.env_versions(e) for e in envs}
    add("| package | " + " | ".join(envs) + " |")
    add("|---|" + "---|" * len(envs))
    for c in cols:
        if any(c in versions[e] for e in envs):
            add(f"| {c} | " + " | ".join(versions[e].get(c, "") for e in envs) + " |")
    add("")
    for env, why in OVERRIDE_REASONS.items():
        if env in envs:
            add(f"- `{env}`: {why}")
    add("")
    add("### Implementations\n")
    for impl in args.impls:
        add(f"- `{impl}` (env `{impls.ENV_OF[impl]}`): {impls.DESCRIPTIONS[impl]}")
    failed = sorted({k for k in errors if k not in stats})
    if failed:
        add("\n### Failures\n")
        for w, impl in failed:
            add(f"- {impl} on {w}: `{errors[(w, impl)][:300]}`")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 repetitions x 200 invocations")
    parser.add_argument("--workloads", nargs="+", default=list(wl.WORKLOADS), choices=wl.WORKLOADS)
    parser.add_argument("--impls", nargs="+", default=list(impls.IMPLS), choices=impls.IMPLS)
    parser.add_argument("--reps", type=int)
    parser.add_argument("-n", type=int, help="timed invocations per workload and process")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    args.reps = args.reps or (3 if args.quick else 7)
    args.n = args.n or (200 if args.quick else 1000)
    args.warmup = args.warmup or (30 if args.quick else 100)
    for must in ("none",):
        if must not in args.impls:
            args.impls.insert(0, must)
    impl_order = [i for i in impls.IMPLS if i in args.impls]
    args.impls = impl_order
    rng = random.Random(args.seed)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = _doc.machine()["load"]
    t0 = time.monotonic()

    missing = [i for i in args.impls if not _doc.env_python(impls.ENV_OF[i]).exists()]
    if missing:
        print(f"environments missing for {missing}: run `uv run python bench/envs.py`", file=sys.stderr)
        return 2

    floor: dict[str, int] = {}
    scripts: dict[str, Any] = {}
    if any(f in args.impls for f in impls.FLOORS):
        for w in args.workloads:  # one process per workload: metrics accumulate per process
            for r in run_worker("llmtrace-instrument", [w], 20, 5, {}, args.timeout, probe=True):
                if "spans_per_inv" in r:
                    floor[w] = round(r["spans_per_inv"])
                    scripts[w] = r.get("telemetry", {})
        print(f"floor spans per invocation: {floor}", flush=True)
        for w, sc in scripts.items():
            records = sum(m["per_invocation"] for m in sc.get("metrics", []))
            print(
                f"floor-telemetry {w}: {len(sc.get('spans', []))} spans, {records} metric records", flush=True
            )

    raw: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = list(args.impls)
        rng.shuffle(order)
        for impl in order:
            names = list(args.workloads)
            rng.shuffle(names)
            t = time.monotonic()
            results = run_worker(impl, names, args.n, args.warmup, floor, args.timeout, scripts)
            for r in results:
                r["rep"] = rep
            raw.extend(results)
            summary = ", ".join(
                f"{r['workload']}={r['median_us']:.0f}µs/{r['spans_per_inv']:g}sp"
                f"/{r.get('metric_records_per_inv', 0):g}rec"
                if "median_us" in r
                else f"{r['workload']}=ERR"
                for r in results
            )
            print(f"rep {rep + 1}/{args.reps} {impl:20s} {time.monotonic() - t:5.1f}s  {summary}", flush=True)

    elapsed = time.monotonic() - t0
    _doc.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    dump = {"args": vars(args), "floor": floor, "floor_scripts": scripts, "raw": raw}
    (_doc.RESULTS / f"run-{stamp}.json").write_text(json.dumps(dump))
    text = report(args, raw, floor, scripts, started, elapsed, load_before)
    print(text)
    if not args.no_doc:
        _doc.replace_block("bench", text)
        print(f"wrote {_doc.DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
