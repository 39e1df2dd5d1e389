"""A small chat-completions client for any OpenAI-compatible server, on httpx.

Works unchanged with OpenAI (`https://api.openai.com/v1`), vLLM
(`http://HOST:8000/v1`), Ollama (`http://HOST:11434/v1`) and llama.cpp's
server (`http://HOST:8080/v1`): it POSTs `{base_url}/chat/completions`.

Examples:
    >>> llm = OpenAICompatibleLLM("http://127.0.0.1:8000/v1", "my-model", api_key="sk-secret")
    >>> "sk-secret" in repr(llm)
    False
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import httpx
from pydantic import SecretStr

from prefect_aether.exceptions import AetherUsageError, LLMError
from prefect_aether.settings import AetherSettings, current_settings

__all__ = ["OpenAICompatibleLLM", "Usage", "context_exceeded", "llm_from_settings"]

logger = logging.getLogger("prefect_aether.llm")

Usage = dict[str, int]
RETRY_STATUSES = frozenset({408, 409, 429})
# Who hears about each retry (a planner reporting its progress); None: nobody.
RETRIES: ContextVar[Callable[[str], None] | None] = ContextVar("aether_llm_retries", default=None)
_BODY_PREVIEW = 500


class OpenAICompatibleLLM:
    """Chat completions with retries, timeouts, a response-size cap and JSON-schema output.

    Args:
        base_url: The API root, e.g. `https://api.openai.com/v1`.
        model: The model name.
        api_key: Sent only as `Authorization: Bearer ...`; never logged or shown.
        timeout: Seconds for each whole request, from connect to the last byte of the
            answer (a server that sends its answer slowly is cut off too).
        connect_timeout: Seconds to connect.
        max_retries: Retries after the first attempt, on connect errors,
            timeouts, 408, 409, 429 and 5xx. Other 4xx are never retried.
        temperature: Sampling temperature (None: the server's default).
        max_response_bytes: Larger answers are rejected with `LLMError`; the
            `max_llm_response_bytes` setting by default.
        backoff_seconds: First backoff; doubles each retry, with jitter.
        max_backoff_seconds: Cap on one backoff, including `Retry-After`.

    Examples:
        >>> llm = OpenAICompatibleLLM("http://127.0.0.1:11434/v1", "llama3.1", timeout=30)
        >>> llm.base_url, llm.max_retries
        ('http://127.0.0.1:11434/v1', 3)
        >>> # content, usage = await llm.chat([{"role": "user", "content": "hi"}])
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | SecretStr | None = None,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        temperature: float | None = 0.0,
        max_response_bytes: int | None = None,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 20.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise AetherUsageError(
                f"base_url must start with http:// or https://, got {base_url!r}"
            )
        if max_response_bytes is None:
            max_response_bytes = current_settings().max_llm_response_bytes
        if max_retries < 0 or timeout <= 0 or max_response_bytes <= 0:
            raise AetherUsageError("max_retries must be >= 0; timeout and max_response_bytes > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = (
            api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        )
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.request_seconds = float(timeout)
        self.max_retries = max_retries
        self.temperature = temperature
        self.max_response_bytes = max_response_bytes
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "none"
        return (
            f"OpenAICompatibleLLM(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"
        )

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        json_schema: Mapping[str, Any] | None = None,
        schema_name: str | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[str, Usage]:
        """Send a chat and return `(content, usage)`.

        With `json_schema`, asks for strict JSON-schema output; if the server
        rejects `response_format`, asks once more without it (the caller parses
        the text either way).

        With `on_text`, asks for a streamed answer (`"stream": true`, server-sent
        events) and calls `on_text` with the content received so far each time more
        arrives; the whole answer is still returned, and the same timeout, size cap
        and retries hold (a retry only before the first text: once text has been
        heard, a failure is raised). A server that refuses to stream, or answers
        whole, is heard once with the whole content.

        Raises:
            LLMError: Transport failure, a non-retryable status, exhausted
                retries, an oversized or malformed answer.
        """
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        if on_text is not None:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema_name or "answer",
                    "schema": dict(json_schema),
                    "strict": True,
                },
            }
        heard = _Heard(on_text)
        while True:
            try:
                payload = await self._post_with_retries(body, heard)
                break
            except LLMError as exc:
                if heard.text:
                    raise
                refused = _refused_option(exc, body)
                if refused is None:
                    raise
                logger.info("server rejected %s; asking again without it", refused)
                body.pop(refused)
                if refused == "stream":
                    body.pop("stream_options", None)
        content = _content(payload)
        if on_text is not None and heard.text != content:
            on_text(content)  # an answer that came whole is heard whole
        return content, _usage(payload)

    async def _post_with_retries(self, body: dict[str, Any], heard: _Heard) -> dict[str, Any]:
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        attempt = 0
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                delay: float | None
                try:
                    # One bound for the whole request, from connect to the last byte: a
                    # server that trickles its answer cannot hold the caller longer.
                    status, text, retry_after = await asyncio.wait_for(
                        self._post_once(client, url, headers, body, heard), self.request_seconds
                    )
                except asyncio.TimeoutError:
                    failure = LLMError(
                        f"no complete answer from {self.base_url} within "
                        f"{self.request_seconds:g} s (timeout)"
                    )
                    delay = None
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    failure = LLMError(
                        f"{type(exc).__name__} talking to {self.base_url}: {self._redact(str(exc))}"
                    )
                    delay = None
                else:
                    if 200 <= status < 300:
                        return self._parse(status, text)
                    failure = LLMError(
                        f"LLM server answered HTTP {status}",
                        status_code=status,
                        body=self._redact(text)[: _BODY_PREVIEW * 4],
                    )
                    if status not in RETRY_STATUSES and status < 500:
                        raise failure
                    delay = retry_after
                if attempt >= self.max_retries or heard.text:
                    # Text already heard cannot be taken back: no retry after it.
                    raise LLMError(
                        f"{failure} (gave up after {attempt + 1} attempts)",
                        status_code=failure.status_code,
                        body=failure.body,
                    )
                wait = self._backoff(attempt, delay)
                listener = RETRIES.get()
                if listener is not None:
                    said = f"retry {attempt + 1} of {self.max_retries} in {wait:.1f} s: {failure}"
                    listener(said)
                await asyncio.sleep(wait)
                attempt += 1

    async def _post_once(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        body: dict[str, Any],
        heard: _Heard,
    ) -> tuple[int, str, float | None]:
        async with client.stream("POST", url, headers=headers, json=body) as response:
            kind = response.headers.get("content-type", "")
            if response.is_success and kind.startswith("text/event-stream"):
                text = await self._events(response, heard)
                return response.status_code, text, None
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                raise LLMError(
                    f"LLM response of {declared} bytes exceeds the "
                    f"{self.max_response_bytes}-byte cap",
                    status_code=response.status_code,
                )
            chunks = [chunk async for chunk in self._capped(response)]
            text = b"".join(chunks).decode("utf-8", errors="replace")
            return response.status_code, text, _retry_after(response.headers.get("retry-after"))

    async def _events(self, response: httpx.Response, heard: _Heard) -> str:
        """Read a streamed answer (server-sent events of chat-completion chunks) and
        return it as one chat-completion payload (JSON text)."""
        parts: list[str] = []
        usage: Any = None
        async for line in self._lines(response):
            if not line.startswith("data:"):
                continue  # comments, event names, blank separators
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except (json.JSONDecodeError, RecursionError):
                raise LLMError(
                    "LLM server streamed an event that is not JSON",
                    status_code=response.status_code,
                    body=self._redact(data)[:_BODY_PREVIEW],
                ) from None
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            delta = _delta(chunk)
            if delta:
                parts.append(delta)
                heard.hear("".join(parts))
        payload = {"choices": [{"message": {"content": "".join(parts)}}], "usage": usage}
        return json.dumps(payload)

    async def _capped(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The answer's bytes as they arrive, `LLMError` once they pass the size cap."""
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise LLMError(
                    f"LLM response exceeds the {self.max_response_bytes}-byte cap",
                    status_code=response.status_code,
                )
            yield chunk

    async def _lines(self, response: httpx.Response) -> AsyncIterator[str]:
        """The lines of a streamed answer, counted against the size cap as the bytes
        arrive (a line that never ends cannot grow past the cap either)."""
        pending = b""
        async for chunk in self._capped(response):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", errors="replace")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        base = min(self.backoff_seconds * (2.0**attempt), self.max_backoff_seconds)
        return float(base * (0.5 + random.random() / 2))

    def _parse(self, status: int, text: str) -> dict[str, Any]:
        try:
            payload = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise LLMError(
                "LLM server answered with something that is not JSON",
                status_code=status,
                body=self._redact(text)[:_BODY_PREVIEW],
            ) from None
        if not isinstance(payload, dict):
            raise LLMError(
                "LLM answer is not a JSON object",
                status_code=status,
                body=self._redact(text)[:_BODY_PREVIEW],
            )
        return payload

    def _redact(self, text: str) -> str:
        if self._api_key is None:
            return text
        secret = self._api_key.get_secret_value()
        return text.replace(secret, "***") if secret else text


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


class _Heard:
    """The streamed text a listener has heard so far (a retry after it is no retry)."""

    def __init__(self, listener: Callable[[str], None] | None) -> None:
        self.listener = listener
        self.text = ""

    def hear(self, text: str) -> None:
        if self.listener is not None:
            self.text = text
            self.listener(text)


def _refused_option(error: LLMError, body: Mapping[str, Any]) -> str | None:
    """The optional part of a request a server refused (`response_format` or `stream`),
    from a 400/422 answer that names it; None for any other failure."""
    if error.status_code not in (400, 422):
        return None
    said = (error.body or "").lower()
    if "response_format" in body and ("response_format" in said or "json_schema" in said):
        return "response_format"
    if "stream" in body and "stream" in said:
        return "stream"
    return None


_CONTEXT_FULL = re.compile(
    r"context[ _-]?(?:size|length|window)|maximum context|too many tokens", re.I
)


def context_exceeded(error: LLMError) -> bool:
    """Whether the server refused a request for not fitting the model's context (HTTP
    400: llama.cpp's "exceeds the available context size", OpenAI's
    "context_length_exceeded").

    Examples:
        >>> context_exceeded(LLMError("x", status_code=400, body="request (4127 tokens) "
        ...     "exceeds the available context size (4096 tokens)"))
        True
        >>> context_exceeded(LLMError("x", status_code=400, body="bad schema"))
        False
    """
    return error.status_code == 400 and bool(_CONTEXT_FULL.search(error.body or ""))


def _delta(chunk: Mapping[str, Any]) -> str:
    """The text a streamed chunk adds (`choices[0].delta.content`), or ""."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


def _content(payload: dict[str, Any]) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMError(
            "LLM answer has no choices[0].message.content", body=json.dumps(payload)[:_BODY_PREVIEW]
        ) from None
    if not isinstance(content, str):
        raise LLMError("LLM answer content is not text", body=json.dumps(payload)[:_BODY_PREVIEW])
    return content


def _usage(payload: dict[str, Any]) -> Usage:
    raw = payload.get("usage")
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): int(v) for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)
    }


def llm_from_settings(settings: AetherSettings | None = None) -> OpenAICompatibleLLM | None:
    """The LLM the settings describe (`PREFECT_INTEGRATIONS_AETHER_LLM_*`), or None.

    Examples:
        >>> llm_from_settings(AetherSettings(llm_base_url=None)) is None
        True
    """
    settings = settings or current_settings()
    if not settings.llm_configured():
        return None
    return OpenAICompatibleLLM(
        settings.llm_base_url or "",
        settings.llm_model or "",
        api_key=settings.llm_api_key,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
    )
