"""Realtime benchmark: a job event's way from the emitter to a browser's WebSocket on the gateway.

    python bench/realtime.py                  # 200 progress events at 20/s
    python bench/realtime.py --events 500 --json out.json

Starts a Prefect server (SQLite, the embedded default) and one gateway (job database on SQLite), opens
the gateway's `/realtime` WebSocket as the job's owner, and emits `ourvidz.job.progress` events the
way a flow does (`emit_event`). Latency = emitted -> JobStatusUpdate received by the client. Baseline
in the same run: the same events read straight from Prefect's event stream (what the gateway itself
subscribes to), so the difference is the gateway's share. Target: p95 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from websockets.sync.client import connect

from ourvidz.auth import mint_token
from ourvidz.config import Settings
from ourvidz.db import migrate
from ourvidz.orchestration.events import emit_job_event
from ourvidz.stack import Stack, free_port, wait_for_http

from report import percentile, publish

OURVIDZ = [sys.executable, "-m", "ourvidz"]


def summary(name: str, sent: dict[int, float], received: dict[int, float]) -> dict[str, Any]:
    latencies = [received[i] - sent[i] for i in received if i in sent]
    return {
        "path": name, "events": len(sent), "received": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
    }  # fmt: skip


def read_socket(url: str, received: dict[int, float], expected: int, ready: threading.Event) -> None:
    with connect(url) as socket:
        ready.set()
        while len(received) < expected:
            try:
                message = json.loads(socket.recv(timeout=10))
            except TimeoutError:
                return
            received.setdefault(int(message["progress"]), time.time())


def read_prefect(api_url: str, received: dict[int, float], expected: int, ready: threading.Event) -> None:
    async def run() -> None:
        only = EventFilter(event=EventNameFilter(prefix=["ourvidz.job.progress"]))
        async with get_events_subscriber(filter=only) as subscriber:
            ready.set()
            async for event in subscriber:
                received.setdefault(int(event.payload["progress"]), time.time())
                if len(received) >= expected:
                    return

    # Prefect's settings are per context: this thread names the server itself
    with temporary_settings(updates={PREFECT_API_URL: api_url}), contextlib.suppress(TimeoutError):
        asyncio.run(asyncio.wait_for(run(), timeout=120))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ourvidz-bench-realtime-") as tmp:
        stack = Stack(Path(tmp))
        stack.env["OURVIDZ_DATA_DIR"] = tmp
        try:
            api_url = stack.start_prefect_server(free_port())
            settings = Settings(data_dir=Path(tmp))
            migrate.upgrade(settings.database_url)
            port = free_port()
            gateway = stack.start("gateway", [*OURVIDZ, "api", "--port", str(port)])
            wait_for_http(f"http://127.0.0.1:{port}/health", 60, gateway)
            assert settings.jwt_secret is not None
            user, job = uuid.uuid4(), uuid.uuid4()
            token = mint_token(settings.jwt_secret.get_secret_value(), settings.jwt_audience, user)
            sent: dict[int, float] = {}
            via_gateway: dict[int, float] = {}
            via_prefect: dict[int, float] = {}
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                ready = [threading.Event(), threading.Event()]
                readers = [
                    threading.Thread(target=read_socket, args=(
                        f"ws://127.0.0.1:{port}/realtime?access_token={token}", via_gateway, args.events,
                        ready[0])),
                    threading.Thread(target=read_prefect, args=(api_url, via_prefect, args.events, ready[1])),
                ]  # fmt: skip
                for reader in readers:
                    reader.start()
                for flag in ready:
                    flag.wait(60)
                time.sleep(2.0)  # the gateway's own subscription is up before the first event
                started = time.perf_counter()
                for index in range(args.events):
                    time.sleep(max(0.0, started + index / args.rate - time.perf_counter()))
                    sent[index] = time.time()
                    emit_job_event("progress", job, user, "sdxl_image_fast", {"progress": index})
                for reader in readers:
                    reader.join(timeout=60)
        finally:
            stack.stop()
    results = [
        summary("gateway WebSocket", sent, via_gateway),
        summary("baseline: Prefect stream", sent, via_prefect),
    ]
    output = {"rate_per_s": args.rate, "target_p95_ms": 100, "results": results}
    publish(output, args.json)
    print(f"\n{'path':<26} {'events':>6} {'received':>8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for r in results:
        print(f"{r['path']:<26} {r['events']:>6} {r['received']:>8} {r['p50_ms']:>7} {r['p95_ms']:>7} "
              f"{r['max_ms']:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
