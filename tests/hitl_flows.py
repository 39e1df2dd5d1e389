"""Flows for the service, context and deployable-flow tests."""

from __future__ import annotations

from typing import Literal

from prefect import flow


@flow(name="greet", version="1")
async def greet(name: str, times: int = 1, tone: Literal["plain", "loud"] = "plain") -> str:
    """Greet someone by name.

    Returns:
        The greeting.
    """
    text = " ".join([f"hello {name}"] * times)
    return text.upper() if tone == "loud" else text


@flow(name="shout", version="1")
async def shout(text: str) -> str:
    """Shout a text (upper case, with an exclamation mark)."""
    return text.upper() + "!"
