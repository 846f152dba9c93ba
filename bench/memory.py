"""Memory benchmarks; writes the ``memory`` block of docs/benchmarks.md.

    uv run python bench/memory.py            # 100,000 invocations, 50,000 abandoned runs
    uv run python bench/memory.py --quick    # 20,000 invocations, 50,000 abandoned runs

1. Steady state: workload 1 (prompt -> chat model -> parser) traced ``--invocations`` times. RSS and
   tracemalloc's current traced memory (after ``gc.collect()``) are sampled every tenth of the run;
   tracemalloc starts after a 1,000-invocation warm-up, so the numbers are what the run retains.
2. Abandoned runs: 50,000 chat-model runs started through LangChain's own ``CallbackManager``
   (``on_chat_model_start``, with the implementation's handlers) and never ended. Retained memory
   (tracemalloc, after gc) and RSS growth are reported, for llmtrace with its default cap
   (``max_open_runs`` 10,000) and with ``llmtrace.configure(max_open_runs=1000)``, and for the peers.

Every measurement runs in its own subprocess with the implementation's venv python.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _doc
import impls

MiB = 1024 * 1024
CASES: list[tuple[str, int | None]] = [
    ("none", None),
    ("llmtrace-instrument", None),
    ("llmtrace-instrument", 1000),
    ("llmtrace-handler", None),
    ("openinference", None),
    ("openllmetry", None),
    ("langfuse", None),
    ("openlit", None),
    ("otel-genai", None),
]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def retained() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _setup(impl: str, cap: int | None, workloads: list[str]) -> tuple[impls.Hooks, Any]:
    hooks, tp, _mp, _exporter = impls.setup(impl, workloads, {"chain": 2})
    if cap is not None:
        import llmtrace

        llmtrace.configure(max_open_runs=cap)
    return hooks[workloads[0]], tp


def child_steady(impl: str, invocations: int) -> dict[str, Any]:
    import workloads as wl

    hook, tp = _setup(impl, None, ["chain"])
    invoke = wl.build("chain")
    for _ in range(1000):
        invoke(hook.config)
    tp.force_flush()
    tracemalloc.start()
    samples = []
    step = max(1, invocations // 10)
    t0 = time.monotonic()
    for i in range(invocations + 1):
        if i % step == 0:
            tp.force_flush()
            samples.append({"i": i, "rss": rss(), "traced": retained()})
        if i < invocations:
            invoke(hook.config)
    return {"samples": samples, "seconds": time.monotonic() - t0}


def child_abandoned(impl: str, cap: int | None, runs: int) -> dict[str, Any]:
    from langchain_core.callbacks import CallbackManager
    from langchain_core.messages import HumanMessage

    hook, tp = _setup(impl, cap, ["chain"])
    callbacks = (hook.config or {}).get("callbacks")
    serialized = {
        "id": ["langchain", "chat_models", "fake", "FakeUsageChatModel"],
        "name": "FakeUsageChatModel",
    }
    messages = [[HumanMessage("What is the capital of France?")]]
    # one complete warm-up run so lazily built state is not counted
    manager = CallbackManager.configure(inheritable_callbacks=callbacks)
    handlers = [type(h).__name__ for h in manager.handlers]
    gc.collect()
    tracemalloc.start()
    before_rss, before = rss(), retained()
    for _ in range(runs):
        manager = CallbackManager.configure(inheritable_callbacks=callbacks)
        manager.on_chat_model_start(
            serialized,
            messages,
            run_id=uuid.uuid4(),
            invocation_params={"model_name": "gpt-4o-mini", "_type": "fake-usage-chat"},
        )
    tp.force_flush()
    after = retained()
    after_rss = rss()
    return {
        "handlers": handlers,
        "retained": after - before,
        "rss": after_rss - before_rss,
        "per_run_bytes": (after - before) / runs,
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "steady":
        return child_steady(spec["impl"], spec["invocations"])
    return child_abandoned(spec["impl"], spec.get("cap"), spec["runs"])


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    py = _doc.env_python(impls.ENV_OF[spec["impl"]])
    try:
        out = subprocess.run(
            [str(py), "-W", "ignore", __file__, "--child", json.dumps(spec)],
            capture_output=True, text=True, timeout=3600, cwd=str(_doc.ROOT),
        )
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    for line in out.stdout.splitlines():
        if line.startswith("MEM "):
            return dict(json.loads(line[4:]))
    tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {out.returncode}: {tail[0][:300]}"}


def mib(x: float) -> str:
    return f"{x / MiB:+.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--invocations", type=int)
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--steady-impls", nargs="+", default=["llmtrace-instrument", "llmtrace-handler"])
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if args.child:
        print("MEM " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    invocations = args.invocations or (20_000 if args.quick else 100_000)
    lines = ["## Memory\n"]
    add = lines.append
    add(f"- Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
        f"`uv run python bench/memory.py {' '.join(sys.argv[1:])}`".rstrip() + "; "
        "traced = tracemalloc's current Python allocations after `gc.collect()`.\n")
    add(f"### Steady state: {invocations:,} traced invocations of workload 1\n")
    add("| implementation | invocations | RSS MiB (start → end) | traced MiB (start → end) | traced growth | "
        "s |")
    add("|---|---:|---|---|---:|---:|")
    results: dict[str, Any] = {"steady": {}, "abandoned": {}}
    sample_lines: list[str] = []
    for impl in args.steady_impls:
        r = spawn({"kind": "steady", "impl": impl, "invocations": invocations})
        results["steady"][impl] = r
        print(impl, r if "error" in r else r["samples"][-1], flush=True)
        if "error" in r:
            add(f"| {impl} | failed: {r['error']} | | | | |")
            continue
        s = r["samples"]
        add(f"| {impl} | {invocations:,} | {s[0]['rss'] / MiB:.1f} → {s[-1]['rss'] / MiB:.1f} | "
            f"{s[0]['traced'] / MiB:.2f} → {s[-1]['traced'] / MiB:.2f} | "
            f"{mib(s[-1]['traced'] - s[0]['traced'])} | {r['seconds']:.0f} |")
        sample_lines.append(f"- {impl} samples (invocations: traced MiB / RSS MiB): " + ", ".join(
            f"{x['i']:,}: {x['traced'] / MiB:.2f} / {x['rss'] / MiB:.0f}" for x in s))
    add("")
    lines.extend(sample_lines)
    add("")
    add(f"### {args.runs:,} chat-model runs started and never ended\n")
    add("| implementation | handlers in the manager | retained MiB | bytes per run | RSS growth MiB |")
    add("|---|---|---:|---:|---:|")
    for impl, cap in CASES:
        r = spawn({"kind": "abandoned", "impl": impl, "cap": cap, "runs": args.runs})
        label = impl + (f" (max_open_runs={cap})" if cap else " (default max_open_runs=10,000)"
                        if impl.startswith("llmtrace") else "")
        results["abandoned"][label] = r
        print(label, r, flush=True)
        if "error" in r:
            add(f"| {label} | failed: {r['error']} | | | |")
            continue
        add(f"| {label} | {', '.join(r['handlers']) or '-'} | {r['retained'] / MiB:.1f} | "
            f"{r['per_run_bytes']:,.0f} | {r['rss'] / MiB:.1f} |")
    _doc.RESULTS.mkdir(parents=True, exist_ok=True)
    (_doc.RESULTS / "memory.json").write_text(json.dumps(results, indent=1))
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_doc:
        _doc.replace_block("memory", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
