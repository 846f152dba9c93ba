"""Profile llmtrace on each workload with cProfile; writes the ``profile`` block of docs/benchmarks.md.

    uv run python bench/profiling.py [--impl llmtrace-instrument] [-n 2000] [--workloads chain agent]

For each workload (in its own subprocess, llmtrace's venv): warm-up, then ``n`` invocations under
cProfile. Reported: the share of the profiled self time spent in llmtrace's own functions and in
the OTel API/SDK, and the top functions of both by self time (% of all profiled time, with their
cumulative %; cumulative figures of wrappers include the framework code they wrap). cProfile
inflates the cost of many small calls, so shares are indicative; µs figures come from run.py.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _doc
import impls
import workloads as wl

# Package roots (site-packages/ or src/); the venv itself is named "llmtrace", so match the roots.
OURS = tuple(f"{root}/{pkg}/" for root in ("site-packages", "src") for pkg in (
    "llmtrace", "llmtrace_langchain", "llmtrace_llama_index"))
SDK = ("site-packages/opentelemetry/",)


def short(path: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def child(impl: str, workload: str, n: int, top: int) -> dict[str, Any]:
    hooks, tp, _mp, _exp = impls.setup(impl, [workload], {})
    hook = hooks[workload]
    invoke = wl.build(workload)
    for _ in range(200):
        invoke(hook.config)
    tp.force_flush()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        invoke(hook.config)
    prof.disable()
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())  # all self time
    ours_self = sdk_self = 0.0
    rows = []
    for (path, line, func), (_cc, _nc, tt, ct, _callers) in raw.items():
        is_ours = any(m in path for m in OURS)
        is_sdk = any(m in path for m in SDK)
        ours_self += tt if is_ours else 0.0
        sdk_self += tt if is_sdk else 0.0
        if is_ours or is_sdk:
            rows.append((tt, ct, f"{short(path)}:{line}({func})"))
    rows.sort(reverse=True)
    return {
        "total_s": total,
        "per_inv_us": total / n * 1e6,
        "ours_self_pct": 100 * ours_self / total,
        "sdk_self_pct": 100 * sdk_self / total,
        "top": [
            {"func": f, "self_pct": 100 * tt / total, "cum_pct": 100 * ct / total} for tt, ct, f in rows[:top]
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child")
    parser.add_argument("--impl", default="llmtrace-instrument", choices=impls.OURS)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--workloads", nargs="+", default=list(wl.WORKLOADS), choices=wl.WORKLOADS)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print("PROF " + json.dumps(child(spec["impl"], spec["workload"], spec["n"], spec["top"])))
        return 0
    py = _doc.env_python(impls.ENV_OF[args.impl])
    lines = ["## Profile\n", f"`uv run python bench/profiling.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
             + f" — cProfile, `{args.impl}`, {args.n} invocations per workload after 200 warm-up.\n"]
    for w in args.workloads:
        if (args.impl, w) in impls.NOT_APPLICABLE:
            continue
        spec = {"impl": args.impl, "workload": w, "n": args.n, "top": args.top}
        out = subprocess.run([str(py), "-W", "ignore", __file__, "--child", json.dumps(spec)],
                             capture_output=True, text=True, cwd=str(_doc.ROOT))
        res = next((json.loads(x[5:]) for x in out.stdout.splitlines() if x.startswith("PROF ")), None)
        if res is None:
            lines.append(f"### {wl.TITLES[w]}\n\nfailed: {out.stderr.strip()[-500:]}\n")
            continue
        lines.append(f"### {wl.TITLES[w]}\n")
        lines.append(f"Self time in llmtrace's code: {res['ours_self_pct']:.1f}% of all profiled time; "
                     "in the "
                     f"OTel API/SDK (spans, context, metrics): {res['sdk_self_pct']:.1f}%. Profiled cost "
                     f"{res['per_inv_us']:,.0f} µs per invocation (cProfile-inflated).\n")
        lines.append("| function (llmtrace and OTel SDK, by self time) | self % | cumulative % |")
        lines.append("|---|---:|---:|")
        for row in res["top"]:
            lines.append(f"| `{row['func']}` | {row['self_pct']:.1f} | {row['cum_pct']:.1f} |")
        lines.append("")
        print(f"{w}: llmtrace self {res['ours_self_pct']:.1f}%, OTel {res['sdk_self_pct']:.1f}%", flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        _doc.replace_block("profile", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
