"""Example catalog: an offline sales pipeline over `flows/data/sales.csv`.

Plain Prefect flows, as a team would already have them: typed parameters,
docstrings and structured returns. prefect-aether turns them into actions; the
example plan (`flows/plan.json`) loads and cleans the data, then runs two
independent branches (revenue by region, monthly trend) and an anomaly scan
concurrently, and joins them into a report.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

DATA = "flows/data/sales.csv"


class SalesTable(BaseModel):
    """Rows read from a CSV file."""

    rows: list[dict[str, str]] = Field(description="One dict per CSV row, values as text.")
    columns: list[str] = Field(description="Column names, in file order.")
    row_count: int = Field(description="Number of rows read.")


@dataclass
class CleanSales:
    """Typed sales records.

    Attributes:
        records: Records with numeric units, unit_price and revenue.
        dropped: Rows dropped because a field was missing or not a number.
    """

    records: list[dict[str, str | float]]
    dropped: int


class RegionRevenue(BaseModel):
    """Revenue per region."""

    totals: dict[str, float] = Field(description="Region to total revenue.")
    top_region: str = Field(description="The region with the most revenue.")


class MonthlyTrend(BaseModel):
    """Revenue per month."""

    months: list[str] = Field(description="Months (YYYY-MM) in order.")
    revenue: list[float] = Field(description="Revenue of each month.")
    growth_pct: float = Field(description="Growth from the first to the last month, in percent.")


class Anomalies(BaseModel):
    """Records whose revenue is far from the mean."""

    count: int = Field(description="How many anomalies were found.")
    records: list[dict[str, str | float]] = Field(description="The anomalous records.")


class Report(BaseModel):
    """A short markdown report."""

    markdown: str = Field(description="The report text.")
    highlights: list[str] = Field(description="One line per finding.")


class SavedFile(BaseModel):
    """A file written to disk."""

    path: str = Field(description="Where the file was written.")
    size_bytes: int = Field(description="Its size.")


@flow(name="load_sales", version="1.0")
def load_sales(path: str = DATA, limit: int | None = None) -> SalesTable:
    """Load sales rows from a CSV file.

    Args:
        path: The CSV file to read.
        limit: Read at most this many rows.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [dict(row) for row in reader]
        columns = list(reader.fieldnames or [])
    rows = rows[:limit] if limit is not None else rows
    return SalesTable(rows=rows, columns=columns, row_count=len(rows))


@flow(name="clean_sales", version="1.0")
def clean_sales(rows: list[dict[str, str]], required: list[str] | None = None) -> CleanSales:
    """Clean sales rows: drop incomplete ones and compute revenue.

    Args:
        rows: Raw rows as loaded from CSV.
        required: Columns that must be present (default: all of region, units, unit_price).
    """
    needed = required or ["region", "units", "unit_price"]
    records: list[dict[str, str | float]] = []
    for row in rows:
        if any(not row.get(column) for column in needed):
            continue
        try:
            units, price = float(row["units"]), float(row["unit_price"])
        except ValueError:
            continue
        records.append({**row, "units": units, "unit_price": price, "revenue": units * price})
    return CleanSales(records=records, dropped=len(rows) - len(records))


@flow(name="revenue_by_region", version="1.0")
def revenue_by_region(records: list[dict[str, str | float]]) -> RegionRevenue:
    """Total revenue per sales region.

    Args:
        records: Clean sales records with region and revenue.
    """
    totals: dict[str, float] = defaultdict(float)
    for record in records:
        totals[str(record["region"])] += float(record["revenue"])
    rounded = {region: round(total, 2) for region, total in sorted(totals.items())}
    return RegionRevenue(totals=rounded, top_region=max(rounded, key=rounded.__getitem__))


@flow(name="monthly_trend", version="1.0")
def monthly_trend(records: list[dict[str, str | float]]) -> MonthlyTrend:
    """Revenue per month and its growth over the period.

    Args:
        records: Clean sales records with date and revenue.
    """
    by_month: dict[str, float] = defaultdict(float)
    for record in records:
        by_month[str(record["date"])[:7]] += float(record["revenue"])
    months = sorted(by_month)
    revenue = [round(by_month[m], 2) for m in months]
    growth = (revenue[-1] - revenue[0]) / revenue[0] * 100 if revenue and revenue[0] else 0.0
    return MonthlyTrend(months=months, revenue=revenue, growth_pct=round(growth, 1))


@flow(name="detect_anomalies", version="1.0")
def detect_anomalies(records: list[dict[str, str | float]], z_threshold: float = 3.0) -> Anomalies:
    """Find records whose revenue is an outlier (z-score above a threshold).

    Args:
        records: Clean sales records with revenue.
        z_threshold: How many standard deviations from the mean count as an anomaly.
    """
    values = [float(r["revenue"]) for r in records]
    if len(values) < 2:
        return Anomalies(count=0, records=[])
    mean, spread = statistics.fmean(values), statistics.pstdev(values)
    outliers = [
        r
        for r, v in zip(records, values, strict=True)
        if spread and abs(v - mean) / spread > z_threshold
    ]
    return Anomalies(count=len(outliers), records=outliers)


@flow(name="build_report", version="1.0")
def build_report(
    title: str,
    region_totals: dict[str, float],
    top_region: str,
    growth_pct: float,
    anomaly_count: int | None = None,
) -> Report:
    """Write a markdown sales report from regional totals, the trend and anomalies.

    Args:
        title: Report title.
        region_totals: Revenue per region.
        top_region: The best region.
        growth_pct: Revenue growth over the period, in percent.
        anomaly_count: Number of anomalous records found; unset when nothing looked for them.
    """
    highlights = [
        f"Top region: {top_region} ({region_totals.get(top_region, 0):,.2f})",
        f"Growth over the period: {growth_pct:+.1f}%",
        f"Anomalous records: {'not checked' if anomaly_count is None else anomaly_count}",
    ]
    lines = [
        f"# {title}",
        "",
        *[f"- {h}" for h in highlights],
        "",
        "| region | revenue |",
        "| --- | --- |",
    ]
    lines += [f"| {region} | {total:,.2f} |" for region, total in region_totals.items()]
    return Report(markdown="\n".join(lines) + "\n", highlights=highlights)


@flow(name="save_report", version="1.0")
def save_report(markdown: str, output_dir: str = "out", filename: str = "report.md") -> SavedFile:
    """Save a markdown report to a file.

    Args:
        markdown: The report text.
        output_dir: Directory to write into (created if missing).
        filename: File name.
    """
    target = Path(output_dir) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(markdown)
    return SavedFile(path=str(target), size_bytes=target.stat().st_size)
