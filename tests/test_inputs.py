from __future__ import annotations

import json

import pytest

from prefect_aether.planning.inputs import parse_inputs
from prefect_aether.planning.llm import OpenAICompatibleLLM
from tests.llm_server import Reply, ScriptedLLMServer

SCHEMAS = {
    "limit": {"type": "integer"},
    "ratio": {"type": "number"},
    "verbose": {"type": "boolean"},
    "columns": {"type": "array", "items": {"type": "string"}},
    "mode": {"enum": ["fast", "safe"], "type": "string"},
}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("limit = 5", {"limit": 5}),
        ("limit: 5, ratio: 0.25", {"limit": 5, "ratio": 0.25}),
        ("the limit is 12 and verbose is yes", {"limit": 12, "verbose": True}),
        ('{"limit": 3, "mode": "fast"}', {"limit": 3, "mode": "fast"}),
        ('Use these: {"columns": ["a", "b"]} and ratio=1', {"columns": ["a", "b"], "ratio": 1}),
        ("csv path is /data/sales.csv", {"csv_path": "/data/sales.csv"}),
        ("CSV_PATH: 'my file.csv'; mode = safe", {"csv_path": "my file.csv", "mode": "safe"}),
    ],
)
async def test_deterministic_parser(message: str, expected: dict[str, object]) -> None:
    keys = ["limit", "ratio", "verbose", "columns", "mode", "csv_path"]
    parsed = await parse_inputs(message, keys, schemas=SCHEMAS)
    assert parsed.values == expected
    assert parsed.resolved_keys == [k for k in keys if k in expected]
    assert parsed.missing_keys == [k for k in keys if k not in expected]
    assert parsed.errors == {}


async def test_values_that_fail_the_schema_are_reported_not_kept() -> None:
    parsed = await parse_inputs("limit = lots, mode: turbo", ["limit", "mode"], schemas=SCHEMAS)
    assert parsed.values == {}
    assert parsed.missing_keys == ["limit", "mode"]
    assert "is not of type 'integer'" in parsed.errors["limit"]
    assert "is not one of ['fast', 'safe']" in parsed.errors["mode"]


async def test_without_schema_text_stays_text() -> None:
    parsed = await parse_inputs("zip is 01234, tags: [1, 2]", ["zip", "tags"])
    assert parsed.values == {"zip": "01234", "tags": [1, 2]}


async def test_llm_extraction_uses_a_json_schema(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply.chat(json.dumps({"limit": "7", "mode": "fast", "other": 1})))
    llm = OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0)
    parsed = await parse_inputs(
        "seven rows please, quickly",
        ["limit", "mode", "ratio"],
        schemas=SCHEMAS,
        llm=llm,
        instruction="Rows are counted from one.",
    )
    assert parsed.values == {"limit": 7, "mode": "fast"}
    assert parsed.missing_keys == ["ratio"]
    (request,) = llm_server.requests
    schema = request.body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["limit"] == {"type": "integer"}
    assert request.body["messages"][0]["content"].startswith("Rows are counted from one.")


async def test_llm_failure_falls_back_to_the_parser(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply.error(500, "down"))
    llm = OpenAICompatibleLLM(llm_server.base_url, "m", max_retries=0)
    parsed = await parse_inputs("limit = 4", ["limit"], schemas=SCHEMAS, llm=llm)
    assert parsed.values == {"limit": 4}
