"""Flows served as deployments by a separate process (`python -m tests.deploy_flows`).

The test fixtures start this module against a real `prefect server start`.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, serve
from pydantic import BaseModel


class Tally(BaseModel):
    total: int
    words: list[str]


def record(name: str) -> None:
    """Count one real execution in $AETHER_TEST_RUNS (a file per run)."""
    runs = os.environ.get("AETHER_TEST_RUNS")
    if runs:
        (Path(runs) / f"{name}.{os.getpid()}.{os.urandom(4).hex()}").write_text(name)


@flow(name="count-words", persist_result=True)
def count_words(text: str, minimum: int = 1) -> Tally:
    """Count the words of a text that have at least `minimum` letters.

    Returns:
        The count and the words.
    """
    record("count-words")
    words = [w for w in text.split() if len(w) >= minimum]
    return Tally(total=len(words), words=words)


@flow(name="make-title", persist_result=True)
def make_title(words: list[str]) -> str:
    record("make-title")
    return " ".join(w.capitalize() for w in words)


@flow(name="forgetful")
def forgetful(text: str) -> str:
    """Returns a value but does not persist it."""
    return text


@flow(name="flaky-count", persist_result=True)
def flaky_count(text: str, marker_dir: str) -> int:
    """Fail the first time for a marker dir, then count words."""
    record("flaky-count")
    marker = Path(marker_dir) / "failed-once"
    if not marker.exists():
        marker.write_text("x")
        raise RuntimeError("transient failure")
    return len(text.split())


if __name__ == "__main__":
    serve(
        count_words.to_deployment("words", tags=["aether-test"], parameters={"minimum": 2}),
        make_title.to_deployment("titles", tags=["aether-test"]),
        forgetful.to_deployment("forgetful", tags=["aether-forgetful"]),
        flaky_count.to_deployment("flaky", tags=["aether-flaky"]),
    )
