"""Flows for the crash-and-resume test; each real execution leaves a file in $AETHER_TEST_RUNS.

Run as a script (`python -m tests.crash_flows PLAN_JSON`), it executes the plan with
resume on, as a user's process would, until the test kills it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from prefect import flow


def record(name: str) -> None:
    (Path(os.environ["AETHER_TEST_RUNS"]) / f"{name}.{uuid.uuid4().hex}").write_text(name)


@flow(name="extract", version="1")
async def extract(n: int) -> list[int]:
    """Produce the numbers 0..n-1."""
    record("extract")
    return list(range(n))


@flow(name="crunch", version="1")
async def crunch(values: list[int]) -> int:
    """Sum the numbers, slowly unless $AETHER_TEST_RUNS/fast exists."""
    record("crunch")
    if not (Path(os.environ["AETHER_TEST_RUNS"]) / "fast").exists():
        await asyncio.sleep(120)
    return sum(values)


@flow(name="publish", version="1")
async def publish(total: int) -> str:
    """Format the total."""
    record("publish")
    return f"total={total}"


@flow(name="charge", version="1")
async def charge(amount: int) -> str:
    """Charge a card: a side effect that must happen once. Takes 3 s; fails (before
    charging) while $AETHER_TEST_RUNS/decline exists, and removes it."""
    decline = Path(os.environ["AETHER_TEST_RUNS"]) / "decline"
    if decline.exists():
        decline.unlink()
        raise RuntimeError("card declined")
    record("charge")
    await asyncio.sleep(3)
    return f"charged {amount}"


@flow(name="wait_for_go", version="1")
async def wait_for_go(total: int) -> int:
    """Wait (up to 5 minutes) until $AETHER_TEST_RUNS/go exists."""
    record("wait_for_go")
    go = Path(os.environ["AETHER_TEST_RUNS"]) / "go"
    for _ in range(3000):
        if go.exists():
            return total
        await asyncio.sleep(0.1)
    raise TimeoutError("no go")


async def main(plan_json: str) -> None:
    from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor

    catalog = ActionCatalog()
    catalog.register_module(sys.modules[__name__])
    result = await PlanExecutor(catalog).execute(CandidatePlan.from_dict(json.loads(plan_json)))
    print(json.dumps({"ok": result.ok, "reused": result.reused}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
