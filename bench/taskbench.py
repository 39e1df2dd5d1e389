"""Plan quality of the offline `HeuristicPlanner` on a TaskBench development set.

TaskBench (Shen et al., 2023, arXiv:2311.18760) asks a planner for the tools a
request needs and the links between them. This script plans every request of a
domain folder laid out like `../shared/taskbench` (`data/<domain>/samples.json`,
`catalogs/<domain>_flows.py`, `catalogs/<domain>_mapping.json`) with
`HeuristicPlanner(catalog)` given the request text only, and scores it with
TaskBench's own metric definitions:

* n-F1: per request, the set of expected tool names against the set of planned
  ones; micro-averaged over requests (tool names outside the tool list count for
  neither side).
* e-F1: per request, the set of (source tool, target tool) links; ours come from
  the plan's dependencies (`${step.output}` bindings and `after` edges), the
  expected ones from the `<node-k>` references of the tool arguments (resource
  domains) or the sample's `task_links` (temporal domains); binary F1 over all
  requests.

It prints one JSON object: n-F1, e-F1, exact match (tool set, and tool set plus
links), share of valid / partial / failed plans, planning latency p50/p95 (ms).

    .venv/bin/python bench/taskbench.py [--root ../shared/taskbench] [--domain huggingface]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Keep Prefect's home (settings, database file) out of the user's ~/.prefect: no server is used.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="aether-taskbench-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect_aether import ActionCatalog, HeuristicPlanner, PlanningContext
from prefect_aether.plan import step_dependencies

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "taskbench"
# Published figures of LLMs on the huggingface domain (TaskBench leaderboard; not run here).
REFERENCE = {"gpt-4": (0.8154, 0.5470), "gpt-3.5-turbo": (0.6949, 0.3336)}
Link = tuple[str, str]


def _f1(tp: int, n_pred: int, n_true: int) -> float:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def node_f1(expected: list[set[str]], planned: list[set[str]], tools: set[str]) -> float:
    """Micro F1 over per-request tool sets; names outside `tools` count for neither side."""
    tp = sum(len(e & p & tools) for e, p in zip(expected, planned, strict=True))
    n_pred = sum(len(p & tools) for p in planned)
    n_true = sum(len(e & tools) for e in expected)
    return _f1(tp, n_pred, n_true)


def link_f1(expected: list[set[Link]], planned: list[set[Link]]) -> float:
    """Binary F1 over per-request link sets."""
    tp = sum(len(e & p) for e, p in zip(expected, planned, strict=True))
    return _f1(tp, sum(map(len, planned)), sum(map(len, expected)))


def expected_links(sample: dict[str, Any], names: list[str], resource: bool) -> set[Link]:
    """TaskBench's ground-truth links: argument references, or `task_links` (temporal)."""
    if not resource:
        return {(link["source"], link["target"]) for link in sample["task_links"]}
    links = set()
    for i, node in enumerate(sample["task_nodes"]):
        for k in node.get("node_refs", []):
            if k != i and 0 <= k < len(names):
                links.add((names[k], names[i]))
    return links


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(
    root: Path,
    domain: str,
    *,
    make_planner: Callable[[ActionCatalog], Any] | None = None,
    sample: int | None = None,
) -> dict[str, Any]:
    """Plan every request of `domain` (or a fixed, evenly spread `sample` of them) with
    the heuristic planner, or with `make_planner(catalog)`, and score the plans."""
    samples_doc = json.loads((root / "data" / domain / "samples.json").read_text())
    mapping = json.loads((root / "catalogs" / f"{domain}_mapping.json").read_text())
    tool_desc = json.loads((root / "data" / domain / "tool_desc.json").read_text())
    resource = samples_doc["meta"].get("dependency_type", "resource") == "resource"

    def fix(name: str) -> str:
        # Resource domains compare tool names with "_" read as " ", as TaskBench does.
        return name.replace("_", " ") if resource else name

    tools = {fix(t["id"]) for t in tool_desc["nodes"]}
    to_tool = {name: fix(flow["tool_id"]) for name, flow in mapping["flows"].items()}

    started = time.perf_counter()
    catalog = ActionCatalog()
    catalog.register_module(str(root / "catalogs" / f"{domain}_flows.py"))
    catalog_seconds = time.perf_counter() - started
    planner = make_planner(catalog) if make_planner is not None else HeuristicPlanner(catalog)
    samples = samples_doc["samples"]
    if sample is not None and sample < len(samples):
        samples = samples[:: len(samples) // sample][:sample]

    expected_nodes: list[set[str]] = []
    planned_nodes: list[set[str]] = []
    expected_edges: list[set[Link]] = []
    planned_edges: list[set[Link]] = []
    latencies: list[float] = []
    status = {"valid": 0, "partial": 0, "failed": 0}
    for request in samples:
        names = [fix(node["task"]) for node in request["task_nodes"]]
        expected_nodes.append(set(names))
        expected_edges.append(expected_links(request, names, resource))
        t0 = time.perf_counter()
        result = await planner.plan(PlanningContext(goal=request["user_request"]))
        latencies.append((time.perf_counter() - t0) * 1000)
        if result.plan is None:
            status["failed"] += 1
            planned_nodes.append(set())
            planned_edges.append(set())
            continue
        ok = result.validation is not None and result.validation.ok
        status["valid" if ok else "partial"] += 1
        tool_of = {s.id: to_tool[s.action] for s in result.plan.steps}
        planned_nodes.append(set(tool_of.values()))
        planned_edges.append(
            {
                (tool_of[dep], tool_of[sid])
                for sid, deps in step_dependencies(result.plan).items()
                for dep in deps
                if dep != sid
            }
        )
    n = len(latencies)
    pairs = zip(expected_nodes, planned_nodes, expected_edges, planned_edges, strict=True)
    exact = [(en == pn, en == pn and ee == pe) for en, pn, ee, pe in pairs]
    return {
        "domain": domain,
        "samples": n,
        "catalog_actions": len(catalog),
        "catalog_load_s": round(catalog_seconds, 3),
        "n_f1": round(node_f1(expected_nodes, planned_nodes, tools), 4),
        "e_f1": round(link_f1(expected_edges, planned_edges), 4),
        "exact_match_tools": round(sum(a for a, _ in exact) / n, 4),
        "exact_match_tools_and_links": round(sum(b for _, b in exact) / n, 4),
        "plans": {k: round(v / n, 4) for k, v in status.items()},
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_p95": round(_percentile(latencies, 0.95), 3),
        "reference_llms_not_run_here": (
            {k: {"n_f1": a, "e_f1": b} for k, (a, b) in REFERENCE.items()}
            if domain == "huggingface"
            else {}
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=DEFAULT_DATA, help="TaskBench folder")
    parser.add_argument("--domain", default="huggingface", help="a folder under data/")
    args = parser.parse_args()
    if not (args.root / "data" / args.domain / "samples.json").exists():
        sys.exit(f"no TaskBench data at {args.root / 'data' / args.domain} (see --root)")
    print(json.dumps(asyncio.run(run(args.root, args.domain)), indent=2))


if __name__ == "__main__":
    main()
