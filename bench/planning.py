"""Planning figures for a synthetic catalog of 500 flows and a set of goals.

Prints one JSON object:

- `prompt_chars`: mean prompt size (characters) of the LLM planner's catalog
  section with retrieval, against rendering every action in our format and in
  aethergraph's format (its `ActionCatalog.pretty_print`, re-created here for
  the same specs). Goal: retrieval <= 25% of the full rendering.
- `retrieval_recall`: share of the actions each goal needs that retrieval
  includes in the prompt. Goal >= 0.95.
- `heuristic_latency_ms`: heuristic planner time per goal (median, p95).
- `heuristic_exact_plan_accuracy`: share of goals where the heuristic planner
  gives exactly the expected steps, in order, each wired to its producer.

Run: `.venv/bin/python bench/planning.py`
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect_aether import ActionCatalog, ActionSpec
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.llm_planner import ActionPlanner, PlanningContext

NOUNS = [
    "sales", "customers", "orders", "inventory", "invoices", "shipments", "tickets",
    "sessions", "payments", "reviews",
]  # fmt: skip
STAGES = [
    ("extract", "Extract raw {noun} rows from the {source} source.", None, "raw_{noun}"),
    (
        "normalize",
        "Normalize {noun} records: types, units and time zones.",
        "raw_{noun}",
        "{noun}_table",
    ),
    ("deduplicate", "Remove duplicate {noun} entries by key.", "{noun}_table", "unique_{noun}"),
    ("score", "Score {noun} quality and flag outliers.", "unique_{noun}", "{noun}_scores"),
    (
        "publish",
        "Publish {noun} scores to the {source} warehouse.",
        "{noun}_scores",
        "{noun}_receipt",
    ),
]
SOURCES = ["crm", "erp", "web", "mobile", "partner", "legacy", "billing", "support", "ads", "iot"]


def catalog_source() -> str:
    """500 flows: 10 nouns x 10 sources x 5 pipeline stages, typed and documented."""
    lines = ["from typing import TypedDict", "from prefect import flow", ""]
    for noun in NOUNS:
        for source in SOURCES:
            for verb, doc, consumes, produces in STAGES:
                name = f"{verb}_{noun}_{source}"
                param = (consumes or "").format(noun=noun)
                out = f"{produces.format(noun=noun)}_{source}"
                args = f"{param}_{source}: list[dict]" if consumes else "limit: int = 100"
                lines += [
                    f"class {name.title().replace('_', '')}Out(TypedDict):",
                    f"    {out}: list[dict]",
                    "",
                    f'@flow(name="{name}", version="1")',
                    f"def {name}({args}) -> {name.title().replace('_', '')}Out:",
                    f'    """{doc.format(noun=noun, source=source)}"""',
                    f"    return {{'{out}': []}}",
                    "",
                ]
    return "\n".join(lines)


def import_source(source: str, name: str) -> ModuleType:
    """Write `source` to a temporary file and import it as module `name`."""
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(import_source(catalog_source(), "synthetic_flows"))
    return catalog


def goals() -> list[tuple[str, list[str]]]:
    """(goal, the actions it needs in order): one to five stages of one pipeline."""
    out: list[tuple[str, list[str]]] = []
    for i, noun in enumerate(NOUNS):
        source = SOURCES[(i * 3) % len(SOURCES)]
        stages = [s[0] for s in STAGES]
        steps = [f"{v}_{noun}_{source}" for v in stages]
        # Phrased in the descriptions' words, not the action names, so retrieval must rank.
        out.append((f"get the raw {noun} rows out of the {source} source", steps[:1]))
        out.append((f"raw {noun} rows from {source}, then fix {noun} types and units", steps[:2]))
        out.append((f"remove duplicate {noun} entries from {source}", steps[:3]))
        out.append(
            (f"score {noun} quality from {source} and publish the scores to the warehouse", steps)
        )
    return out


def aethergraph_format(specs: list[ActionSpec]) -> str:
    """aethergraph 0.1.0a4's `ActionCatalog.pretty_print` layout, for the same specs."""
    lines: list[str] = []
    for a in specs:
        inputs = ", ".join(f"{s.name}:{s.type or 'any'}" for s in a.inputs)
        outputs = ", ".join(f"{s.name}:{s.type or 'any'}" for s in a.outputs)
        lines.append(f"- action: {a.name}  [graphfn]")
        lines.append(f"  description: {a.description or '-'}")
        lines.append(f"  inputs: {inputs or 'none'}")
        lines.append(f"  outputs: {outputs or 'none'}")
        lines.append(f"  internal_ref: {a.ref}")
        lines.append("")
    return "\n".join(lines)


def main() -> dict[str, Any]:
    catalog = load_catalog()
    planner = ActionPlanner(catalog, llm=None)  # type: ignore[arg-type]  # prompts only
    heuristic = HeuristicPlanner(catalog)
    full = len(catalog.render())
    aether = len(aethergraph_format(list(catalog)))
    retrieved_chars, recalls, latencies, exact = [], [], [], 0
    for goal, needed in goals():
        ctx = PlanningContext(goal=goal)
        relevant = {s.name for s in planner.relevant_actions(ctx)}
        retrieved_chars.append(len(catalog.render([s for s in catalog if s.name in relevant])))
        recalls.append(sum(n in relevant for n in needed) / len(needed))
        start = time.perf_counter()
        result = asyncio.run(heuristic.plan(ctx))
        latencies.append((time.perf_counter() - start) * 1000)
        if result.plan is not None and [s.action for s in result.plan.steps] == needed:
            wired = all(
                list(step.inputs.values())
                == [f"${{{prev.id}.{catalog.get(prev.action).outputs[0].name}}}"]  # type: ignore[union-attr]
                for prev, step in zip(result.plan.steps, result.plan.steps[1:], strict=False)
            )
            exact += wired
    n = len(recalls)
    mean_retrieved = statistics.fmean(retrieved_chars)
    latencies.sort()
    return {
        "catalog_actions": len(catalog),
        "goals": n,
        "prompt_chars": {
            "retrieval_mean": round(mean_retrieved),
            "full_render": full,
            "aethergraph_format": aether,
            "retrieval_over_full": round(mean_retrieved / full, 4),
            "retrieval_over_aethergraph": round(mean_retrieved / aether, 4),
            "goal_retrieval_over_full": 0.25,
        },
        "retrieval_recall": round(statistics.fmean(recalls), 4),
        "goal_retrieval_recall": 0.95,
        "heuristic_latency_ms": {
            "median": round(statistics.median(latencies), 2),
            "p95": round(latencies[int(0.95 * (n - 1))], 2),
        },
        "heuristic_exact_plan_accuracy": round(exact / n, 4),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
