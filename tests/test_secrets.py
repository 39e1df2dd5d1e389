"""A canary API key kept in the LLM Block must not leak anywhere we can read back.

The deployable flow plans with the block (through a server that echoes the key in
an error, as some do), executes, and fails once on purpose. Then every prompt,
the Prefect logs of every run, every artifact, every event, every flow run state
and parameter, every plan store row and every exception message are read back
and searched for the key.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter
from prefect.events.filters import EventFilter
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogHandler

from prefect_aether.blocks import LLMConfig
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.flows import plan_and_execute
from tests import figures
from tests.llm_server import Reply, ScriptedLLMServer

pytestmark = pytest.mark.usefixtures("prefect_server")

CANARY = "sk-canary-7d1f9e2b44c0"
SOURCE = CatalogSource(modules=["tests.hitl_flows"])
PLAN = json.dumps({"steps": [{"id": "hi", "action": "greet", "inputs": {"name": "${user.name}"}}]})


async def read_everything() -> dict[str, list[str]]:
    """Every log, artifact, event, flow run state and parameter the API holds."""
    await APILogHandler.aflush()
    await EventsWorker.drain_all(at_exit=False)  # type: ignore[misc]
    found: dict[str, list[str]] = {"logs": [], "artifacts": [], "events": [], "runs": []}
    async with get_client() as client:
        offset = 0
        while True:
            logs = await client.read_logs(log_filter=LogFilter(), limit=200, offset=offset)
            found["logs"] += [log.message for log in logs]
            if len(logs) < 200:
                break
            offset += 200
        offset = 0
        while True:
            artifacts = await client.read_artifacts(limit=200, offset=offset)
            found["artifacts"] += [f"{a.key} {a.description} {a.data}" for a in artifacts]
            if len(artifacts) < 200:
                break
            offset += 200
        page = await client.read_events(filter=EventFilter(), limit=50)
        while True:
            found["events"] += [e.model_dump_json() for e in page.events]
            if not page.next_page:
                break
            page = await client.read_events_page(page.next_page)
        offset = 0
        while True:
            runs = await client.read_flow_runs(limit=200, offset=offset)
            found["runs"] += [
                f"{r.name} {r.tags} {r.parameters} {r.state.message if r.state else ''}"
                for r in runs
            ]
            if len(runs) < 200:
                break
            offset += 200
    return found


async def error_of(state: Any) -> str:
    """'ExceptionType: message' of the exception a failed state raises."""
    try:
        await state.aresult()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"state {state} raised nothing")


def store_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [repr(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"')]


async def test_the_canary_key_never_leaks(
    llm_server: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = tmp_path / "secrets.db"
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_STORE_URL", f"sqlite+aiosqlite:///{store_path}")
    await LLMConfig(base_url=llm_server.base_url, model="m", api_key=CANARY, max_retries=1).save(
        "canary-llm", overwrite=True
    )

    # 1. A 500 echoing the key, then a plan: planned, executed, stored.
    llm_server.script(Reply.error(500, f"upstream rejected key {CANARY}"), Reply.chat(PLAN))
    report = await plan_and_execute(
        "greet the canary",
        user_inputs={"name": "ada"},
        catalog=SOURCE,
        planner="llm",
        llm_block="canary-llm",
        cache=False,
    )
    assert isinstance(report, dict)
    assert report["ok"] is True
    prompts = [json.dumps(r.body) for r in llm_server.requests]
    assert all(r.headers["authorization"] == f"Bearer {CANARY}" for r in llm_server.requests)

    # 2. A 401 echoing the key: the run fails with the LLM's error.
    llm_server.script(Reply.error(401, f"Incorrect API key provided: {CANARY}"))
    state = await plan_and_execute(
        "greet the canary again",
        catalog=SOURCE,
        planner="llm",
        llm_block="canary-llm",
        return_state=True,
    )
    assert state.is_failed()
    prompts += [json.dumps(r.body) for r in llm_server.requests]
    errors = [await error_of(state)]
    assert "401" in errors[0]

    places = {
        "prompts": prompts,
        "exceptions": errors,
        "store": store_rows(store_path),
        **(await read_everything()),
    }
    assert places["logs"]
    assert places["artifacts"]
    assert places["events"]
    assert places["store"]
    hits = {name: sum(CANARY in text for text in texts) for name, texts in places.items()}
    figures.add("secrets.places_searched", sum(len(texts) for texts in places.values()))
    figures.add("secrets.canary_hits", sum(hits.values()))
    assert hits == dict.fromkeys(places, 0)


SECRET_CANARY = "pw-canary-3f8a61c0d9"


async def test_a_secret_binding_never_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${secret.<block>}` is read from a Prefect Secret block when the step starts: it is
    never in run parameters, the store, artifacts, events, logs or errors, even when the
    flow fails with it in its message or the plan runs in subflow mode."""
    from prefect.blocks.system import Secret

    from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor
    from prefect_aether.flows import execute_plan

    store_path = tmp_path / "secret-binding.db"
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_STORE_URL", f"sqlite+aiosqlite:///{store_path}")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_SECRET_BLOCKS", '["guard-db-password"]')
    await Secret(value=SECRET_CANARY).save("guard-db-password", overwrite=True)
    source = CatalogSource(modules=["tests.guarded_flows"])

    def plan(fail: bool) -> dict[str, Any]:
        inputs = {"user": "ada", "password": "${secret.guard-db-password}", "fail": fail}
        return {"steps": [{"id": "login", "action": "login", "inputs": inputs}]}

    report = await execute_plan(plan(False), catalog=source)
    assert isinstance(report, dict)
    assert report["outputs"] == {"result": f"ada logged in ({len(SECRET_CANARY)} characters)"}
    state = await execute_plan(plan(True), catalog=source, return_state=True)
    assert state.is_failed()
    errors = [await error_of(state)]
    assert "****" in errors[0]

    catalog = ActionCatalog()
    catalog.register_module("tests.guarded_flows")
    result = await PlanExecutor(catalog, run_as="subflow").execute(
        CandidatePlan.from_dict(plan(False))
    )
    assert result.ok, result.errors
    assert result.outputs == {"result": f"ada logged in ({len(SECRET_CANARY)} characters)"}
    failed = await PlanExecutor(catalog).execute(CandidatePlan.from_dict(plan(True)))
    errors += list(failed.errors.values())

    places = {"exceptions": errors, "store": store_rows(store_path), **(await read_everything())}
    hits = {name: sum(SECRET_CANARY in text for text in texts) for name, texts in places.items()}
    figures.add("guardrails.secret_leaks_tried")
    assert hits == dict.fromkeys(places, 0)
    figures.add("guardrails.secret_leaks_blocked")
