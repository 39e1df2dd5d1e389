"""A real HTTP server on loopback that speaks the chat-completions protocol.

It answers from a scripted queue and records every request it receives, so
tests exercise the real client (httpx, sockets, timeouts) end to end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Seconds between the body's bytes: a server that sends its answer slowly.
    trickle: float = 0.0
    # A streamed answer: server-sent events sent one by one, `pause` seconds apart.
    events: list[bytes] = field(default_factory=list)
    pause: float = 0.0

    @classmethod
    def chat(cls, content: str, *, prompt_tokens: int = 10, completion_tokens: int = 5) -> Reply:
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return cls(body=json.dumps(payload).encode())

    @classmethod
    def streamed(
        cls, content: str, *, chunk: int = 8, pause: float = 0.05, usage: bool = True
    ) -> Reply:
        """`content` streamed as chat-completion chunks of `chunk` characters, `pause`
        seconds apart, then the usage and `[DONE]` (as OpenAI and llama.cpp send them)."""
        events = []
        for i in range(0, len(content), chunk):
            delta = {"choices": [{"index": 0, "delta": {"content": content[i : i + chunk]}}]}
            events.append(f"data: {json.dumps(delta)}\n\n".encode())
        if usage:
            tail = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
            events.append(f"data: {json.dumps(tail)}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        return cls(events=events, pause=pause)

    @classmethod
    def error(cls, status: int, message: str = "error", **headers: str) -> Reply:
        return cls(
            status=status,
            body=json.dumps({"error": {"message": message}}).encode(),
            headers=headers,
        )


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedLLMServer:
    """Start with `start()`, queue replies with `script(...)`, read `requests`."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Received] = []
        # When each streamed answer's last event was sent (time.monotonic()).
        self.streamed_at: list[float] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with server._lock:
                    server.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw),
                        )
                    )
                    reply = (
                        server.replies.popleft()
                        if server.replies
                        else Reply.error(500, "no scripted reply")
                    )
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.events:
                    self._stream(reply)
                    return
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    for key, value in reply.headers.items():
                        self.send_header(key.replace("_", "-"), value)
                    self.end_headers()
                    if reply.trickle:
                        for byte in reply.body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, reply: Reply) -> None:
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    for i, event in enumerate(reply.events):
                        if i:
                            time.sleep(reply.pause)
                        self.wfile.write(event)
                        self.wfile.flush()
                    server.streamed_at.append(time.monotonic())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.clear()
            self.replies.extend(replies)
            self.requests.clear()
            self.streamed_at.clear()
