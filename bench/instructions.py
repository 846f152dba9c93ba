"""Instructions executed per invocation by llmtrace's LangChain handler (load-independent).

    uv run python bench/instructions.py [--workloads agent chain] [-n 300] [--recording]

Wall-clock replays (``bench/replay.py``) move by about 10% between runs on a loaded 2-core
machine, more than most changes to the handler. This counts instructions instead: it records the
callbacks of one invocation of each workload (as ``replay.py`` does), then runs a child process
under ``valgrind --tool=cachegrind`` that replays them into a fresh ``LLMTraceCallbackHandler``
``n`` times, and once more replaying them 0 times; the difference divided by ``n`` is the
instructions of one invocation's callbacks (imports and setup cancel out). Run it before and after
a change (e.g. with ``PYTHONPATH`` pointing at a worktree of the old commit): counts of the same
code repeat within about 1%. Needs valgrind (``apt-get install valgrind``); each workload takes a
few minutes (valgrind runs Python about 50x slower).

By default the handler records nothing (sampler off, no-op meter): llmtrace's own Python. With
``--recording`` the SDK records spans and metrics too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads as wl

_WARMUP = 50
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _child(workload: str, n: int, recording: bool) -> None:
    """Replay one workload's callbacks ``_WARMUP + n`` times (run under valgrind)."""
    import impls
    import replay

    calls = replay.record(workload)
    tp, mp, _exporter = impls.pipeline()
    handler = replay._handler(recording, tp, mp)
    ids = {k["run_id"] for _, _, k in calls if k.get("run_id") is not None}
    fresh_ids = [{old: uuid.uuid4() for old in ids} for _ in range(_WARMUP + n)]  # made before
    for fresh in fresh_ids:
        for name, args, kwargs in calls:
            kw = dict(kwargs)
            kw["run_id"] = fresh[kw["run_id"]]
            if kw.get("parent_run_id") is not None:
                kw["parent_run_id"] = fresh[kw["parent_run_id"]]
            getattr(handler, name)(*args, **kw)
    tp.force_flush()


def _instructions(workload: str, n: int, recording: bool) -> int:
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, __file__, "--child", workload, str(n),
    ]  # fmt: skip
    if recording:
        command.append("--recording")
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["chain", "agent"], choices=sorted(wl.LANGCHAIN_WORKLOADS)
    )
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--recording", action="store_true", help="sampled spans and metrics recorded too")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.recording)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    mode = "recorded" if args.recording else "nothing recorded"
    print(f"instructions per invocation ({mode}, {args.n} replays minus 0)")
    for workload in args.workloads:
        base = _instructions(workload, 0, args.recording)
        total = _instructions(workload, args.n, args.recording)
        print(f"{workload:10s} {(total - base) / args.n:12,.0f}")


if __name__ == "__main__":
    main()
