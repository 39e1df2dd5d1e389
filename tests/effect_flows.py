"""Flows with effects, written the way teams write them: files read and written, a chat
channel, a ticket store; parameter names nobody tuned for a planner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from prefect import flow
from pydantic import BaseModel

from prefect_aether import Reads, Writes


class Reading(BaseModel):
    """One meter reading."""

    meter: str
    kwh: float


class Usage(BaseModel):
    """Total use per meter."""

    total_kwh: float
    per_meter: dict[str, float]


@flow
def read_meters(source: str) -> list[Reading]:
    """Read meter readings from a CSV export.

    Args:
        source: The CSV file of `meter,kwh` rows.
    """
    rows = [line.split(",") for line in Path(source).read_text().splitlines()[1:] if line]
    return [Reading(meter=m, kwh=float(k)) for m, k in rows]


@flow
def total_usage(readings: list[Reading]) -> Usage:
    """Add up the energy used, in total and per meter."""
    per: dict[str, float] = {}
    for r in readings:
        per[r.meter] = per.get(r.meter, 0.0) + r.kwh
    return Usage(total_kwh=sum(per.values()), per_meter=per)


@flow
def save_usage(usage: Usage, output_path: str) -> None:
    """Save a usage report as JSON.

    Args:
        usage: The figures to save.
        output_path: File to write.
    """
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    Path(output_path).write_text(usage.model_dump_json())


@flow
def post_note(text: str, channel: str = "#energy") -> None:
    """Post a message to a chat channel (appends to outbox/chat.jsonl)."""
    Path("outbox").mkdir(exist_ok=True)
    with open("outbox/chat.jsonl", "a") as fh:
        fh.write(json.dumps({"channel": channel, "text": text}) + "\n")


@flow
def copy_readings(src_file: Annotated[str, Reads], target: Annotated[str, Writes]) -> int:
    """Duplicate a readings file somewhere else; returns the bytes copied."""
    data = Path(src_file).read_bytes()
    Path(target).write_bytes(data)
    return len(data)


@flow
def tariff_for(meter: str, tariff_table: str = "tariffs.json") -> float:
    """Price per kWh of a meter.

    Args:
        meter: The meter's id.
        tariff_table: JSON of prices per meter.
    """
    return float(json.loads(Path(tariff_table).read_text()).get(meter, 0.3))


@flow
def meter_status(meter: str) -> str:
    """Check whether a meter reports on time."""
    return f"{meter}: ok"


@flow
def send_payload(url: str, payload: dict) -> int:  # type: ignore[type-arg]
    """POST a JSON payload to a webhook (appends to outbox/hooks.jsonl).

    Args:
        url: Webhook URL.
        payload: JSON body.
    """
    Path("outbox").mkdir(exist_ok=True)
    with open("outbox/hooks.jsonl", "a") as fh:
        fh.write(json.dumps({"url": url, "payload": payload}) + "\n")
    return 200
