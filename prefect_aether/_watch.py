"""The Prefect API watchdog of a running plan (private to the executor)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from prefect_aether.settings import AetherSettings


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
    limit = AetherSettings().api_outage_timeout
    every = min(5.0, max(0.2, limit / 5))
    last_answer = time.monotonic()
    async with httpx.AsyncClient(timeout=min(5.0, every)) as http:
        while True:
            done, _ = await asyncio.wait({run}, timeout=every)
            if done:
                return run.result()
            try:
                answer = await http.get(f"{url.rstrip('/')}/health")
                if answer.status_code < 500:
                    last_answer = time.monotonic()
            except httpx.HTTPError:
                pass
            if time.monotonic() - last_answer > limit:
                break
    run.cancel()
    # Prefect's engine may still be retrying calls to the API: give it a moment only.
    await asyncio.wait({run}, timeout=2)
    raise ApiOutage(str(url), limit)
