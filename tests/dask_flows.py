"""Flows for the distributed task runner test: each says which process ran it."""

from __future__ import annotations

import os
from typing import TypedDict

from prefect import flow


class Ran(TypedDict):
    pid: int
    total: int


@flow(name="which_process", version="1")
def which_process(n: int, seconds: float = 0.0) -> Ran:
    """Burn CPU for a moment and say which process ran the step.

    Returns:
        pid: The process id.
        total: A sum computed the slow way.
    """
    import time

    total = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        total += sum(range(1000))
    return Ran(pid=os.getpid(), total=total + n)


@flow(name="collect_pids", version="1")
def collect_pids(pids: list[int]) -> list[int]:
    """The distinct process ids, sorted."""
    return sorted(set(pids))
