"""Flows written the way Prefect 3 teams write them: models in and out (pydantic,
dataclasses, TypedDict, NamedTuple), enums, Literal, Optional, Path, dates, Decimal and
UUID parameters. Each run is counted in `AETHER_TEST_RUNS` when that is set."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Literal, NamedTuple

from prefect import flow
from pydantic import BaseModel, Field
from typing_extensions import TypedDict


def _count(name: str) -> None:
    folder = os.environ.get("AETHER_TEST_RUNS")
    if folder:
        with open(Path(folder) / name, "a") as fh:
            fh.write("x")


class Shipment(BaseModel):
    """One parcel on its way."""

    parcel_id: str
    carrier: str
    shipped_on: dt.date
    weight_kg: float = Field(description="Weight in kilograms.")
    fee: Decimal = Decimal("0")


class Manifest(BaseModel):
    """Parcels of one day, by carrier."""

    day: dt.date
    parcels: list[Shipment]
    carriers: list[str]


class CarrierLoad(BaseModel):
    carrier: str
    weight_kg: float
    parcels: int


@dataclasses.dataclass
class Window:
    """A date range, both ends included."""

    start: dt.date
    end: dt.date


class Totals(TypedDict):
    parcels: int
    weight_kg: float


class Span(NamedTuple):
    first: dt.date
    last: dt.date


class Speed(str, enum.Enum):
    standard = "standard"
    express = "express"


@flow
def read_shipments(source: Path, since: dt.date | None = None) -> list[Shipment]:
    """Read parcels from a CSV file of `parcel_id,carrier,shipped_on,weight_kg,fee` rows.

    Args:
        source: The CSV file to read.
        since: Keep parcels shipped on this day or later.
    """
    _count("read_shipments")
    rows = [line.split(",") for line in Path(source).read_text().splitlines()[1:] if line]
    found = [
        Shipment(parcel_id=r[0], carrier=r[1], shipped_on=r[2], weight_kg=r[3], fee=r[4])  # type: ignore[arg-type]
        for r in rows
    ]
    return [s for s in found if since is None or s.shipped_on >= since]


@flow
def build_manifest(parcels: list[Shipment], day: dt.date) -> Manifest:
    """Gather one day's parcels into a manifest.

    Args:
        parcels: Parcels to choose from.
        day: The day of the manifest.
    """
    _count("build_manifest")
    kept = [p for p in parcels if p.shipped_on == day]
    return Manifest(day=day, parcels=kept, carriers=sorted({p.carrier for p in kept}))


@flow
def load_per_carrier(manifest: Manifest) -> list[CarrierLoad]:
    """Weight and parcel count per carrier of a manifest."""
    _count("load_per_carrier")
    loads: dict[str, CarrierLoad] = {}
    for p in manifest.parcels:
        load = loads.setdefault(p.carrier, CarrierLoad(carrier=p.carrier, weight_kg=0, parcels=0))
        load.weight_kg += p.weight_kg
        load.parcels += 1
    return [loads[c] for c in sorted(loads)]


@flow
def heaviest(loads: list[CarrierLoad]) -> CarrierLoad:
    """The carrier that carries the most weight."""
    _count("heaviest")
    return max(loads, key=lambda load: load.weight_kg)


@flow
def weights_by_carrier(manifest: Manifest) -> dict[str, float]:
    """Total weight per carrier, as a plain mapping."""
    _count("weights_by_carrier")
    out: dict[str, float] = {}
    for p in manifest.parcels:
        out[p.carrier] = out.get(p.carrier, 0.0) + p.weight_kg
    return out


@flow
def in_window(parcels: list[Shipment], window: Window) -> Totals:
    """Count and weigh the parcels shipped inside a date window."""
    _count("in_window")
    kept = [p for p in parcels if window.start <= p.shipped_on <= window.end]
    return Totals(parcels=len(kept), weight_kg=sum(p.weight_kg for p in kept))


@flow
def span_of(parcels: list[Shipment]) -> Span:
    """The first and last shipping day."""
    _count("span_of")
    days = sorted(p.shipped_on for p in parcels)
    return Span(first=days[0], last=days[-1])


@flow
def quote(
    totals: Totals,
    speed: Speed = Speed.standard,
    currency: Literal["EUR", "USD"] = "EUR",
    rate: Decimal = Decimal("1.50"),
    batch: uuid.UUID | None = None,
) -> str:
    """Price the parcels: `rate` per kilogram, twice that for express.

    Args:
        totals: Parcels and weight to price.
        speed: Delivery speed.
        currency: Currency of the quote.
        rate: Price per kilogram.
        batch: The batch the quote belongs to.
    """
    _count("quote")
    factor = 2 if speed is Speed.express else 1
    price = Decimal(str(totals["weight_kg"])) * rate * factor
    return f"{price:.2f} {currency}" + (f" ({batch})" if batch else "")


@flow
def write_manifest(manifest: Manifest, dest: Path) -> str:
    """Write a manifest as JSON to a file; returns the file's path.

    Args:
        manifest: The manifest to write.
        dest: The file to write.
    """
    _count("write_manifest")
    Path(dest).write_text(manifest.model_dump_json())
    return str(dest)


@flow
def archive(manifest: Manifest, dest: Path) -> None:
    """Append a manifest to an archive file.

    Args:
        manifest: The manifest to archive.
        dest: The archive file to append to.
    """
    _count("archive")
    with open(dest, "a") as fh:
        fh.write(manifest.model_dump_json() + "\n")
