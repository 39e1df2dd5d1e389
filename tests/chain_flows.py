"""Five flows that hand one model down a chain, each taking `AETHER_STEP_SECONDS`
(0 by default; `bench/adaptive.py` sets 2): a goal that names each in turn
(tests/test_goal_values.py, bench/adaptive.py)."""

from __future__ import annotations

import os
import time

from prefect import flow
from pydantic import BaseModel

GOAL = "fetch the weather, then tidy it, then score it, then chart it, then file the chart"


class Weather(BaseModel):
    """Weather readings of a city, as each step leaves them."""

    city: str
    notes: list[str]


def _pause() -> None:
    time.sleep(float(os.environ.get("AETHER_STEP_SECONDS", "0")))


@flow(name="fetch-weather")
def fetch_weather(city: str) -> Weather:
    """Fetch the weather readings of a city."""
    _pause()
    return Weather(city=city, notes=["fetched"])


@flow(name="tidy-weather")
def tidy_weather(weather: Weather) -> Weather:
    """Tidy weather readings: drop gaps and duplicates."""
    _pause()
    return Weather(city=weather.city, notes=[*weather.notes, "tidy"])


@flow(name="score-weather")
def score_weather(weather: Weather) -> Weather:
    """Score tidy weather readings for comfort."""
    _pause()
    return Weather(city=weather.city, notes=[*weather.notes, "scored"])


@flow(name="chart-weather")
def chart_weather(weather: Weather) -> Weather:
    """Chart scored weather readings."""
    _pause()
    return Weather(city=weather.city, notes=[*weather.notes, "charted"])


@flow(name="file-chart")
def file_chart(weather: Weather) -> Weather:
    """Archive a weather chart for the team."""
    _pause()
    return Weather(city=weather.city, notes=[*weather.notes, "filed"])
