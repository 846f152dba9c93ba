"""A tiny OpenAI chat-completions server on 127.0.0.1 for tests (stdlib only).

Each request pops the next scripted reply from ``FakeOpenAI.replies`` (default: a plain
answer). A reply is a dict: ``{"status": 429}`` for an error, ``{"tool_calls": [...]}`` for a
tool call, ``{"text": ..., "cached": n, "reasoning": n}`` otherwise (also ``cache_write``: n, the
cache-write tokens, and ``service_tier``, the response's tier). Streaming requests get
SSE chunks and, when ``stream_options.include_usage`` is set, a final usage-only chunk.
Requests are recorded in ``FakeOpenAI.requests`` (with their ``traceparent`` header).

``POST /v1/responses`` speaks the Responses API: a ``response`` object, or when streaming the
documented SSE events (``response.created`` ... ``response.completed``); a reply may also give
``model``, ``incomplete`` (a reason: the response ends ``incomplete``, its last event
``response.incomplete``), ``summary`` (the deltas of a reasoning summary, streamed before the
answer), ``tool_calls`` (function calls instead of a message, their arguments streamed in two
deltas) and ``pause`` (seconds the server waits, when streaming, before the first event that
carries part of the answer). ``failed`` (an error code) makes the response fail: its status is
``failed`` with that ``error.code``, its last event ``response.failed``; ``error_event`` (an error
code) ends the stream after its first delta with an ``error`` event instead.
"""

from __future__ import annotations

import json
import threading
import time
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
                        self._stream(_response_sse(reply), reply.get("pause", 0.0))
                    else:
                        self._send(200, "application/json", json.dumps(_response(reply)).encode())
                    return
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._send(200, "text/event-stream", _sse(reply, include_usage))
                else:
                    self._send(200, "application/json", json.dumps(_completion(reply)).encode())

            def _stream(self, events: tuple[bytes, bytes], pause: float) -> None:
                """SSE events written as they come: the framing ones, ``pause`` seconds, the rest
                (HTTP/1.0: the body ends when the connection closes)."""
                head, rest = events
                if not pause:
                    self._send(200, "text/event-stream", head + rest)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                self.wfile.write(head)
                self.wfile.flush()
                time.sleep(pause)
                self.wfile.write(rest)

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


def _output(reply: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """The output items of a finished response: a reasoning item (``summary``), then the function
    calls (``tool_calls``) or the message."""
    items: list[dict[str, Any]] = []
    if "summary" in reply:
        summary = [{"type": "summary_text", "text": "".join(reply["summary"])}]
        items.append({"type": "reasoning", "id": "rs_1", "summary": summary, "status": "completed"})
    for i, call in enumerate(reply.get("tool_calls", ())):
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{i + 1}",
                "call_id": call["id"],
                "name": call["name"],
                "arguments": json.dumps(call["arguments"]),
                "status": "completed",
            }
        )
    if "tool_calls" not in reply:
        text = reply.get("text", "Hello there!")
        items.append(
            {
                "type": "message",
                "id": "msg_1",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    return items


def _response(reply: dict[str, Any], *, done: bool = True) -> dict[str, Any]:
    """A Responses API ``response`` object: finished (with its output and usage) or just created."""
    incomplete = reply.get("incomplete")
    failed = reply.get("failed")
    status = "failed" if failed else "incomplete" if incomplete else "completed"
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
        "status": status if done else "in_progress",
        "error": {"code": failed, "message": "scripted failure"} if failed and done else None,
        "incomplete_details": {"reason": incomplete} if incomplete and done else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": reply.get("model", MODEL),
        "output": _output(reply, "incomplete" if incomplete else "completed") if done else [],
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


def _reasoning_events(reply: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of the reasoning item (output 0): its summary streamed delta by delta."""
    where = {"item_id": item["id"], "output_index": 0, "summary_index": 0}
    text = item["summary"][0]["text"]
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "summary": []}},
        {
            "type": "response.reasoning_summary_part.added",
            **where,
            "part": {"type": "summary_text", "text": ""},
        },
    ]
    for delta in reply["summary"]:
        events.append({"type": "response.reasoning_summary_text.delta", **where, "delta": delta})
    events += [
        {"type": "response.reasoning_summary_text.done", **where, "text": text},
        {
            "type": "response.reasoning_summary_part.done",
            **where,
            "part": {"type": "summary_text", "text": text},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]
    return events


def _call_events(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The events of a function call: its start (name, call id), its arguments in two deltas."""
    arguments = item["arguments"]
    half = len(arguments) // 2
    where = {"item_id": item["id"], "output_index": index}
    return [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "arguments": "", "status": "in_progress"},
        },
        {"type": "response.function_call_arguments.delta", **where, "delta": arguments[:half]},
        {"type": "response.function_call_arguments.delta", **where, "delta": arguments[half:]},
        {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]


def _message_events(reply: dict[str, Any], item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The events of the message: its text, one word a delta."""
    text = reply.get("text", "Hello there!")
    added = {"type": "message", "id": item["id"], "status": "in_progress", "role": "assistant", "content": []}
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index, "item": added},
        {"type": "response.content_part.added", **where, "part": part},
    ]
    for i, word in enumerate(text.split(" ")):
        delta = word if i == 0 else " " + word
        events.append({"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []})
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return events


def _response_sse(reply: dict[str, Any]) -> tuple[bytes, bytes]:
    """The Responses API's streaming events, split before the first one that carries part of the
    answer (a delta, or the start of a function call): (the framing events before it, the rest)."""
    created, final = _response(reply, done=False), _response(reply)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": created},
        {"type": "response.in_progress", "response": created},
    ]
    for index, item in enumerate(final["output"]):
        if item["type"] == "reasoning":
            events += _reasoning_events(reply, item)
        elif item["type"] == "function_call":
            events += _call_events(item, index)
        else:
            events += _message_events(reply, item, index)
    events.append({"type": f"response.{final['status']}", "response": final})
    if reply.get("error_event"):  # the stream ends after its first delta, with an error event
        first_delta = next(i for i, event in enumerate(events) if event["type"].endswith(".delta"))
        error = {"type": "error", "code": reply["error_event"], "message": "scripted error", "param": None}
        events = [*events[: first_delta + 1], error]
    lines = []
    first = None
    for number, event in enumerate(events):
        event["sequence_number"] = number
        answers = event["type"].endswith(".delta") or event.get("item", {}).get("type") == "function_call"
        if first is None and answers:
            first = number
        lines.append(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    split = len(lines) if first is None else first
    return b"".join(lines[:split]), b"".join(lines[split:])
