"""Shipping flows whose inputs take values a goal writes in many ways: dates, codes in
capitals, separators said in words, splits and percentages, names given with "as",
objects written out field by field (tests/test_goal_values.py)."""

from __future__ import annotations

import csv
from datetime import date
from typing import Literal

from prefect import flow
from pydantic import BaseModel


class Shipment(BaseModel):
    """One parcel sent."""

    parcel_id: str
    country: str
    shipped_on: date
    price: float
    currency: str = "EUR"


class Sample(BaseModel):
    """Shipments split in two."""

    fit_part: list[Shipment]
    holdout: list[Shipment]


class DelayModel(BaseModel):
    """A fitted delay model."""

    label: str
    mean_price: float


class SenderTotal(BaseModel):
    """What one country sent."""

    country: str
    parcels: int


class DelayReport(BaseModel):
    """How late one route runs."""

    route: str
    delay_min: float
    late_share: float
    on_time: bool


@flow(name="read-shipments")
def read_shipments(source: str, delimiter: str = ",") -> list[Shipment]:
    """Read shipments from a CSV export.

    Args:
        source: CSV file of the carrier's export.
        delimiter: Field separator used in the file.
    """
    with open(source, newline="") as fh:
        return [Shipment(**row) for row in csv.DictReader(fh, delimiter=delimiter)]


@flow(name="select-shipments")
def select_shipments(
    shipments: list[Shipment],
    country: str | None = None,
    shipped_after: date | None = None,
    state: Literal["sent", "lost"] | None = None,
) -> list[Shipment]:
    """Keep the shipments of one country, or shipped after a day.

    Args:
        shipments: Shipments to select from.
        country: Country code such as ``FR``; every country when empty.
        shipped_after: First shipping day kept.
        state: Keep only parcels in this state.
    """
    return [
        s
        for s in shipments
        if (country is None or s.country == country)
        and (shipped_after is None or s.shipped_on >= shipped_after)
    ]


@flow(name="reprice-shipments")
def reprice_shipments(shipments: list[Shipment], target: str = "EUR") -> list[Shipment]:
    """Convert every shipment's price to one currency.

    Args:
        shipments: Shipments priced in mixed currencies.
        target: Currency to convert into.
    """
    return [s.model_copy(update={"currency": target}) for s in shipments]


@flow(name="split-shipments")
def split_shipments(shipments: list[Shipment], holdout_size: float = 0.2, seed: int = 0) -> Sample:
    """Split shipments into a fitting part and a held-out part.

    Args:
        shipments: Shipments to split.
        holdout_size: Share held out.
        seed: Shuffle seed.
    """
    cut = round(len(shipments) * (1 - holdout_size))
    return Sample(fit_part=shipments[:cut], holdout=shipments[cut:])


@flow(name="fit-delay-model")
def fit_delay_model(sample: Sample, model_label: str = "delay") -> DelayModel:
    """Fit a delay model on the fitting part.

    Args:
        sample: The split shipments.
        model_label: Name the model is archived under.
    """
    prices = [s.price for s in sample.fit_part] or [0.0]
    return DelayModel(label=model_label, mean_price=sum(prices) / len(prices))


@flow(name="archive-delay-model")
def archive_delay_model(model: DelayModel, archive_dir: str = "archive") -> str:
    """Archive a delay model in the archive folder; returns its id."""
    return f"{archive_dir}/{model.label}"


@flow(name="store-shipments")
def store_shipments(shipments: list[Shipment], table: str = "shipments") -> int:
    """Load shipments into the warehouse table.

    Args:
        shipments: Shipments to load.
        table: Table to (re)create.
    """
    return len(shipments)


@flow(name="top-countries")
def top_countries(shipments: list[Shipment], n: int = 3) -> list[SenderTotal]:
    """Rank countries by parcels sent.

    Args:
        shipments: Shipments to rank over.
        n: How many countries to keep.
    """
    counts: dict[str, int] = {}
    for s in shipments:
        counts[s.country] = counts.get(s.country, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return [SenderTotal(country=c, parcels=k) for c, k in ranked]


@flow(name="countries-to-csv")
def countries_to_csv(totals: list[SenderTotal], out_file: str) -> None:
    with open(out_file, "w", newline="") as fh:
        csv.writer(fh).writerows([t.country, t.parcels] for t in totals)


@flow(name="shipping-summary")
def shipping_summary(shipments: list[Shipment]) -> dict[str, float]:
    """Total price and parcel count per country."""
    per: dict[str, float] = {}
    for s in shipments:
        per[s.country] = per.get(s.country, 0.0) + s.price
    return per


@flow(name="escalate-delay")
def escalate_delay(report: DelayReport, urgency: Literal["low", "high"] = "high") -> str:
    """Escalate a late route to the carrier's desk.

    Args:
        report: The delay report that triggered it.
        urgency: How urgent.
    """
    return f"{report.route}: {urgency}"


@flow(name="sla-left")
def sla_left(route: str, target: float = 0.99) -> float:
    """Share of a route's SLA budget left this month."""
    return round(1 - target, 4)


@flow(name="log-shipping-run")
def log_shipping_run(run_name: str, shipments: list[Shipment]) -> None:
    """Log a shipping run's parcels under its run name."""
