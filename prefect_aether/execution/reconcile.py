"""Bring store rows and flow runs of executions that ended badly back in line (private).

An execution whose process was killed stays `Running` in the store and on the
Prefect server; one that gave up while the API was down is `Interrupted` in the
store and still `Running` on the server. `reconcile` (run by `prefect-aether
history` and `show`) marks both `Crashed`: the store row, and the flow run once
the API answers. A row is left alone while the process that holds it is alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from prefect_aether.store import ExecutionRecord, PlanStore

__all__ = ["reconcile"]

logger = logging.getLogger("prefect_aether.reconcile")

_MESSAGE = (
    "the process running execution {id} stopped before the plan ended ({why}); resume it "
    "with `prefect-aether run PLAN --resume {id}`"
)


def _alive(holder: str | None) -> bool | None:
    """Whether the holding process runs: True/False on this host, None elsewhere."""
    if not holder or ":" not in holder:
        return None
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def reconcile(store: PlanStore) -> int:
    """Mark executions whose process is gone as crashed; returns how many changed."""
    changed = 0
    for row in await store.unfinished_executions():
        alive = _alive(row.holder)
        if row.status == "Running" and alive is not False:
            continue  # still running here, or held by another machine: its own business
        why = "it was killed" if row.status == "Running" else "the Prefect API was unreachable"
        message = _MESSAGE.format(id=row.execution_id or row.id, why=why)
        flow_run = await _crash_flow_run(row, message)
        if flow_run is None and row.status == "Interrupted":
            continue  # the API is still away: try again next time
        await store.set_execution_status(
            row.id, "Crashed", error=message, flow_run_id=flow_run or None
        )
        changed += 1
    return changed


async def _api_answers() -> bool:
    """Whether the configured Prefect API answers now (the embedded one always does);
    asked first, since Prefect's client would retry a dead API for minutes."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return True
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            return (await http.get(f"{url.rstrip('/')}/health")).status_code < 500
    except httpx.HTTPError:
        return False


async def _crash_flow_run(row: ExecutionRecord, message: str) -> str | None:
    """Set the execution's flow run `Crashed` unless it already ended; its id, "" when it
    has none, or None when the API cannot be reached."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.states import Crashed

    if not await _api_answers():
        return None
    try:
        async with get_client() as client:
            runs: list[Any] = []
            if row.execution_id:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        tags=FlowRunFilterTags(all_=[f"execution:{row.execution_id}"])
                    ),
                    limit=20,
                )
            elif row.flow_run_id:
                with contextlib.suppress(Exception):
                    runs = [await client.read_flow_run(uuid.UUID(row.flow_run_id))]
            found = ""
            for run in runs:
                found = found or str(run.id)
                if run.state is not None and not run.state.is_final():
                    await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            return found
    except Exception as exc:
        logger.warning("could not mark the flow run of execution %s crashed: %s", row.id, exc)
        return None
