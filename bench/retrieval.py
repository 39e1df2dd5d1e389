"""What the LLM planner is shown: recall of the actions a request needs, at what share.

Above `planner_retrieval_threshold` actions, `ActionPlanner` shows the LLM only
what `relevant_actions(ctx)` retrieves, and an action left out can never be
planned. This measures it on real requests: the TaskBench development set in
`../shared/taskbench` (`--root`), whose tools are one module of flows, merged
with the 500 unrelated flows of `bench/planning.py` as distractors, so that
retrieval is active. Prints one JSON object:

- `recall`: per request, the share of its ground-truth tools in the retrieved
  set, averaged (goal >= 0.98); `requests_fully_covered`.
- `share_of_catalog`: retrieved actions over catalog actions, averaged (goal <= 0.25).
- `latency_ms`: time per request to retrieve the actions shown, the draft's included,
  p50 and p95 (goal p95 <= 10 ms); `draft_ms`: the heuristic planner drafting the plan
  first (its own budget: p95 <= 20 ms, bench/taskbench.py); `without_draft`: retrieval
  with no draft.

    .venv/bin/python bench/retrieval.py [--root ../shared/taskbench] [--domain huggingface]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="aether-retrieval-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planning import load_catalog

from prefect_aether import ActionPlanner, PlanningContext

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "taskbench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(root: Path, domain: str) -> dict[str, Any]:
    samples = json.loads((root / "data" / domain / "samples.json").read_text())["samples"]
    mapping = json.loads((root / "catalogs" / f"{domain}_mapping.json").read_text())
    flow_of = {flow["tool_id"]: name for name, flow in mapping["flows"].items()}
    catalog = load_catalog()
    distractors = len(catalog)
    catalog.register_module(str(root / "catalogs" / f"{domain}_flows.py"))
    planner = ActionPlanner(catalog, llm=None)  # type: ignore[arg-type]  # retrieval only
    recalls, shares, latencies, drafts = [], [], [], []
    recalls_alone: list[float] = []
    latencies_alone: list[float] = []
    full = 0
    for sample in samples:
        needed = {flow_of[node["task"]] for node in sample["task_nodes"]}
        ctx = PlanningContext(goal=sample["user_request"])
        started = time.perf_counter()
        draft = planner.draft(ctx)
        drafts.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        # What the planner shows: retrieval with the heuristic draft's actions in it.
        shown = {spec.name for spec in planner.relevant_actions(ctx, draft)}
        latencies.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        alone = {spec.name for spec in planner.relevant_actions(ctx)}
        latencies_alone.append((time.perf_counter() - started) * 1000)
        recalls_alone.append(len(needed & alone) / len(needed))
        recalls.append(len(needed & shown) / len(needed))
        shares.append(len(shown) / len(catalog))
        full += needed <= shown
    return {
        "domain": domain,
        "requests": len(samples),
        "catalog_actions": len(catalog),
        "distractor_actions": distractors,
        "recall": round(statistics.fmean(recalls), 4),
        "requests_fully_covered": round(full / len(samples), 4),
        "share_of_catalog": round(statistics.fmean(shares), 4),
        "share_of_catalog_max": round(max(shares), 4),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 3),
            "p95": round(_percentile(latencies, 0.95), 3),
        },
        # The draft is the heuristic planner's plan (its latency is that planner's).
        "draft_ms": {
            "p50": round(statistics.median(drafts), 3),
            "p95": round(_percentile(drafts, 0.95), 3),
        },
        "without_draft": {
            "recall": round(statistics.fmean(recalls_alone), 4),
            "latency_ms_p95": round(_percentile(latencies_alone, 0.95), 3),
        },
        "goals": {"recall": 0.98, "share_of_catalog": 0.25, "latency_ms_p95": 10},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=DEFAULT_DATA, help="TaskBench folder")
    parser.add_argument("--domain", default="huggingface", help="a folder under data/")
    args = parser.parse_args()
    if not (args.root / "data" / args.domain / "samples.json").exists():
        sys.exit(f"no TaskBench data at {args.root / 'data' / args.domain} (see --root)")
    print(json.dumps(run(args.root, args.domain), indent=2))


if __name__ == "__main__":
    main()
