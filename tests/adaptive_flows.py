"""Flows for adaptive execution (tests/test_adaptive.py): a primary rates feed that is
down, a mirror that works, and a paid feed that needs a person's approval. Every real
run leaves a file in `$AETHER_TEST_RUN_LOG`, so a test counts what ran."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from prefect import flow
from pydantic import BaseModel

from prefect_aether import action_tags
from prefect_aether.catalog.policy import APPROVAL


class Holding(BaseModel):
    """One position."""

    asset: str
    units: float


class Rate(BaseModel):
    """Today's price of an asset."""

    asset: str
    price: float


def _ran(action: str) -> None:
    folder = os.environ.get("AETHER_TEST_RUN_LOG")
    if folder:
        (Path(folder) / f"{action}.{uuid.uuid4().hex}").touch()


def runs(folder: Path, action: str) -> int:
    """How many times `action` really ran."""
    return len(list(folder.glob(f"{action}.*")))


@flow(name="load-holdings")
def load_holdings(path: str) -> list[Holding]:
    """Load the holdings from a CSV file of `asset,units` rows."""
    _ran("load-holdings")
    rows = [line.split(",") for line in Path(path).read_text().splitlines()[1:] if line]
    return [Holding(asset=a, units=float(u)) for a, u in rows]


@flow(name="fetch-rates")
def fetch_rates(market: str) -> list[Rate]:
    """Fetch today's rates of a market."""
    _ran("fetch-rates")
    raise ConnectionError(f"the rates feed for {market} is down")


@flow(name="fetch-rates-mirror")
def fetch_rates_mirror(market: str) -> list[Rate]:
    """Fetch today's rates of a market from the mirror feed (a few minutes late)."""
    _ran("fetch-rates-mirror")
    if os.environ.get("AETHER_TEST_MIRROR_DOWN"):
        raise ConnectionError(f"the mirror feed for {market} is down too")
    return [Rate(asset="gold", price=2.0), Rate(asset="oil", price=0.5)]


@flow(name="value-portfolio")
def value_portfolio(holdings: list[Holding], rates: list[Rate]) -> float:
    """Value the holdings at today's rates."""
    _ran("value-portfolio")
    price = {r.asset: r.price for r in rates}
    return round(sum(h.units * price.get(h.asset, 0.0) for h in holdings), 4)


@flow(name="slow-tick")
def slow_tick(label: str) -> str:
    """Wait a moment and say which tick this is."""
    _ran("slow-tick")
    time.sleep(0.5)
    return label


@action_tags(APPROVAL)
@flow(name="fetch-rates-paid")
def fetch_rates_paid(market: str) -> list[Rate]:
    """Fetch today's rates of a market from the paid feed (billed per call)."""
    _ran("fetch-rates-paid")
    return [Rate(asset="gold", price=2.5), Rate(asset="oil", price=0.5)]
