from __future__ import annotations

import itertools
import json
import logging
import time

import pytest

from prefect_aether import LLMError
from prefect_aether.exceptions import AetherUsageError
from prefect_aether.planning.llm import OpenAICompatibleLLM
from tests.llm_server import Reply, ScriptedLLMServer

CANARY = "sk-canary-7f3a9c2e1b"
MESSAGES = [{"role": "user", "content": "hello"}]


def client(server: ScriptedLLMServer, **kwargs: object) -> OpenAICompatibleLLM:
    options: dict[str, object] = {"api_key": CANARY, "backoff_seconds": 0.01, "max_retries": 2}
    options.update(kwargs)
    return OpenAICompatibleLLM(server.base_url, "test-model", **options)  # type: ignore[arg-type]


async def test_happy_path_sends_schema_and_key_only_in_header(
    llm_server: ScriptedLLMServer,
) -> None:
    llm_server.script(Reply.chat('{"ok": true}', prompt_tokens=12, completion_tokens=3))
    content, usage = await client(llm_server).chat(
        MESSAGES, json_schema={"type": "object"}, schema_name="plan"
    )
    assert content == '{"ok": true}'
    assert usage == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    (request,) = llm_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {CANARY}"
    assert request.body["model"] == "test-model"
    assert request.body["response_format"]["json_schema"] == {
        "name": "plan",
        "schema": {"type": "object"},
        "strict": True,
    }
    assert CANARY not in json.dumps(request.body)


async def test_schema_rejection_retries_once_without_it(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(
        Reply.error(400, "Unknown parameter: 'response_format'"), Reply.chat("plain text answer")
    )
    content, _ = await client(llm_server).chat(MESSAGES, json_schema={"type": "object"})
    assert content == "plain text answer"
    assert [("response_format" in r.body) for r in llm_server.requests] == [True, False]


async def test_429_with_retry_after_then_success(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply.error(429, "slow down", **{"Retry-After": "0.3"}), Reply.chat("done"))
    started = time.monotonic()
    content, _ = await client(llm_server, backoff_seconds=5.0).chat(MESSAGES)
    elapsed = time.monotonic() - started
    assert content == "done"
    assert 0.3 <= elapsed < 3.0  # honoured Retry-After, not the 5 s backoff
    assert len(llm_server.requests) == 2


async def test_500_storm_gives_a_clear_error_within_budget(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(*[Reply.error(500, f"boom {i} {CANARY}") for i in range(10)])
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        await client(llm_server, max_retries=3).chat(MESSAGES)
    assert time.monotonic() - started < 5
    assert len(llm_server.requests) == 4
    assert info.value.status_code == 500
    assert "gave up after 4 attempts" in str(info.value)
    assert CANARY not in str(info.value)
    assert CANARY not in (info.value.body or "")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_other_4xx_are_not_retried(llm_server: ScriptedLLMServer, status: int) -> None:
    llm_server.script(Reply.error(status, "nope"), Reply.chat("never"))
    with pytest.raises(LLMError) as info:
        await client(llm_server).chat(MESSAGES)
    assert info.value.status_code == status
    assert len(llm_server.requests) == 1


async def test_timeout_is_retried_then_reported(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply(delay=1.0, body=b"{}"), Reply(delay=1.0, body=b"{}"))
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"no complete answer .* within 0.2 s .*after 2 attempts"):
        await client(llm_server, timeout=0.2, max_retries=1).chat(MESSAGES)
    assert time.monotonic() - started < 3


async def test_connection_refused_is_an_llm_error() -> None:
    llm = OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_seconds=0.01)
    with pytest.raises(LLMError, match="ConnectError"):
        await llm.chat(MESSAGES)


