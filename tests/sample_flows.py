"""Real Prefect flows covering the shapes the catalog must introspect."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypedDict

from prefect import flow
from pydantic import BaseModel, Field


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class LoadOptions(BaseModel):
    """How to read a file."""

    delimiter: str = Field(default=",", description="Column separator.")
    skip_rows: int = Field(default=0, description="Rows to skip first.")


class Tree(BaseModel):
    """A recursive model."""

    name: str
    children: list[Tree] = []


@dataclass
class LoadResult:
    """What loading produced.

    Attributes:
        rows: The parsed rows.
        row_count: How many rows.
    """

    rows: list[dict[str, str]]
    row_count: int


class Stats(TypedDict):
    mean: float
    count: int


class Split(NamedTuple):
    train: list[int]
    test: list[int]


class Report(BaseModel):
    title: str = Field(description="Report title.")
    score: float = Field(description="Overall score.")
    tags: list[str] = []


@flow(name="load_csv", version="1.0")
def load_csv(
    path: str,
    options: LoadOptions | None = None,
    mode: Literal["fast", "safe"] = "safe",
    limit: int | None = None,
    columns: list[str] | None = None,
) -> LoadResult:
    """Load rows from a CSV file.

    Reads the file and parses it into dictionaries.

    Args:
        path: Where the CSV file lives.
        options: Parsing options.
        mode: Parsing mode.
        limit: Read at most this many rows.
        columns: Keep only these columns.

    Returns:
        The rows and how many there were.
    """
    return LoadResult(rows=[], row_count=0)


@flow(name="compute_stats", version="1.0")
def compute_stats(values: list[float], color: Color = Color.RED) -> Stats:
    """Compute summary statistics.

    Args:
        values: Numbers to summarise.
        color: Colour of the chart.
    """
    return Stats(mean=0.0, count=len(values))


@flow(name="split_data", version="1.0")
def split_data(items: list[int], ratio: float = 0.8) -> Split:
    """Split items into train and test sets."""
    return Split(train=items, test=[])


@flow(name="write_report", version="2")
def write_report(title: str, score: float, notes: dict[str, str] | None = None) -> Report:
    """Write a report.

    Args:
        title: Report title.
        score: Score to show.
        notes: Free-form notes.
    """
    return Report(title=title, score=score)


@flow(name="count_rows", version="1.0")
def count_rows(rows: list[dict[str, str]]) -> int:
    """Count rows.

    Returns:
        The number of rows.
    """
    return len(rows)


@flow(name="no_docs", version="1.0")
def no_docs(x, y: int = 2):  # type: ignore[no-untyped-def]
    return x


@flow(name="notify", version="1.0")
def notify(message: str) -> None:
    """Send a notification."""


@flow(name="grow_tree", version="1.0")
def grow_tree(tree: Tree) -> Tree:
    """Grow a tree."""
    return tree
