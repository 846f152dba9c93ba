"""A tiny OpenAI chat-completions server on 127.0.0.1 for tests (stdlib only).

Each request pops the next scripted reply from ``FakeOpenAI.replies`` (default: a plain
answer). A reply is a dict: ``{"status": 429}`` for an error, ``{"tool_calls": [...]}`` for a
tool call, ``{"text": ..., "cached": n, "reasoning": n}`` otherwise (also ``cache_write``: n, the
cache-write tokens, and ``service_tier``, the response's tier). Streaming requests get
SSE chunks and, when ``stream_options.include_usage`` is set, a final usage-only chunk.
Requests are recorded in ``FakeOpenAI.requests`` (with their ``traceparent`` header).

``POST /v1/responses`` speaks the Responses API: a ``response`` object, or when streaming the
documented SSE events (``response.created`` ... ``response.completed``); a reply may also give
``model`` and ``incomplete`` (a reason: the response ends ``incomplete``, its last event
``response.incomplete``).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-4o-mini-2024-07-18"


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    reply = server.replies.pop(0) if server.replies else {}
                status = reply.get("status", 200)
                if status != 200:
                    payload = json.dumps(
                        {"error": {"message": "scripted error", "type": "test", "code": None}}
                    )
                    self._send(status, "application/json", payload.encode())
                    return
                if self.path.endswith("/responses"):  # the Responses API
                    if body.get("stream"):
                        self._send(200, "text/event-stream", _response_sse(reply))
                    else:
                        self._send(200, "application/json", json.dumps(_response(reply)).encode())
                    return
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._send(200, "text/event-stream", _sse(reply, include_usage))
                else:
                    self._send(200, "application/json", json.dumps(_completion(reply)).encode())

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _usage(reply: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.get("prompt_tokens", 12),
        "completion_tokens": reply.get("completion_tokens", 5),
        "total_tokens": reply.get("prompt_tokens", 12) + reply.get("completion_tokens", 5),
        "prompt_tokens_details": {"cached_tokens": reply.get("cached", 0), **_cache_write(reply)},
        "completion_tokens_details": {"reasoning_tokens": reply.get("reasoning", 0)},
    }


def _cache_write(reply: dict[str, Any]) -> dict[str, Any]:
    """``cache_write_tokens`` when the reply gives ``cache_write``."""
    return {"cache_write_tokens": reply["cache_write"]} if "cache_write" in reply else {}


def _tier(reply: dict[str, Any]) -> dict[str, Any]:
    """The response's ``service_tier`` when the reply gives one."""
    return {"service_tier": reply["service_tier"]} if "service_tier" in reply else {}


def _message(reply: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if "tool_calls" in reply:
        calls = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }
            for call in reply["tool_calls"]
        ]
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": reply.get("text", "Hello there!")}, "stop"


def _completion(reply: dict[str, Any]) -> dict[str, Any]:
    message, finish = _message(reply)
    return {
        "id": reply.get("id", "chatcmpl-1"),
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(reply),
        **_tier(reply),
    }


def _sse(reply: dict[str, Any], include_usage: bool) -> bytes:
    message, finish = _message(reply)
    base = {
        "id": reply.get("id", "chatcmpl-2"),
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        **_tier(reply),
    }
    chunks: list[dict[str, Any]] = []
    if "tool_calls" in message:
        for i, call in enumerate(message["tool_calls"]):
            delta = {"role": "assistant", "tool_calls": [{"index": i, **call}]}
            chunks.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    else:
        for i, word in enumerate(message["content"].split(" ")):
            text = word if i == 0 else " " + word
            chunks.append(
                {**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            )
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(reply)})
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def _response(reply: dict[str, Any], *, done: bool = True) -> dict[str, Any]:
    """A Responses API ``response`` object: finished (with its output and usage) or just created."""
    incomplete = reply.get("incomplete")
    text = reply.get("text", "Hello there!")
    message = {
        "type": "message",
        "id": "msg_1",
        "status": "incomplete" if incomplete else "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    usage = {
        "input_tokens": reply.get("prompt_tokens", 12),
        "input_tokens_details": {"cached_tokens": reply.get("cached", 0), **_cache_write(reply)},
        "output_tokens": reply.get("completion_tokens", 5),
        "output_tokens_details": {"reasoning_tokens": reply.get("reasoning", 0)},
        "total_tokens": reply.get("prompt_tokens", 12) + reply.get("completion_tokens", 5),
    }
    return {
        "id": reply.get("id", "resp_1"),
        "object": "response",
        "created_at": 1700000000,
        "status": ("incomplete" if incomplete else "completed") if done else "in_progress",
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete and done else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": reply.get("model", MODEL),
        "output": [message] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if done else None,
        "user": None,
        "metadata": {},
        **_tier(reply),
    }


def _response_sse(reply: dict[str, Any]) -> bytes:
    """The Responses API's streaming events for a text reply, one word a delta."""
    created, final = _response(reply, done=False), _response(reply)
    text = reply.get("text", "Hello there!")
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": created},
        {"type": "response.in_progress", "response": created},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "part": part},
    ]
    for i, word in enumerate(text.split(" ")):
        delta = word if i == 0 else " " + word
        events.append({"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []})
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
        {"type": f"response.{final['status']}", "response": final},
    ]
    lines = []
    for number, event in enumerate(events):
        event["sequence_number"] = number
        lines.append(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n")
    return "".join(lines).encode()
