"""The Prefect API watchdog of a running plan (private to the executor)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from prefect_aether.settings import current_settings


class ApiOutage(Exception):
    """The Prefect API did not answer for `limit` seconds; the run was stopped."""

    def __init__(self, url: str, limit: float) -> None:
        super().__init__(url, limit)
        self.url = url
        self.limit = limit


async def watch_api(run: asyncio.Future[Any]) -> Any:
    """Await `run` while checking that the Prefect API answers; past
    `api_outage_timeout` without an answer, cancel it and raise `ApiOutage`.

    Prefect's client would otherwise retry every call for minutes per call. The
    embedded server lives in this process, so it is not watched.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return await run
    limit = current_settings().api_outage_timeout
    every = min(5.0, max(0.2, limit / 5))
    last_answer = time.monotonic()
    # The HTTP client is made at the first check only: most plans finish before it.
    http: httpx.AsyncClient | None = None
    try:
        while True:
            done, _ = await asyncio.wait({run}, timeout=every)
            if done:
                return run.result()
            http = http or httpx.AsyncClient(timeout=min(5.0, every))
            try:
                answer = await http.get(f"{url.rstrip('/')}/health")
                if answer.status_code < 500:
                    last_answer = time.monotonic()
            except httpx.HTTPError:
                pass
            if time.monotonic() - last_answer > limit:
                break
    finally:
        if http is not None:
            await http.aclose()
    run.cancel()
    # Prefect's engine may still be retrying calls to the API: give it a moment only.
    await asyncio.wait({run}, timeout=2)
    raise ApiOutage(str(url), limit)
