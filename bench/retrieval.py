"""What the LLM planner is shown: recall of the actions a request needs, at what share.

Above `planner_retrieval_threshold` actions, `ActionPlanner` shows the LLM only
what `relevant_actions(ctx)` retrieves, and an action left out can never be
planned. This measures it on real requests: the TaskBench development set in
`../shared/taskbench` (`--root`), whose tools are one module of flows, merged
with the 500 unrelated flows of `bench/planning.py` as distractors, so that
retrieval is active. `sizes` measures the same at about 40, 100 and 500 actions:
the TaskBench tools with the real-world catalogs of `../shared/realworld` (their
goals are requests too, their gold plans the actions needed), then unrelated
flows up to the size. Prints one JSON object:

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

from prefect_aether import ActionCatalog, ActionPlanner, PlanningContext

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


def _realworld(root: Path) -> tuple[list[Path], list[tuple[str, set[str]]]]:
    """The real-world catalogs' modules and their goals with the actions of their gold
    plans (goals that must be refused have none and are left out)."""
    modules = sorted((root / "catalogs").glob("*.py"))
    requests = []
    for path in sorted((root / "goals").glob("*.json")):
        for goal in json.loads(path.read_text()):
            steps = goal.get("expect", {}).get("plan", {}).get("steps", [])
            if steps:
                requests.append((goal["goal"], {step["action"] for step in steps}))
    return modules, requests


def run_sizes(root: Path, domain: str, realworld: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """Recall and share at each catalog size, with related actions in every catalog."""
    samples = json.loads((root / "data" / domain / "samples.json").read_text())["samples"]
    mapping = json.loads((root / "catalogs" / f"{domain}_mapping.json").read_text())
    flow_of = {flow["tool_id"]: name for name, flow in mapping["flows"].items()}
    requests = [
        (s["user_request"], {flow_of[node["task"]] for node in s["task_nodes"]}) for s in samples
    ]
    modules, goals = _realworld(realworld) if realworld.exists() else ([], [])
    requests += goals
    unrelated = load_catalog()
    out = []
    for size in sizes:
        catalog = ActionCatalog()
        catalog.register_module(str(root / "catalogs" / f"{domain}_flows.py"))
        for module in modules:
            catalog.register_module(str(module))
        related = len(catalog)
        for spec in list(unrelated)[: max(0, size - related)]:
            flow = unrelated.get_flow(spec.name)
            assert flow is not None
            catalog.register(flow)
        planner = ActionPlanner(catalog, llm=None)  # type: ignore[arg-type]  # retrieval only
        recalls, shares, full = [], [], 0
        for goal, needed in requests:
            ctx = PlanningContext(goal=goal)
            shown = {spec.name for spec in planner.relevant_actions(ctx, planner.draft(ctx))}
            recalls.append(len(needed & shown) / len(needed))
            shares.append(len(shown) / len(catalog))
            full += needed <= shown
        out.append(
            {
                "catalog_actions": len(catalog),
                "related_actions": related,
                "requests": len(requests),
                "recall": round(statistics.fmean(recalls), 4),
                "requests_fully_covered": round(full / len(requests), 4),
                "share_of_catalog": round(statistics.fmean(shares), 4),
                "share_of_catalog_max": round(max(shares), 4),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=DEFAULT_DATA, help="TaskBench folder")
    parser.add_argument("--domain", default="huggingface", help="a folder under data/")
    parser.add_argument(
        "--realworld", type=Path, default=ROOT.parent / "shared" / "realworld",
        help="real-world catalogs and goals",
    )  # fmt: skip
    args = parser.parse_args()
    if not (args.root / "data" / args.domain / "samples.json").exists():
        sys.exit(f"no TaskBench data at {args.root / 'data' / args.domain} (see --root)")
    report = run(args.root, args.domain)
    report["sizes"] = run_sizes(args.root, args.domain, args.realworld, [40, 100, 500])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
