"""The LLM configuration Block: Prefect's standard block tests, storage, secrecy, registration."""

from __future__ import annotations

import subprocess

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_aether.blocks import LLMConfig
from prefect_aether.service import PlannerService
from tests.conftest import use_server
from tests.llm_server import Reply, ScriptedLLMServer
from tests.processes import BIN, ROOT, PrefectServer

CANARY = "sk-canary-block-7f3e"


class TestLLMConfigStandard(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return LLMConfig


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="base_url"):
        LLMConfig(base_url="ftp://x", model="m")


@pytest.mark.usefixtures("prefect_server")
async def test_saved_block_keeps_the_key_secret_and_plans_with_it(
    llm_server: ScriptedLLMServer,
) -> None:
    from prefect_aether import ActionCatalog

    await LLMConfig(base_url=llm_server.base_url, model="m", api_key=CANARY, max_retries=0).save(
        "planner-llm", overwrite=True
    )
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            "planner-llm", "aether-llm", include_secrets=False
        )
    assert CANARY not in str(document.data)
    assert document.data["api_key"] == "********"

    loaded = await LLMConfig.aload("planner-llm")
    llm = loaded.get_llm()
    assert llm.base_url == llm_server.base_url
    assert CANARY not in repr(loaded)

    catalog = ActionCatalog()
    catalog.register_module("tests.hitl_flows")
    plan = '{"steps": [{"id": "hi", "action": "greet", "inputs": {"name": "ada"}}]}'
    llm_server.script(Reply.chat(plan))
    result = await PlannerService(catalog, llm=llm, planner="llm").plan("greet ada")
    assert result.plan is not None
    assert result.planner == "llm"
    request = llm_server.requests[-1]
    assert request.headers["authorization"] == f"Bearer {CANARY}"
    assert CANARY not in str(request.body)
    assert all(CANARY not in e.model_dump_json() for e in result.events)


async def test_prefect_block_register_finds_the_block(real_server: PrefectServer) -> None:
    done = subprocess.run(
        [str(BIN / "prefect"), "block", "register", "-m", "prefect_aether.blocks"],
        env=real_server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with use_server(real_server):
        async with get_client() as client:
            block_type = await client.read_block_type_by_slug("aether-llm")
    assert block_type.name == "Aether LLM"
    assert block_type.code_example is not None
    assert "LLMConfig.load" in block_type.code_example


class TestStoreConnectionStandard(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        from prefect_aether.blocks import StoreConnection

        return StoreConnection


@pytest.mark.usefixtures("prefect_server")
def test_blocks_apply_creates_updates_and_never_prints_a_secret(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from pathlib import Path

    from typer.testing import CliRunner

    from prefect_aether.blocks import StoreConnection
    from prefect_aether.cli.app import app
    from prefect_aether.store import PlanStore

    runner = CliRunner()
    folder = str(ROOT / "blocks")
    store_file = Path(str(tmp_path)) / f"from-block-{CANARY}.db"
    password_url = f"sqlite+aiosqlite:///{store_file}"
    env = {
        "AETHER_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "AETHER_LLM_MODEL": "m1",
        "AETHER_LLM_API_KEY": CANARY,
        "AETHER_STORE_URL": password_url,
    }
    missing = runner.invoke(app, ["blocks", "apply", folder], env={**env, "AETHER_STORE_URL": ""})
    assert missing.exit_code == 2
    assert "aether-store.yaml: url: Field required" in missing.output
    first = runner.invoke(app, ["blocks", "apply", folder], env=env)
    assert first.exit_code == 0, first.output
    # Nothing was saved by the refused run: both are new now.
    assert first.output.splitlines() == [
        "aether-llm/planner: created",
        "aether-store/plans: created",
    ]
    again = runner.invoke(app, ["blocks", "apply", folder], env=env)
    assert again.output.splitlines() == [
        "aether-llm/planner: unchanged",
        "aether-store/plans: unchanged",
    ]
    changed = runner.invoke(app, ["blocks", "apply", folder], env={**env, "AETHER_LLM_MODEL": "m2"})
    assert "aether-llm/planner: updated" in changed.output
    for result in (missing, first, again, changed):
        assert CANARY not in result.output
    del env["AETHER_STORE_URL"]
    monkeypatch.delenv("AETHER_STORE_URL", raising=False)
    unset = runner.invoke(app, ["blocks", "apply", folder], env=env)
    assert unset.exit_code == 2
    assert "aether-store.yaml: url needs the environment variable AETHER_STORE_URL" in unset.output
    assert LLMConfig.load("planner").model == "m2"
    assert LLMConfig.load("planner").api_key.get_secret_value() == CANARY  # type: ignore[union-attr]

    # A store pointed at the block writes to the block's database.
    monkeypatch.delenv("PREFECT_INTEGRATIONS_AETHER_STORE_URL", raising=False)
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_STORE_BLOCK", "plans")
    assert StoreConnection.load("plans").url.get_secret_value() == password_url

    async def use() -> None:
        store = PlanStore()
        assert repr(store) == "PlanStore(\"block 'plans'\")"  # the URL is read on first use
        await store.start_execution("p" * 16)
        await store.close()

    asyncio.run(use())
    assert store_file.exists()
