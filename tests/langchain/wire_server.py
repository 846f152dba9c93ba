"""A stdlib HTTP server speaking just enough of the OpenAI and Anthropic wire formats for the tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[str, dict[str, Any]], "tuple[int, Any] | None"]
"""A test's own answers: (path, request body) -> (status, payload) as the handlers below return
them, or None for the default answer."""

OPENAI_USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 8,
    "total_tokens": 58,
    "prompt_tokens_details": {"cached_tokens": 32},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


def _openai(body: dict[str, Any]) -> tuple[int, Any]:
    last = str(body["messages"][-1].get("content"))
    if "rate" in last:
        return 429, {"error": {"message": "slow down", "type": "rate_limit_exceeded"}}
    message: dict[str, Any] = {"role": "assistant", "content": "hello from openai"}
    if body.get("response_format"):  # structured output: JSON of the test's Person schema
        message["content"] = '{"name": "Ada", "age": 36}'
    finish = "stop"
    if "tool" in last:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                }
            ],
        }
        finish = "tool_calls"
    if body.get("stream"):
        return 200, [
            {
                "id": "chatcmpl-s1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": word}, "finish_reason": None}
                ],
            }
            for word in ("hello ", "from ", "openai")
        ] + [
            {
                "id": "chatcmpl-s1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
            {
                "id": "chatcmpl-s1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o-2024-08-06",
                "choices": [],
                "usage": OPENAI_USAGE,
            },
        ]
    # n > 1: that many choices, one usage for the whole request (as the API reports it)
    choices = [{"index": 0, "message": message, "finish_reason": finish}]
    for i in range(1, int(body.get("n") or 1)):
        other = {**message, "content": f"choice {i}"}
        choices.append({"index": i, "message": other, "finish_reason": finish})
    return 200, {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": choices,
        "usage": OPENAI_USAGE,
    }


EMBEDDING_DIMENSIONS = 3
EMBEDDINGS_MODEL = "text-embedding-3-small"


def _openai_embeddings(body: dict[str, Any]) -> tuple[int, Any]:
    """``/v1/embeddings``: a vector ``[i, i + 0.5, -1.0]`` per input, and usage as the API reports it."""
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if any("fail" in str(t) for t in texts):
        return 500, {"error": {"message": "embedding backend down", "type": "server_error"}}
    return 200, {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [float(i), i + 0.5, -1.0]}
            for i in range(len(texts))
        ],
        "model": EMBEDDINGS_MODEL,
        "usage": {"prompt_tokens": 4 * len(texts), "total_tokens": 4 * len(texts)},
    }


ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 6,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 20,
}


def _anthropic_stream() -> list[tuple[str, Any]]:
    """Server-sent events of a streamed Anthropic message (usage at start and, complete, at the end)."""
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
    message = {
        "id": "msg_s1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [],
        "stop_reason": None,
        "usage": start_usage,
    }
    deltas = [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
        )
        for word in ("hello ", "from ", "anthropic")
    ]
    return [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        *deltas,
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": ANTHROPIC_USAGE,
            },
        ),  # cumulative, as today's API sends
        ("message_stop", {"type": "message_stop"}),
    ]


def _anthropic(body: dict[str, Any]) -> tuple[int, Any]:
    last = str(body["messages"][-1].get("content"))
    if "fail" in last:
        return 500, {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    if "rate" in last:
        return 429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    if body.get("stream"):
        return 200, _anthropic_stream()
    return 200, {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [{"type": "text", "text": "hello from anthropic"}],
        "stop_reason": "end_turn",
        "usage": ANTHROPIC_USAGE,
    }


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        script: Script | None = getattr(self.server, "script", None)
        scripted = script(self.path, body) if script is not None else None
        self.server.requests.append((self.path, body))  # type: ignore[attr-defined]
        if scripted is not None:
            status, payload = scripted
        elif self.path.endswith("/chat/completions"):
            status, payload = _openai(body)
        elif self.path.endswith("/embeddings"):
            status, payload = _openai_embeddings(body)
        else:
            status, payload = _anthropic(body)
        if isinstance(payload, list) and payload and isinstance(payload[0], tuple):  # named SSE events
            data = "".join(f"event: {name}\ndata: {json.dumps(p)}\n\n" for name, p in payload)
            raw, kind = data.encode(), "text/event-stream"
        elif isinstance(payload, list):
            data = "".join(f"data: {json.dumps(p)}\n\n" for p in payload) + "data: [DONE]\n\n"
            raw, kind = data.encode(), "text/event-stream"
        else:
            raw, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class WireServer:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.script = None  # type: ignore[attr-defined]
        self.requests: list[tuple[str, dict[str, Any]]] = []
        """(path, body) of every request received, in order."""
        self.server.requests = self.requests  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @contextmanager
    def scripted(self, script: Script) -> Iterator[None]:
        """Answer with ``script`` (where it returns something) while the block runs."""
        self.server.script = script  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self.server.script = None  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
