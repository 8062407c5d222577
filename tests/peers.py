"""Real network peers on loopback: a switchable TCP proxy, a fake chat worker, a webhook receiver and
a file host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ourvidz.egress import EgressPolicy

# The HTTP peers listen on a loopback address of their own, which the egress policy refuses unless
# allowlisted: tests that call one through the policy allowlist it explicitly (PEERS_ALLOWED, or
# `PEER_HOST` in a stack's settings), while 127.0.0.1, where the stack's own services listen, stays refused.
PEER_HOST = "127.0.0.2"
PEERS_ALLOWED = EgressPolicy.of([PEER_HOST])


class _Quiet(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean, with one way to answer."""

    def reply(self, status: int, body: bytes, kind: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the caller gave up waiting
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """`handler` served on a free loopback port by a daemon thread; the server and its base URL."""
    server = ThreadingHTTPServer((PEER_HOST, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{PEER_HOST}:{server.server_address[1]}"


class SwitchableProxy:
    """Forwards TCP to `upstream` while `up`; while down, every connection is closed at once."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.up = False
        self.refused = 0  # connections closed at once while down
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


class FakeChatWorker:
    """A chat worker that echoes the last message, on both wire protocols: OpenAI's
    `POST /v1/chat/completions` (any other POST path answers the same; with `"stream": true` the reply
    comes as server-sent events in several chunks, ending with `data: [DONE]`) and the OurVidz worker's
    `POST /chat` (`{"success": true, "response": ...}`) and `POST /enhance` (`{"success": true,
    "enhanced_prompt": ...}`).

    `healthy=False` makes it fail, `delay` makes it slow, `reply` replaces the echo (a str as the
    message content, a callable from the last message to it, bytes as the raw response body, for
    garbage), `fail_mid_stream=True` sends one chunk of a streamed reply and then drops the connection,
    `chunk_pause` spaces the chunks out. `requests` holds each request's body and `paths` its path, in
    the same order; `cut_streams` counts streamed replies whose reader hung up before the end."""

    def __init__(self) -> None:
        self.healthy = True
        self.delay = 0.0
        self.reply: str | bytes | Callable[[str], str] | None = None
        self.fail_mid_stream = False
        self.chunk_pause = 0.01  # seconds between streamed chunks
        self.cut_streams = 0  # streamed replies whose reader hung up before the end
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        worker = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                self._answer(200 if worker.healthy and self.path == "/health" else 503, {"status": "ok"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                worker.paths.append(self.path)
                worker.requests.append(body)
                time.sleep(worker.delay)
                if not worker.healthy:
                    self._answer(500, {"error": "down"})
                    return
                if isinstance(worker.reply, bytes):
                    self._answer(200, worker.reply)
                    return
                last = body["messages"][-1]["content"]
                reply = worker.reply(last) if callable(worker.reply) else worker.reply
                text = f"echo: {last}" if reply is None else reply
                if self.path == "/chat":
                    self._answer(200, {"success": True, "response": text})
                elif self.path == "/enhance":
                    self._answer(200, {"success": True, "enhanced_prompt": text})
                elif body.get("stream") is True:
                    self._stream(text)
                else:
                    self._answer(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

            def _stream(self, text: str) -> None:
                """OpenAI's chat-completion chunks as SSE over a chunked HTTP/1.1 body, flushed one by one."""
                self.protocol_version = "HTTP/1.1"
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("connection", "close")
                self.end_headers()
                pieces = re.findall(r"\s*\S+|\s+$", text)  # a word each, spaces kept
                deltas = [{"role": "assistant"}, *({"content": piece} for piece in pieces), {}]
                try:
                    for index, delta in enumerate(deltas):
                        finish = "stop" if index == len(deltas) - 1 else None
                        choice = {"index": 0, "delta": delta, "finish_reason": finish}
                        event = {"object": "chat.completion.chunk", "choices": [choice]}
                        self._chunk(f"data: {json.dumps(event)}\n\n".encode())
                        if worker.fail_mid_stream and index == 1:
                            return  # the connection drops with the body unfinished (no last chunk)
                        time.sleep(worker.chunk_pause)
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")  # the last chunk: the body is complete
                except (BrokenPipeError, ConnectionResetError):
                    worker.cut_streams += 1

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _answer(self, status: int, payload: dict[str, Any] | bytes) -> None:
                self.reply(status, payload if isinstance(payload, bytes) else json.dumps(payload).encode())

        self.server, self.url = _serve(Handler)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # refuse connections from now on, rather than leave them hanging


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """A webhook receiver on loopback. It refuses (`refusal`, 503 by default) its first `failures`
    requests and every request during an outage of `outage_seconds` (until `recover()`); it answers
    after `delay_seconds`, with `answer` as the body and `answer_headers`. Every request is kept with
    the status it got."""

    def __init__(
        self, failures: int = 0, outage_seconds: float = 0.0, delay_seconds: float = 0.0, refusal: int = 503,
        answer: bytes = b"", answer_headers: dict[str, str] | None = None, status: int = 200,
    ) -> None:  # fmt: skip
        self.failures, self.refusal, self.delay = failures, refusal, delay_seconds
        self.answer, self.answer_headers, self.status = answer, answer_headers or {}, status
        self.down_until = time.monotonic() + outage_seconds
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    status = receiver.refusal if receiver.refusing() else receiver.status
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append(Received(headers, body, status))
                self.reply(status, receiver.answer, "text/plain", **receiver.answer_headers)

        self.server, base = _serve(Handler)
        self.url = f"{base}/hooks/ourvidz"

    def refusing(self) -> bool:
        return len(self.requests) < self.failures or time.monotonic() < self.down_until

    def recover(self) -> None:
        with self.lock:
            self.failures, self.down_until = 0, 0.0

    def accepted(self) -> Counter[str]:
        """How often each webhook id was accepted (answered 2xx)."""
        return Counter(r.headers["webhook-id"] for r in self.requests if 200 <= r.status < 300)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FileHost:
    """An HTTP file host on loopback: `files[path] = (status, content type, body, extra headers)`."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        host = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                status, kind, body, headers = host.files.get(
                    self.path, (404, "text/plain", b"no such file", {})
                )
                self.reply(status, body, kind, **headers)

        self.server, self.url = _serve(Handler)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
