"""End-to-end enhance-prompt benchmark: `ourvidz api` on PostgreSQL with a chat worker that takes
400 ms to answer.

    python bench/enhance_e2e.py                       # 1, 4 and 16 clients, 10 s each
    python bench/enhance_e2e.py --delay 0.4 --clients 8 --duration 30 --json out.json

A chat worker on loopback answers OpenAI-style `/v1/chat/completions` after `--delay` seconds. For
each client count, N clients send enhance-prompt as fast as answers come; the baseline in the same
run is the same clients calling the chat worker directly (what any enhancer through a worker must
pay), and the rules enhancer through the gateway with no chat worker registered. Target: p99 <= 500 ms
end to end when the chat worker answers within 400 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.db.session import sessions_for
from ourvidz.registry.workers import CHAT, forget, register
from ourvidz.stack import Stack, free_port, wait_for_http

from report import percentile, publish
from scratch import scratch_schema, user_tokens

OURVIDZ = [sys.executable, "-m", "ourvidz"]
BODY = {"prompt": "a lighthouse at dusk, waves on the rocks", "jobType": "sdxl_image_fast"}
REPLY = "a lighthouse at dusk, waves breaking on dark rocks, warm light in the lantern room, long exposure"


@contextmanager
def slow_chat_worker(delay: float) -> Iterator[str]:
    """An OpenAI-compatible chat worker that answers every completion after `delay` seconds."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real inference servers do
        disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            time.sleep(delay)
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": REPLY}}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the default backlog of 5 resets connections under 16 clients

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def clients_loop(
    url: str, body: dict[str, Any], headers: list[dict[str, str]], clients: int, duration: float
) -> dict[str, Any]:
    """`clients` loops posting `body` to `url` until `duration` is up; latency of each answer."""
    seconds: list[float] = []
    failures = 0
    deadline = time.perf_counter() + duration

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                answer = await http.post(url, json=body, headers=headers[index % len(headers)])
                failures += answer.status_code != 200
            except httpx.HTTPError:
                failures += 1
            seconds.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return {
        "requests": len(seconds), "failures": failures,
        "p50_ms": round(statistics.median(seconds) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "rps": round(len(seconds) / duration, 1),
    }  # fmt: skip


def measure(
    url: str, worker_url: str, sessions: sessionmaker[Session], headers: list[dict[str, str]], clients: int,
    duration: float,
) -> list[dict[str, Any]]:  # fmt: skip
    """The three phases for one client count: direct to the worker, through the gateway, rules only."""
    register(sessions, CHAT, worker_url, "register-chat-worker")
    enhance = f"{url}/enhance-prompt"
    asyncio.run(clients_loop(enhance, BODY, headers, clients, 1.0))  # warm-up: connections, caches
    direct = {"messages": [{"role": "user", "content": BODY["prompt"]}]}
    phases = [
        ("chat worker direct (baseline)", f"{worker_url}/v1/chat/completions", direct),
        ("enhance-prompt, chat worker", enhance, BODY),
        ("enhance-prompt, rules (no chat worker)", enhance, BODY),
    ]
    results = []
    for label, target, body in phases:
        if label.startswith("enhance-prompt, rules"):
            forget(sessions, CHAT)
        print(f"{clients} clients: {label}...", flush=True)
        result = asyncio.run(clients_loop(target, body, headers, clients, duration))
        results.append({"phase": label, "clients": clients, **result})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--delay", type=float, default=0.4, help="the chat worker's answer time, seconds")
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with (
        scratch_schema(args.database) as (database_url, _schema),
        tempfile.TemporaryDirectory(prefix="ourvidz-bench-enhance-") as tmp,
        slow_chat_worker(args.delay) as worker_url,
    ):
        stack = Stack(Path(tmp))
        stack.env.update({
            "OURVIDZ_DATA_DIR": tmp, "OURVIDZ_DATABASE_URL": database_url,
            "OURVIDZ_RATE_LIMIT_ENHANCE": "1000000/minute",
        })  # fmt: skip
        try:
            stack.start_prefect_server(free_port())  # the gateway needs one; enhance never calls it
            migrate.upgrade(database_url)
            port = free_port()
            gateway = stack.start("gateway", [*OURVIDZ, "api", "--port", str(port)])
            url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{url}/health", 60, gateway)
            sessions = sessions_for(database_url)
            settings = Settings(data_dir=Path(tmp), database_url=database_url)
            tokens = user_tokens(settings, sessions, max(args.clients))
            headers = [{"authorization": f"Bearer {token}"} for token in tokens]
            for clients in args.clients:
                results += measure(url, worker_url, sessions, headers, clients, args.duration)
        finally:
            stack.stop()
    publish({"chat_worker_delay_s": args.delay, "target_p99_ms": 500, "results": results}, args.json)
    print(f"\n{'phase':<40} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'failed':>6}")
    for r in results:
        print(f"{r['phase']:<40} {r['clients']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['rps']:>7} "
              f"{r['failures']:>6}")  # fmt: skip


if __name__ == "__main__":
    main()
