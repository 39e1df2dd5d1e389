"""Validation speed: chains of 1k-64k steps and a 4k-step wide plan.

Prints one JSON object. Each figure is the median of several runs, measured in
this one process. Goals (2-core machine): the 4,000-step chain in <= 15 ms, and
linear growth (64k/4k time ratio <= 20, i.e. close to the 16x step ratio).

Run: `.venv/bin/python bench/validate.py [--repeat N]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from prefect import flow

from prefect_aether import ActionCatalog, CandidatePlan, validate_plan


@flow(name="increment", version="1")
def increment(x: int, step: int = 1) -> int:
    """Add `step` to `x`."""
    return x + step


def chain(n: int, *, reverse: bool = False) -> CandidatePlan:
    """`n` steps, each reading the previous one's result."""
    steps: list[dict[str, Any]] = [{"id": "s0", "action": "increment", "inputs": {"x": 0}}]
    steps += [
        {"id": f"s{i}", "action": "increment", "inputs": {"x": f"${{s{i - 1}.result}}", "step": 2}}
        for i in range(1, n)
    ]
    return CandidatePlan.from_dict({"steps": steps[::-1] if reverse else steps})


def wide(n: int) -> CandidatePlan:
    """One root step and `n - 1` steps that all read it."""
    steps: list[dict[str, Any]] = [{"id": "root", "action": "increment", "inputs": {"x": 0}}]
    steps += [
        {"id": f"w{i}", "action": "increment", "inputs": {"x": "${root.result}"}}
        for i in range(1, n)
    ]
    return CandidatePlan.from_dict({"steps": steps})


def median_ms(plan: CandidatePlan, catalog: ActionCatalog, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = validate_plan(plan, catalog, max_steps=len(plan.steps))
        times.append(time.perf_counter() - start)
        if not result.ok:
            sys.exit(f"benchmark plan is invalid: {result.summary()[:500]}")
    return round(statistics.median(times) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    catalog = ActionCatalog()
    catalog.register(increment)
    figures: dict[str, Any] = {}
    for n in (1_000, 4_000, 16_000, 64_000):
        figures[f"chain_{n}_ms"] = median_ms(chain(n), catalog, args.repeat if n < 64_000 else 3)
    figures["chain_4000_reversed_ms"] = median_ms(chain(4_000, reverse=True), catalog, args.repeat)
    figures["wide_4000_ms"] = median_ms(wide(4_000), catalog, args.repeat)
    figures["ratio_64k_over_4k"] = round(figures["chain_64000_ms"] / figures["chain_4000_ms"], 2)
    figures["goal_chain_4000_ms"] = 15.0
    figures["goal_ratio_64k_over_4k"] = 20.0
    figures["meets_goals"] = (
        figures["chain_4000_ms"] <= 15.0 and figures["ratio_64k_over_4k"] <= 20.0
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
