"""FAULT INJECTOR for the rating tests: a real HTTP proxy that breaks requests on purpose.

`FaultInjectingProxy` listens on 127.0.0.1, forwards requests to a real upstream server (the
llama.cpp server in the tests) and, on the requests a *plan* picks, injects a fault instead:

- ``"drop"``: close the connection without answering;
- ``"500"`` / ``"503"``: a server error (503 with ``Retry-After``);
- ``"400"``: a rejected request, like a sample longer than the model's context;
- ``"429"``: rate limited, with ``Retry-After: <retry_after>``;
- ``"stall"``: hold the request for ``stall_seconds`` (past the client's timeout), then drop it;
- ``"garbage"``: a well-formed chat completion whose text is not a rating;
- ``"garbage_body"``: a 200 whose body is not JSON at all;
- ``"reject_response_format"``: a 422, like a server without constrained decoding (only when the
  request carries ``response_format``; otherwise the request is forwarded).

It is test equipment, not a mock of the server: every request it does not break is answered by
the real upstream. It records every request (sample id, fault, time) so tests can count them.

    >>> with FaultInjectingProxy("http://127.0.0.1:8080", plan=lambda i, rec: "500" if i < 2 else None) as proxy:
    ...     rate(model="m", base_url=proxy.url)
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import urlparse

GARBAGE_TEXT = "Lorem ipsum dolor sit amet, this is not a rating at all."
SAMPLE_ID = re.compile(r"sample-(\d+)")


@dataclass
class ProxiedRequest:
    index: int
    path: str
    sample: Optional[int]
    turns: int
    has_response_format: bool
    fault: Optional[str]
    time: float
    body: bytes = b""


Plan = Callable[[int, ProxiedRequest], Optional[str]]


class FaultInjectingProxy:
    """FAULT INJECTOR (see module docstring). ``plan(index, request) -> fault name or None``."""

    def __init__(self, upstream: str, plan: Plan | None = None, *, retry_after: float = 1.0, stall_seconds: float = 3.0):
        parsed = urlparse(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.plan: Plan = plan or (lambda i, r: None)
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FaultInjectingProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                try:
                    proxy._forward(self, b"")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._handle_post(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultInjectingProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self, plan: Plan | None = None) -> None:
        with self._lock:
            self.requests = []
            if plan is not None:
                self.plan = plan

    # -- request handling ---------------------------------------------------------------------
    def _record(self, path: str, body: bytes) -> ProxiedRequest:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        messages = payload.get("messages") or []
        first = messages[0].get("content", "") if messages and isinstance(messages[0], dict) else ""
        match = SAMPLE_ID.search(str(first))
        with self._lock:
            record = ProxiedRequest(
                index=len(self.requests),
                path=path,
                sample=int(match.group(1)) if match else None,
                turns=len(messages),
                has_response_format=payload.get("response_format") is not None,
                fault=None,
                time=time.monotonic(),
                body=body,
            )
            record.fault = self.plan(record.index, record)
            if record.fault == "reject_response_format" and not record.has_response_format:
                record.fault = None
            self.requests.append(record)
        return record

    def _handle_post(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            self._dispatch(handler, self._record(handler.path, body))
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client gave up (e.g. its timeout); nothing to answer

    def _dispatch(self, handler: BaseHTTPRequestHandler, record: ProxiedRequest) -> None:
        body = record.body
        fault = record.fault
        if fault is None:
            self._forward(handler, body)
        elif fault == "drop":
            handler.close_connection = True  # returning without a response closes the socket
        elif fault == "stall":
            time.sleep(self.stall_seconds)
            handler.close_connection = True
        elif fault in ("500", "503", "429"):
            headers = {"Retry-After": f"{self.retry_after:g}"} if fault in ("503", "429") else {}
            self._reply(handler, int(fault), {"error": {"message": f"injected {fault}"}}, headers)
        elif fault == "400":
            self._reply(handler, 400, {"error": {"message": "Requested tokens exceed context window (injected)"}})
        elif fault == "reject_response_format":
            self._reply(handler, 422, {"error": {"message": "response_format is not supported (injected)"}})
        elif fault == "garbage":
            self._reply(
                handler,
                200,
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "fault-proxy",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": GARBAGE_TEXT}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )
        elif fault == "garbage_body":
            self._reply_raw(handler, 200, b"<html>upstream hiccup</html>", "text/html")
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        self._reply_raw(handler, status, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def _reply_raw(handler, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            handler.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        finally:
            conn.close()
