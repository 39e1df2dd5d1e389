"""Plan quality on real-style catalogs: runs the real-world set's own scorer.

The set (`../shared/realworld`: catalogs written the way teams write flows, goals with
gold plans, goals to refuse, goals with input and output paths side by side) ships its
scorer, `score.py`. This script runs it with this checkout's `prefect_aether` and the
offline `HeuristicPlanner` (or `--planner llm`), and prints one JSON object: the
scorer's totals and per-catalog figures (node and edge F1, binding accuracy, exact
plans, abstention precision and recall, destructive bindings, invented steps,
latency), the goals the issue sets beside them, and the wall time.

    .venv/bin/python bench/realworld.py [--set ../shared/realworld] [--planner llm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SET = ROOT.parent / "shared" / "realworld"
# What plans on a team's own catalog must reach (the goals).
GOALS = {
    "destructive_bindings": 0,
    "abstention_precision": 0.9,
    "abstention_recall": 0.9,
    "binding_accuracy": 0.9,
    "exact_plan_rate": 0.7,
}


def run_scorer(root: Path, planner: str) -> dict[str, Any]:
    """The scorer's JSON, run with this checkout first on the import path."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(root / "score.py"), "--set", str(root), "--planner", planner],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"score.py failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="The real-world set.")
    parser.add_argument("--planner", default="heuristic", choices=["heuristic", "llm"])
    args = parser.parse_args()
    if not (args.set / "score.py").is_file():
        raise SystemExit(f"no score.py in {args.set} (see --set)")
    started = time.perf_counter()
    scored = run_scorer(args.set, args.planner)
    totals = scored.get("totals", {})
    figures = {
        "destructive_bindings": totals.get("destructive_bindings"),
        "abstention_precision": totals.get("abstention", {}).get("precision"),
        "abstention_recall": totals.get("abstention", {}).get("recall"),
        "binding_accuracy": totals.get("binding_accuracy"),
        "exact_plan_rate": totals.get("exact_plan_rate"),
    }
    print(
        json.dumps(
            {
                "set": str(args.set),
                "planner": args.planner,
                "figures": figures,
                "goals": GOALS,
                "scorer": scored,
                "wall_s": round(time.perf_counter() - started, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