async def test_oversized_response_is_rejected(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply.chat("x" * 10_000_000))
    with pytest.raises(LLMError, match="exceeds the 2000000-byte cap"):
        await client(llm_server).chat(MESSAGES)
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"choices": []}', "no choices"),
        (b'{"choices": [{"message": {"content": 5}}]}', "not text"),
    ],
)
async def test_malformed_answers(llm_server: ScriptedLLMServer, body: bytes, message: str) -> None:
    llm_server.script(Reply(body=body))
    with pytest.raises(LLMError, match=message):
        await client(llm_server).chat(MESSAGES)


async def test_key_never_in_repr_logs_or_errors(
    llm_server: ScriptedLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm = client(llm_server)
    llm_server.script(Reply.error(401, f"bad key {CANARY}"))
    with pytest.raises(LLMError) as info:
        await llm.chat(MESSAGES)
    texts = [repr(llm), str(info.value), info.value.body or "", caplog.text]
    assert all(CANARY not in text for text in texts)
    assert "***" in (info.value.body or "")


def test_bad_configuration_is_a_usage_error() -> None:
    with pytest.raises(AetherUsageError, match="base_url"):
        OpenAICompatibleLLM("localhost:8000", "m")
    with pytest.raises(AetherUsageError, match="max_retries"):
        OpenAICompatibleLLM("http://x/v1", "m", max_retries=-1)


async def test_a_streamed_answer_is_heard_as_it_arrives(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply.streamed('{"steps": [], "unserved": ["x"]}', chunk=5, pause=0.01))
    heard: list[str] = []
    content, usage = await client(llm_server).chat(
        MESSAGES, json_schema={"type": "object"}, on_text=heard.append
    )
    assert content == '{"steps": [], "unserved": ["x"]}'
    assert heard[0] == '{"ste'
    assert heard[-1] == content
    assert all(b.startswith(a) for a, b in itertools.pairwise(heard))
    assert usage == {"prompt_tokens": 10, "completion_tokens": 5}
    (request,) = llm_server.requests
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


async def test_a_server_that_answers_whole_or_refuses_to_stream_is_heard_once(
    llm_server: ScriptedLLMServer,
) -> None:
    llm_server.script(Reply.chat("whole"))
    heard: list[str] = []
    content, _ = await client(llm_server).chat(MESSAGES, on_text=heard.append)
    assert (content, heard) == ("whole", ["whole"])

    llm_server.script(Reply.error(400, "'stream' is not supported"), Reply.chat("again"))
    heard.clear()
    content, _ = await client(llm_server).chat(MESSAGES, on_text=heard.append)
    assert (content, heard) == ("again", ["again"])
    assert [r.body.get("stream") for r in llm_server.requests] == [True, None]


async def test_a_stream_that_breaks_after_text_is_not_retried(
    llm_server: ScriptedLLMServer,
) -> None:
    broken = Reply.streamed('{"steps": [', chunk=4, pause=0.01)
    broken.events[-1] = b"data: {not json\n\n"
    llm_server.script(broken, Reply.chat("never asked"))
    heard: list[str] = []
    with pytest.raises(LLMError, match="streamed an event that is not JSON"):
        await client(llm_server, max_retries=2).chat(MESSAGES, on_text=heard.append)
    assert heard
    assert len(llm_server.requests) == 1


async def test_a_streamed_answer_is_held_to_the_size_cap(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply.streamed("x" * 4_000, chunk=100, pause=0.0))
    with pytest.raises(LLMError, match="exceeds the 2000-byte cap"):
        await client(llm_server, max_response_bytes=2_000, max_retries=0).chat(
            MESSAGES, on_text=lambda _: None
        )
    # One line that never ends is held to it too, as its bytes arrive.
    endless = Reply(events=[b"data: " + b"x" * 1_000 for _ in range(8)], pause=0.01)
    llm_server.script(endless)
    with pytest.raises(LLMError, match="exceeds the 2000-byte cap"):
        await client(llm_server, max_response_bytes=2_000, max_retries=0).chat(
            MESSAGES, on_text=lambda _: None
        )
