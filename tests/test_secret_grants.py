"""Secrets are granted, not found, and masked in what they become.

A plan may read only the Secret blocks the operator granted (`secret_blocks`), only into
inputs that take a secret; the LLM is told only of those. Every string field of a JSON
secret, the escaped forms of each value, and any step output that holds one are masked
wherever they would be shown, and such an output never becomes a child run's parameter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.system import Secret

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.execution.events import ExecutionEvent
from prefect_aether.flows import execute_plan
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import ActionPlanner, PlanningContext
from prefect_aether.service import PlannerService
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import validate_plan
from tests import figures
from tests.llm_server import Reply, ScriptedLLMServer
from tests.test_secrets import error_of, read_everything, store_rows

GRANTS = "PREFECT_INTEGRATIONS_AETHER_SECRET_BLOCKS"


@pytest.fixture
def catalog() -> ActionCatalog:
    actions = ActionCatalog()
    actions.register_module("tests.secret_flows")
    return actions


def step(action: str, sid: str = "s", **inputs: Any) -> dict[str, Any]:
    return {"id": sid, "action": action, "inputs": inputs}


def kinds(catalog: ActionCatalog, *steps: dict[str, Any]) -> list[str]:
    result = validate_plan(CandidatePlan.from_dict({"steps": list(steps)}), catalog)
    return [issue.kind for issue in result.issues]


def test_only_granted_blocks_go_into_inputs_that_take_a_secret(
    catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    post = step("post_message", channel="#ops", text="${secret.rt-canary}")
    dsn = step("build_dsn", host="db", password="${secret.rt-canary}")
    for plan in (post, dsn):
        figures.add("guardrails.ungranted_secrets_tried")
        assert kinds(catalog, plan) == ["secret_not_granted"]
        figures.add("guardrails.ungranted_secrets_blocked")
    result = validate_plan(CandidatePlan.from_dict({"steps": [dsn]}), catalog)
    assert "the secret_blocks setting grants: none" in result.issues[0].message

    monkeypatch.setenv(GRANTS, '["rt-canary"]')
    assert kinds(catalog, dsn) == []
    # Granted, but `text` does not take a secret: posting it is not what a grant allows.
    figures.add("guardrails.ungranted_secrets_tried")
    assert kinds(catalog, post) == ["secret_not_granted"]
    figures.add("guardrails.ungranted_secrets_blocked")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_SECRET_INPUTS", '{"post_message": ["text"]}')
    assert kinds(catalog, post) == []
    # A secret written into the plan itself is stored with it: refused with a hint.
    literal = step("build_dsn", host="db", password="hunter22")
    assert kinds(catalog, literal) == ["secret_binding"]


async def test_the_llm_sees_only_granted_secrets_and_cannot_use_others(
    catalog: ActionCatalog, llm_server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GRANTS, '["db-password"]')
    answer = {
        "steps": [
            step("summarize_ticket", "sum", ticket="${user.ticket}"),
            step("post_message", "post", channel="#ops", text="${secret.rt-canary}"),
        ],
        "unserved": [],
    }
    llm_server.script(*[Reply.chat(json.dumps(answer))] * 2)
    # Without a draft to stand instead, the refused answer is no plan.
    planner = ActionPlanner(
        catalog,
        OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0),
        max_iter=2,
        use_draft=False,
    )
    figures.add("guardrails.ungranted_secrets_tried")
    result = await planner.plan(
        PlanningContext(goal="summarize the ticket", user_inputs={"ticket": "printer on fire"})
    )
    assert result.plan is None
    assert result.validation is not None
    assert "secret_not_granted" in [issue.kind for issue in result.validation.issues]
    figures.add("guardrails.ungranted_secrets_blocked")
    prompt = json.dumps(llm_server.requests[-2].body)
    assert "${secret.db-password}" in prompt
    assert "rt-canary" not in prompt


@pytest.mark.usefixtures("prefect_server")
async def test_a_run_parameter_cannot_read_an_ungranted_secret(tmp_path: Path) -> None:
    await Secret(value="rt-canary-value-0b7e").save("rt-canary", overwrite=True)
    plan = {"steps": [step("login", user="ada", password="${secret.rt-canary}")]}
    figures.add("guardrails.ungranted_secrets_tried")
    state = await execute_plan(
        plan, catalog=CatalogSource(modules=["tests.guarded_flows"]), return_state=True
    )
    assert state.is_failed()
    assert "secret_not_granted" in await error_of(state)
    figures.add("guardrails.ungranted_secrets_blocked")


JSON_CANARY = "Js0n-canary-91c2"
ESCAPED_CANARY = 'p@ss\\w0rd"q-canary-5d'
DSN_CANARY = "dsn-canary-7a3e44"


@pytest.mark.usefixtures("prefect_server")
async def test_what_secrets_become_is_masked_everywhere(
    catalog: ActionCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GRANTS, '["json-creds", "escaped-pw", "db-pw"]')
    await Secret(value={"user": "app", "password": JSON_CANARY}).save("json-creds", overwrite=True)
    await Secret(value=ESCAPED_CANARY).save("escaped-pw", overwrite=True)
    await Secret(value=DSN_CANARY).save("db-pw", overwrite=True)
    store_path = tmp_path / "store.db"
    store = PlanStore(f"sqlite+aiosqlite:///{store_path}")
    service = PlannerService(
        catalog, planner="heuristic", executor=PlanExecutor(catalog, run_as="subflow"), store=store
    )
    events: list[ExecutionEvent] = []
    plans = [
        # A field of a JSON secret in an error; the whole JSON secret on success.
        [step("sign_in", credentials="${secret.json-creds}", fail="field")],
        [step("sign_in", credentials="${secret.json-creds}", fail="key")],
        # A secret with a backslash and a quote, in its escaped form (a KeyError's repr).
        [step("check_password", password="${secret.escaped-pw}")],
        # An output built from a secret, passed on to a step that runs in subflow mode.
        [
            step("build_dsn", "dsn", host="db", password="${secret.db-pw}"),
            step("open_connection", "open", dsn="${dsn}"),
        ],
    ]
    errors: list[str] = []
    try:
        for steps in plans:
            figures.add("guardrails.derived_secret_leaks_tried")
            result = await service.execute_plan(
                CandidatePlan.from_dict({"steps": steps}), on_event=events.append
            )
            errors += result.errors.values()
            errors.append(result.output_preview)
        derived = result
    finally:
        await store.close()
    assert derived.ok, derived.errors
    # The caller still gets the real value; everything shown has it masked.
    assert DSN_CANARY in derived.step_outputs["dsn"]["result"]
    assert derived.step_outputs["open"] == {
        "result": len(f"postgresql://app:{DSN_CANARY}@db/sales")
    }
    built = next(e for e in events if e.step_id == "dsn" and e.phase == "step_success")
    assert "****" in (built.output_preview or "")
    shown = [e.output_preview or "" for e in events] + [e.error or "" for e in events]
    places = {
        "errors": errors,
        "events": shown,
        "store": store_rows(store_path),
        **(await read_everything()),
    }
    canaries = (JSON_CANARY, ESCAPED_CANARY, json.dumps(ESCAPED_CANARY)[1:-1], DSN_CANARY)
    hits = {
        name: [text for text in texts if any(c in text for c in canaries)]
        for name, texts in places.items()
    }
    assert hits == {name: [] for name in places}
    assert any("****" in error for error in errors[:5])
    figures.add("guardrails.derived_secret_leaks_blocked", len(plans))
