"""Flows used by the executor tests. Each records its real executions in a directory."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from prefect import flow
from pydantic import BaseModel


def record(log_dir: str, name: str) -> None:
    """Record one real execution of `name` (a file per execution)."""
    (Path(log_dir) / f"{name}.{uuid.uuid4().hex}").write_text(f"{time.time()}")


def executions(log_dir: Path, name: str) -> int:
    return len(list(log_dir.glob(f"{name}.*")))


class Summary(BaseModel):
    total: int
    count: int


@flow(name="emit_number", version="1")
async def emit_number(value: int, log_dir: str, delay: float = 0.0) -> int:
    """Return a number after an optional delay."""
    record(log_dir, f"emit_number-{value}")
    await asyncio.sleep(delay)
    return value


@flow(name="sleepy", version="1")
def sleepy(value: int, log_dir: str, seconds: float = 1.0) -> int:
    """Sleep (sync code), recording start and end times."""
    (Path(log_dir) / f"span-{value}").write_text(f"{time.time()}")
    time.sleep(seconds)
    (Path(log_dir) / f"span-{value}").write_text(
        (Path(log_dir) / f"span-{value}").read_text() + f" {time.time()}"
    )
    return value


@flow(name="summarize", version="1")
async def summarize(values: list[int], log_dir: str) -> Summary:
    """Sum and count numbers."""
    record(log_dir, "summarize")
    return Summary(total=sum(values), count=len(values))


@flow(name="double", version="1")
async def double(value: int, log_dir: str) -> int:
    """Double a number."""
    record(log_dir, "double")
    return value * 2


@flow(name="fail_once", version="1")
async def fail_once(value: int, log_dir: str) -> int:
    """Fail the first time it runs for a log dir, then succeed."""
    record(log_dir, "fail_once")
    marker = Path(log_dir) / "failed-once"
    if not marker.exists():
        marker.write_text("x")
        raise ValueError("transient failure, try again")
    return value + 1


@flow(name="always_fail", version="1")
async def always_fail(log_dir: str) -> int:
    """Always fail."""
    record(log_dir, "always_fail")
    raise RuntimeError("this step always fails")


@flow(name="hang", version="1")
async def hang(log_dir: str, seconds: float = 30) -> int:
    """Sleep far longer than any timeout."""
    record(log_dir, "hang")
    await asyncio.sleep(seconds)
    return 0


@flow(name="measure", version="1")
async def measure(text: str, extra: str = "") -> int:
    """The length of a text (and of an extra one)."""
    return len(text) + len(extra)


class Opaque:
    """A value JSON cannot hold."""

    def __init__(self, n: int) -> None:
        self.n = n


@flow(name="opaque", version="1")
async def opaque(log_dir: str) -> Opaque:
    """Return an object that is not JSON data."""
    record(log_dir, "opaque")
    return Opaque(3)
