"""Every limit setting is enforced with an error that names the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefect_aether import ActionCatalog, LLMError, PlanDecodingError
from prefect_aether.cli.app import app
from prefect_aether.exceptions import AetherUsageError
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import ActionPlanner, PlanningContext, decode_plan
from prefect_aether.settings import AetherSettings
from tests.llm_server import Reply, ScriptedLLMServer

ROOT = Path(__file__).resolve().parent.parent
PLAN = json.dumps({"steps": [{"id": "load", "action": "load_sales", "inputs": {"path": "x"}}]})


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    from prefect.utilities.importtools import load_script_as_module

    catalog = ActionCatalog()
    catalog.register_module(load_script_as_module(str(ROOT / "flows" / "pipeline.py")))
    return catalog


def test_defaults_are_safe() -> None:
    settings = AetherSettings()
    assert settings.max_steps == 1_000
    assert settings.max_plan_bytes == 1_000_000
    assert settings.max_llm_response_bytes == 2_000_000
    assert settings.max_planning_iterations == 10
    assert settings.max_planning_tokens == 200_000
    assert settings.max_concurrent_steps == 64


def test_plan_text_over_max_plan_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    padded = PLAN + " " * 200
    assert decode_plan(padded).steps[0].id == "load"
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_PLAN_BYTES", "100")
    with pytest.raises(PlanDecodingError, match=r"is \d+ bytes; at most 100 .*max_plan_bytes") as e:
        decode_plan(padded)
    assert e.value.raw == padded[:100]
    assert decode_plan(padded, max_bytes=10_000).steps[0].id == "load"


def test_plan_file_over_max_plan_bytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "plan.json"
    path.write_text(PLAN + " " * 500)
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_PLAN_BYTES", "200")
    args = ["validate", str(path), "--module", str(ROOT / "flows" / "pipeline.py")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "is over 200 bytes, the most that is read (max_plan_bytes)" in result.output


async def test_llm_response_over_max_llm_response_bytes_is_an_llm_error(
    llm_server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_LLM_RESPONSE_BYTES", "2000")
    llm = OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0)
    assert llm.max_response_bytes == 2000
    llm_server.script(Reply.chat("x" * 5000))
    with pytest.raises(LLMError, match="2000"):
        await llm.chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("max_iter", [0, 11])
def test_max_iter_outside_max_planning_iterations_is_refused(
    catalog: ActionCatalog, max_iter: int
) -> None:
    llm = OpenAICompatibleLLM("http://127.0.0.1:9", "m")
    with pytest.raises(AetherUsageError, match=r"between 1 and 10 \(max_planning_iterations\)"):
        ActionPlanner(catalog, llm, max_iter=max_iter)


async def test_planning_stops_at_the_token_budget(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_PLANNING_TOKENS", "150")
    llm = OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0)
    # The first answer is unreadable, so a repair round would follow; it must not.
    llm_server.script(
        Reply.chat("not a plan", prompt_tokens=100, completion_tokens=60),
        Reply.chat(PLAN),
    )
    result = await ActionPlanner(catalog, llm, max_iter=3).plan(PlanningContext(goal="load"))
    assert result.plan is None
    assert len(llm_server.requests) == 1
    assert result.usage["total_tokens"] == 160
    failure = result.events[-1]
    assert failure.phase == "failure"
    assert "the server reported 160" in failure.message
    assert "at most 150 per plan (max_planning_tokens)" in failure.message


async def test_the_token_budget_holds_when_the_server_reports_no_usage(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage numbers come from the server: one that reports none (or too few) cannot lift
    the budget, since the planner counts the prompt and answer bytes itself."""
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_PLANNING_TOKENS", "200")
    llm = OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0)
    llm_server.script(*[Reply.chat("not a plan " * 100, prompt_tokens=0, completion_tokens=0)] * 3)
    result = await ActionPlanner(catalog, llm, max_iter=3).plan(PlanningContext(goal="load"))
    assert result.plan is None
    assert len(llm_server.requests) == 1
    failure = result.events[-1]
    assert failure.phase == "failure"
    assert "the server reported 0" in failure.message, failure.message


@pytest.mark.parametrize("value", [0, 65])
def test_max_concurrency_outside_max_concurrent_steps_is_refused(
    catalog: ActionCatalog, value: int
) -> None:
    with pytest.raises(AetherUsageError, match=r"between 1 and 64 \(max_concurrent_steps\)"):
        PlanExecutor(catalog, max_concurrency=value)
    assert PlanExecutor(catalog).max_concurrency == 64


def test_max_concurrent_steps_setting_caps_the_default(
    catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_CONCURRENT_STEPS", "3")
    assert PlanExecutor(catalog).max_concurrency == 3
    with pytest.raises(AetherUsageError, match="between 1 and 3"):
        PlanExecutor(catalog, max_concurrency=4)


def test_settings_are_read_again_when_their_sources_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`current_settings()` keeps one `AetherSettings` per state of the environment and
    the settings files (reading them costs ~10 ms, several times a plan); a change of
    either is seen at once."""
    from prefect_aether.settings import current_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_INTEGRATIONS_AETHER_MAX_STEPS", raising=False)
    assert current_settings().max_steps == AetherSettings().max_steps == 1_000
    assert current_settings() is current_settings()
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_STEPS", "7")
    assert current_settings().max_steps == 7
    monkeypatch.delenv("PREFECT_INTEGRATIONS_AETHER_MAX_STEPS")
    (tmp_path / "prefect.toml").write_text("[integrations.aether]\nmax_steps = 5\n")
    assert current_settings().max_steps == 5
    (tmp_path / "prefect.toml").write_text("[integrations.aether]\nmax_steps = 60\n")
    assert current_settings().max_steps == 60
