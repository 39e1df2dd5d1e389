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
    result = await PlannerService(catalog, llm=llm).plan("greet ada")
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
