"""Execution overhead, measured side by side in one process on Prefect's embedded server.

Prints one JSON object:

- `dag_width4`: a width-4 DAG of 0.5 s sleeping steps plus a join; wall time
  divided by the critical path (0.5 s). Goal <= 1.5 in the default mode. The
  aethergraph executor runs the steps one by one: 2.0 s, ratio 4.0.
- `chain`: a 50-step chain of trivial steps (10 in subflow mode, whose steps
  cost seconds on SQLite) against a hand-written Prefect flow making the same
  calls in the same mode; runs interleaved; median ratio. Goal <= 1.15.
- `per_step_overhead_ms`: (chain wall time - the same chain hand-written) / 50
  and chain wall time / 50, per mode.

Run: `.venv/bin/python bench/execute.py [--repeat N]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

_HOME = tempfile.mkdtemp(prefix="aether-bench-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect import Task, flow  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from scale_flows import bump, gather, nap  # noqa: E402

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor  # noqa: E402

CRITICAL_PATH_S = 0.5


def dag_plan(nonce: str) -> CandidatePlan:
    steps: list[dict[str, Any]] = [
        {"id": f"n{i}", "action": "nap", "inputs": {"seconds": CRITICAL_PATH_S, "nonce": nonce}}
        for i in range(4)
    ]
    steps.append(
        {
            "id": "join",
            "action": "gather",
            "inputs": {"values": [f"${{n{i}.result}}" for i in range(4)], "nonce": nonce},
        }
    )
    return CandidatePlan.from_dict({"steps": steps})


def chain_plan(n: int, nonce: str) -> CandidatePlan:
    steps: list[dict[str, Any]] = [
        {"id": "s0", "action": "bump", "inputs": {"x": 0, "nonce": nonce}}
    ]
    steps += [
        {"id": f"s{i}", "action": "bump", "inputs": {"x": f"${{s{i - 1}.result}}", "nonce": nonce}}
        for i in range(1, n)
    ]
    return CandidatePlan.from_dict({"steps": steps})


async def _bump_fn(x: int, nonce: str) -> int:
    return await bump.fn(x, nonce)


BUMP_TASK: Task[..., Any] = Task(fn=_bump_fn, name="bump")


@flow(name="hand-written-chain-task")
async def hand_chain_task(n: int, nonce: str) -> int:
    """What a user would write by hand: n chained task calls."""
    x = 0
    for _ in range(n):
        x = await BUMP_TASK(x, nonce)
    return x


@flow(name="hand-written-chain-subflow")
async def hand_chain_subflow(n: int, nonce: str) -> int:
    """n chained subflow calls."""
    x = 0
    for _ in range(n):
        x = await bump(x, nonce)
    return x


async def timed(coro: Any) -> float:
    start = time.perf_counter()
    result = await coro
    elapsed = time.perf_counter() - start
    ok = getattr(result, "ok", True)
    if not ok:
        raise SystemExit(f"benchmark run failed: {result.errors}")
    return elapsed


async def main(repeat: int, chain_length: int, subflow_chain_length: int) -> dict[str, Any]:
    catalog = ActionCatalog()
    for f in (nap, gather, bump):
        catalog.register(f)
    async with get_client() as client:  # start the embedded server once, from one place
        await client.hello()
    figures: dict[str, Any] = {"repeat": repeat, "chain_length": chain_length}
    # One warm-up plan run: the first run of a process pays for imports and server caches.
    await timed(PlanExecutor(catalog).execute(dag_plan(uuid.uuid4().hex)))

    dag: dict[str, Any] = {}
    variants = {
        "task": PlanExecutor(catalog),
        "task_tagged_steps": PlanExecutor(catalog, tag_steps=True),
        "subflow": PlanExecutor(catalog, run_as="subflow"),
    }
    for name, executor in variants.items():
        walls = [await timed(executor.execute(dag_plan(uuid.uuid4().hex))) for _ in range(repeat)]
        dag[name] = {
            "median_wall_s": round(statistics.median(walls), 3),
            "ratio_to_critical_path": round(statistics.median(walls) / CRITICAL_PATH_S, 2),
        }
    figures["dag_width4"] = dag
    figures["dag_width4_goal_ratio"] = 1.5
    figures["aethergraph_dag_width4_ratio"] = 4.0

    chain: dict[str, Any] = {}
    overhead: dict[str, Any] = {}
    hand = {"task": hand_chain_task, "subflow": hand_chain_subflow}
    lengths = {"task": chain_length, "subflow": subflow_chain_length}
    for mode in ("task", "subflow"):
        executor = PlanExecutor(catalog, run_as=mode)  # type: ignore[arg-type]
        n = lengths[mode]
        ours, theirs = [], []
        for _ in range(repeat):  # interleaved, so drift on a shared machine hits both
            ours.append(await timed(executor.execute(chain_plan(n, uuid.uuid4().hex))))
            theirs.append(await timed(hand[mode](n, uuid.uuid4().hex)))
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        chain[mode] = {
            "steps": n,
            "median_wall_s": round(statistics.median(ours), 3),
            "hand_written_median_wall_s": round(statistics.median(theirs), 3),
            "median_ratio": round(statistics.median(ratios), 3),
        }
        overhead[mode] = {
            "vs_hand_written_ms": round(
                (statistics.median(ours) - statistics.median(theirs)) / n * 1000, 2
            ),
            "wall_per_step_ms": round(statistics.median(ours) / n * 1000, 2),
        }
    figures["chain"] = chain
    figures["chain_goal_ratio"] = 1.15
    figures["per_step_overhead_ms"] = overhead
    figures["default_mode"] = PlanExecutor(catalog).run_as
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chain-length", type=int, default=50)
    # Subflow steps cost seconds each on the SQLite-backed embedded server: a shorter chain.
    parser.add_argument("--subflow-chain-length", type=int, default=10)
    args = parser.parse_args()
    figures = asyncio.run(main(args.repeat, args.chain_length, args.subflow_chain_length))
    print(json.dumps(figures, indent=2))
