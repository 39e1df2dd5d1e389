"""The flows `bench/scale.py` runs, ours and by hand (imported by its child processes and
served as a deployment)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import Task, flow, tags
from prefect.deployments import arun_deployment


@flow(name="bump", version="1", persist_result=True)
async def bump(x: int, nonce: str) -> int:
    """Add one."""
    return x + 1


@flow(name="nap", version="1")
async def nap(seconds: float, nonce: str) -> float:
    """Sleep, then return how long."""
    await asyncio.sleep(seconds)
    return seconds


@flow(name="gather", version="1")
async def gather(values: list[float], nonce: str) -> float:
    """Add numbers."""
    return sum(values)


@flow(name="burn", version="1")
def burn(units: int, nonce: str) -> int:
    """A fixed amount of pure-Python work (`units` sums of 1,000 numbers): it holds the
    GIL, so threads of one process share one core for it."""
    return sum(sum(range(1000)) for _ in range(units))


def units_per_second() -> int:
    """How many `burn` units one core does in a second here."""
    started = time.perf_counter()
    burn.fn(20_000, "calibrate")
    return int(20_000 / (time.perf_counter() - started))


async def _bump(x: int, nonce: str) -> int:
    return x + 1


async def _nap(seconds: float, nonce: str) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def _gather(values: list[float], nonce: str) -> float:
    return sum(values)


# Hand-written equivalents: what a Prefect user writes for the same calls. Results are
# persisted, as ours are (resume needs them).
BUMP = Task(fn=_bump, name="bump", persist_result=True)
NAP = Task(fn=_nap, name="nap", persist_result=True)
GATHER = Task(fn=_gather, name="gather", persist_result=True)


@flow(name="hand-chain")
async def hand_chain(n: int, nonce: str, mode: str) -> int:
    """n chained steps in `mode`: task, tagged (tasks with tags), subflow or deployment."""
    x = 0
    for i in range(n):
        if mode == "task":
            x = await BUMP(x, nonce)
        elif mode == "tagged":
            # With the run's own tags (plan:, execution:), as a plan's tagged steps.
            with tags(f"plan_step:s{i}"):
                x = await BUMP(x, nonce)
        elif mode == "subflow":
            x = await bump(x, nonce)
        else:
            run: Any = await arun_deployment(
                "bump/scale-bump", parameters={"x": x, "nonce": nonce}, as_subflow=True
            )
            x = await run.state.aresult()
    return x


# Seconds from the first step's start to the last one's end, of each hand-written fan-out.
SPANS: list[float] = []


@flow(name="hand-fanout")
async def hand_fanout(width: int, seconds: float, nonce: str) -> float:
    """`width` naps at once, then their sum."""
    started = time.perf_counter()
    naps = [NAP.submit(seconds, nonce) for _ in range(width)]
    total = await GATHER(list(naps), nonce)  # type: ignore[arg-type]
    SPANS.append(time.perf_counter() - started)
    return total


@flow(name="hand-dag")
async def hand_dag(seconds: float, nonce: str) -> float:
    """The 5-step DAG of the concurrency figures: 4 naps, then their sum."""
    return await hand_fanout.fn(4, seconds, nonce)


if __name__ == "__main__":
    bump.serve(name="scale-bump")
