"""Untrusted LLM answers, injected LLM faults, and sanitized previews.

Every answer in tests/data/adversarial.json must be rejected, with a clear
validation issue or a `PlanDecodingError`, and no flow run may be created for
any of them (counted through the API). The figures go to tests/figures.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
)
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from prefect_aether import (
    ActionCatalog,
    CandidatePlan,
    LLMError,
    PlanDecodingError,
    PlannerService,
    PlanValidationError,
    validate_plan,
)
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import ActionPlanner, decode_plan
from tests import figures
from tests.artifacts import results
from tests.llm_server import Reply, ScriptedLLMServer

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = json.loads((ROOT / "tests" / "data" / "adversarial.json").read_text())["answers"]


def build(entry: dict[str, Any]) -> str:
    if "answer" in entry:
        return str(entry["answer"])
    make = entry["make"]
    if "segments" in make:
        return "".join(text * count for text, count in make["segments"])
    step = {"action": "load_sales", "inputs": {}}
    return json.dumps({"steps": [{**step, "id": f"s{i}"} for i in range(make["steps"])]})


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(str(ROOT / "flows" / "pipeline.py"))
    return catalog


async def flow_run_count() -> int:
    async with get_client() as client:
        return await client.count_flow_runs()


async def check_rejected(
    entry: dict[str, Any], answer: str, catalog: ActionCatalog, llm_server: ScriptedLLMServer
) -> None:
    # 1. The answer as the decoder and the validator see it.
    decode_error: PlanDecodingError | None = None
    plan: CandidatePlan | None = None
    try:
        plan = decode_plan(answer)
    except PlanDecodingError as exc:
        decode_error = exc
    if entry["expect"] == "decode":
        assert decode_error is not None, "decoded without error"
        assert entry["says"] in str(decode_error)
        assert len(decode_error.raw) <= 1_000_000
    else:
        assert plan is not None, f"decoded as an error: {decode_error}"
        result = validate_plan(plan, catalog)
        assert not result.ok
        assert entry["expect"] in {issue.kind for issue in result.issues}, result.summary()
        with pytest.raises(PlanValidationError, match="cannot run"):
            await PlanExecutor(catalog).execute(plan)

    # 2. The same answer from an LLM over HTTP, through the service, every round (no
    # heuristic draft to stand in its place: tests/test_planner.py covers that).
    llm = OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0)
    service = PlannerService(catalog, planner=ActionPlanner(catalog, llm, use_draft=False))
    llm_server.script(*[Reply.chat(answer) for _ in range(3)])
    if len(answer) > 2_000_000:
        # Refused before decoding: the LLM response size cap.
        with pytest.raises(LLMError, match="bytes"):
            await service.plan_and_execute("load the sales data")
        return
    planned, executed = await service.plan_and_execute("load the sales data")
    assert executed is None
    assert planned.plan is None
    assert planned.events[-1].phase == "failure"


@pytest.mark.parametrize("entry", CORPUS, ids=[e["name"] for e in CORPUS])
async def test_adversarial_answers_are_rejected_and_nothing_runs(
    entry: dict[str, Any], catalog: ActionCatalog, llm_server: ScriptedLLMServer
) -> None:
    figures.add("bad_inputs.tried")
    answer = build(entry)
    runs_before = await flow_run_count()
    try:
        await check_rejected(entry, answer, catalog, llm_server)
    except Exception:
        figures.add("bad_inputs.crashes")
        raise
    assert await flow_run_count() == runs_before
    figures.add("bad_inputs.rejected")


FAULTS: list[tuple[str, list[Reply], bool]] = [
    ("500 then success", [Reply.error(500), "OK"], True),  # type: ignore[list-item]
    ("429 with Retry-After then success", [Reply.error(429, **{"Retry-After": "0"}), "OK"], True),  # type: ignore[list-item]
    ("503 storm", [Reply.error(503) for _ in range(4)], False),
    ("timeout then success", [Reply(delay=3.0, body=b"{}"), "OK"], True),  # type: ignore[list-item]
    ("timeouts only", [Reply(delay=3.0, body=b"{}") for _ in range(4)], False),
    ("garbage body", [Reply(body=b"\x00\xff not json")], False),
    ("401 echoing the key", [Reply.error(401, "bad key sk-canary-faults-9c1d")], False),
    ("empty choices", [Reply(body=b'{"choices": []}')], False),
]


@pytest.mark.parametrize(("name", "replies", "recovers"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_llm_faults_recover_or_fail_cleanly_within_budget(
    name: str,
    replies: list[Any],
    recovers: bool,
    catalog: ActionCatalog,
    llm_server: ScriptedLLMServer,
) -> None:
    figures.add("llm_faults.injected")
    plan = json.dumps({"steps": [{"id": "load", "action": "load_sales", "inputs": {}}]})
    llm_server.script(*[Reply.chat(plan) if r == "OK" else r for r in replies])
    llm = OpenAICompatibleLLM(
        llm_server.base_url,
        "m",
        api_key="sk-canary-faults-9c1d",
        timeout=1.0,
        max_retries=3,
        backoff_seconds=0.05,
        max_backoff_seconds=0.2,
    )
    service = PlannerService(catalog, planner="llm", llm=llm)
    started = time.monotonic()
    error: LLMError | None = None
    result = None
    try:
        result = await service.plan("load the sales data")
    except LLMError as exc:
        error = exc
    if error is not None:
        assert not recovers, f"{name}: {error}"
        assert "sk-canary-faults-9c1d" not in str(error)
        assert "sk-canary-faults-9c1d" not in (error.body or "")
        outcome = "failed_cleanly_within_budget"
    else:
        assert result is not None
        assert (result.plan is not None) == recovers, name
        outcome = "recovered" if recovers else "failed_cleanly_within_budget"
    elapsed = time.monotonic() - started
    # Budget: 4 attempts of at most 1 s each, plus short backoffs.
    assert elapsed < 8, f"{name} took {elapsed:.1f} s"
    assert len(llm_server.requests) <= 4
    figures.add(f"llm_faults.{outcome}")


async def test_previews_in_artifacts_and_events_are_truncated_and_stripped(
    tmp_path: Path,
) -> None:
    from prefect import flow

    @flow(name="noisy", version="1")
    async def noisy(n: int) -> str:
        """Return terminal junk."""
        return "\x1b[31mRED\x1b[0m\x07\x1b]0;title\x07" + "\u200bz" * 5000 + f"{n}"

    catalog = ActionCatalog()
    catalog.register(noisy)
    plan = CandidatePlan.from_dict(
        {"steps": [{"id": "junk", "action": "noisy", "inputs": {"n": 7}}]}
    )
    result = await PlanExecutor(catalog).execute(plan)
    assert result.ok
    resource = f"prefect-aether.plan.{plan.plan_id}"
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"aether-results-{plan.plan_id}"])
            )
        )
        # Events reach the API asynchronously: wait for the step's event.
        events: list[Any] = []
        for _ in range(60):
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["prefect-aether.step.succeeded"]),
                    resource=EventResourceFilter(id=[resource]),
                ),
                limit=50,
            )
            events = page.events
            if events:
                break
            await asyncio.sleep(0.5)
    previews = [row["output"] for a in artifacts for row in results(str(a.data)).values()]
    previews += [str(e.payload.get("output_preview", "")) for e in events]
    assert len(previews) >= 2
    for text in previews:
        figures.add("previews.checked")
        clean = "\x1b" not in text and "\x07" not in text and "\u200b" not in text
        if not clean or len(text) > 200:
            figures.add("previews.unsanitized")
        assert clean, repr(text[:80])
        assert len(text) <= 200
        assert "RED" in text
