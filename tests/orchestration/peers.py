"""Real network peers for gateway tests: a switchable TCP proxy and a fake chat worker, on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SwitchableProxy:
    """Forwards TCP to `upstream` while `up`; while down, every connection is closed at once."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.up = False
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
    """An OpenAI-compatible chat worker that echoes the last message; `healthy=False` makes it fail,
    `delay` makes it slow, `reply` replaces the echo (a str as the message content, bytes as the raw
    response body, for garbage)."""

    def __init__(self) -> None:
        self.healthy = True
        self.delay = 0.0
        self.reply: str | bytes | None = None
        self.requests: list[dict[str, Any]] = []
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(200 if worker.healthy and self.path == "/health" else 503, {"status": "ok"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                worker.requests.append(body)
                time.sleep(worker.delay)
                if not worker.healthy:
                    self._answer(500, {"error": "down"})
                    return
                if isinstance(worker.reply, bytes):
                    self._answer(200, worker.reply)
                    return
                text = (
                    worker.reply if worker.reply is not None else f"echo: {body['messages'][-1]['content']}"
                )
                self._answer(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

            def _answer(self, status: int, payload: dict[str, Any] | bytes) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # refuse connections from now on, rather than leave them hanging
