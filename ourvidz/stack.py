"""Running the parts of OurVidz as child processes on one machine, and stopping them cleanly.

Used by `ourvidz up` and `ourvidz demo`, and by the tests that need a real Prefect server or worker.
A Prefect server started here keeps its database under the data dir: on the embedded PostgreSQL
(`ourvidz.local_postgres`, the default) or on SQLite under `<data dir>/prefect`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from ourvidz.config import EmbeddedDatabase, Settings
from ourvidz.local_postgres import LocalPostgres, LocalPostgresError, as_user

STOP_GRACE_SECONDS = 15.0
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # before the 1st, 2nd, ... restart within RESTART_WINDOW
RESTART_WINDOW = 600.0
MAX_RESTARTS = 5  # exits within RESTART_WINDOW a child may have; one more and it "keeps failing"
PR_SET_PDEATHSIG = 1
WORKER_START_SECONDS = 300.0  # the first start builds the tiny models
SLOT_WAIT = "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"


class StackError(RuntimeError):
    """A part of the stack did not start, or died."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `url` answers 200, failing early if `process` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{url} never came up: its process exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"{url} did not answer within {timeout:.0f} s")


@dataclass(frozen=True)
class _Recipe:
    """How a child was started, so that it can be started again alike."""

    args: tuple[str, ...]
    extra_env: Mapping[str, str]
    nice: int
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    stops_last: bool = False  # others depend on it (a database): stopped once they are gone


@dataclass
class Stack:
    """Child processes started in order and stopped in reverse order; `supervise` restarts one that
    died (with a backoff) and gives up on one that keeps failing."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # per child, since the stack started
    _recipes: dict[str, _Recipe] = field(default_factory=dict)
    _exits: dict[str, list[float]] = field(default_factory=dict)  # when each child was seen dead, lately
    _due: dict[str, float] = field(default_factory=dict)  # dead children waiting out their backoff

    def start(
        self,
        name: str,
        args: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        nice: int = 0,
        *,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        stops_last: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start `args` with the stack's environment (at CPU niceness `nice`, as system `user` if given);
        its output goes to `<data dir>/logs/<name>.log`; `stop` ends it with `stop_signal` (after the
        others, if it `stops_last`)."""
        self._recipes[name] = _Recipe(tuple(args), dict(extra_env or {}), nice, user, stop_signal, stops_last)
        return self._launch(name)

    def _launch(self, name: str) -> subprocess.Popen[bytes]:
        recipe = self._recipes[name]
        self.logs[name] = self._log_file(name)
        with self.logs[name].open("ab") as log:
            process = subprocess.Popen(
                list(recipe.args), env={**self.env, **recipe.extra_env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the stack, which then stops its children in order
                preexec_fn=partial(_prepare_child, recipe.nice), **as_user(recipe.user),
            )  # fmt: skip
        self.processes[name] = process
        return process

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart the children that died, each after a backoff (RESTART_DELAYS); raise StackError
        for one that exited more than MAX_RESTARTS times within RESTART_WINDOW. Returns a line for
        each exit seen and each restart made, for the caller to show (each also goes to the child's
        log)."""
        now = time.monotonic() if now is None else now
        said = []
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                continue
            if name not in self._due:  # a new exit
                exits = [t for t in self._exits.get(name, []) if now - t < RESTART_WINDOW] + [now]
                self._exits[name] = exits
                if len(exits) > MAX_RESTARTS:
                    raise StackError(
                        f"{name} keeps failing: it exited {len(exits)} times within "
                        f"{RESTART_WINDOW / 60:.0f} minutes (last with code {process.returncode}); "
                        f"see {self.logs[name]}"
                    )
                delay = RESTART_DELAYS[min(len(exits), len(RESTART_DELAYS)) - 1]
                self._due[name] = now + delay
                said.append(
                    self._note(name, f"exited with code {process.returncode}; restarting in {delay:g} s")
                )
            elif now >= self._due[name]:
                del self._due[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._launch(name)
                said.append(self._note(name, f"restarted (restart {self.restarts[name]})"))
        return said

    def _note(self, name: str, what: str) -> str:
        line = f"{name} {what}"
        with self.logs[name].open("a") as log:
            log.write(f"--- ourvidz up: {line} ---\n")
        return line

    def run_once(self, name: str, args: Sequence[str]) -> None:
        """Run a command to completion with the stack's environment; raise with its log tail on failure."""
        log = self._log_file(name)
        result = subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=False)
        log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise StackError(f"{name} failed with code {result.returncode}:\n{tail}")

    def _log_file(self, name: str) -> Path:
        """`<data dir>/logs/<name>.log`, readable by the owner only: logs hold request paths and errors."""
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = log_dir / f"{name}.log"
        log.touch(mode=0o600)
        log.chmod(0o600)  # one an older version created with the umask's mode
        return log

    def start_postgres(self, port: int | None = None) -> LocalPostgres:
        """The embedded PostgreSQL under the data dir (initialised the first time), answering."""
        server = LocalPostgres.under(self.data_dir, port or free_port())
        try:
            server.prepare()
            process = self.start(  # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client)
                "postgres", server.command(), user=server.user, stop_signal=signal.SIGINT, stops_last=True
            )
            server.wait_ready(process)
        except LocalPostgresError as exc:
            raise StackError(f"{exc}; see {self.logs.get('postgres', self.data_dir / 'logs')}") from exc
        return server

    def start_prefect_server(
        self, port: int, timeout: float = 120, nice: int = 0, database: EmbeddedDatabase = "postgres"
    ) -> str:
        """A Prefect server on `database` under the data dir (the embedded PostgreSQL, started here, or
        SQLite), unless PREFECT_SERVER_DATABASE_CONNECTION_URL names another; its API URL once it answers."""
        prefect_home = self.data_dir / "prefect"
        prefect_home.mkdir(parents=True, exist_ok=True)
        api_url = f"http://127.0.0.1:{port}/api"
        env = {
            "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # the UI asks this address for its data (it assumes port 4200 otherwise)
            "PREFECT_UI_API_URL": self.env.get("PREFECT_UI_API_URL") or api_url,
            # a run that lost the race for its deployment's last slot is retried this soon (default 30 s)
            SLOT_WAIT: self.env.get(SLOT_WAIT) or "1",
        }  # fmt: skip
        url = self.env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL")
        if not url and database == "postgres":
            server = self.start_postgres()
            server.ensure_database("prefect")
            url = server.url("prefect", driver="asyncpg")
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
            url or f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
        )
        args = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        process = self.start("prefect-server", args, env, nice=nice)
        wait_for_http(f"{api_url}/health", timeout, process)
        self.env["PREFECT_API_URL"] = api_url
        return api_url

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode}; see {self.logs[name]}")

    def stop(self) -> None:
        """Stop every child (newest first; the ones the others depend on, such as the database, once
        the others are gone), with its stop signal, then SIGKILL whatever is left after a grace period."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        children = list(reversed(self.processes.items()))
        for last in (False, True):
            group = [(name, process) for name, process in children if self._stops_last(name) is last]
            for name, process in group:
                if process.poll() is None:
                    _signal_group(
                        process, self._recipes[name].stop_signal if name in self._recipes else signal.SIGTERM
                    )
            for _name, process in group:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
                    process.wait()
            deadline = max(deadline, time.monotonic() + STOP_GRACE_SECONDS / 3)
        self.processes.clear()

    def _stops_last(self, name: str) -> bool:
        recipe = self._recipes.get(name)
        return recipe is not None and recipe.stops_last


def _prepare_child(nice: int) -> None:
    """In the child, before exec: lower its CPU priority by `nice` (its threads inherit it), and get
    SIGTERM when the stack process dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    if nice:
        os.nice(nice)
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, sig)


@dataclass
class LocalStack:
    """The embedded default, running: Prefect server (unless one was given), job DB, gateway (which
    dispatches), GPU worker, maintenance worker."""

    stack: Stack
    api_url: str
    ui_url: str
    worker_health_url: str
    gateway_url: str


def start_local_stack(settings: Settings, worker_health_port: int | None = None) -> LocalStack:
    """Bring up the embedded default; with `PREFECT_API_URL` set, use that server instead of starting one."""
    stack = Stack(settings.data_dir)
    try:
        api_url = stack.env.get("PREFECT_API_URL") or _start_own_server(stack, settings)
        stack.env["PREFECT_API_URL"] = api_url
        ourvidz = [sys.executable, "-m", "ourvidz"]
        stack.run_once("db-upgrade", [*ourvidz, "db", "upgrade"])
        stack.run_once("bootstrap", [*ourvidz, "bootstrap"])
        _refuse_taken_port(settings.api_port, "OURVIDZ_API_PORT")
        gateway = stack.start("gateway", [*ourvidz, "api", "--port", str(settings.api_port)])
        port = worker_health_port or free_port()
        worker = stack.start("gpu-worker", [*ourvidz, "worker", "--health-port", str(port)])
        maintenance = [*ourvidz, "worker", "--pool", settings.maintenance_pool, "--queue", "default"]
        stack.start("maintenance-worker", [*maintenance, "--no-warm-up", "--health-port", "0"])
        gateway_url = f"http://{settings.api_host}:{settings.api_port}"
        wait_for_http(f"{gateway_url}/health", WORKER_START_SECONDS, gateway)
        health_url = f"http://127.0.0.1:{port}/health"
        wait_for_http(health_url, WORKER_START_SECONDS, worker)
    except BaseException:
        stack.stop()
        raise
    return LocalStack(stack, api_url, api_url.removesuffix("/api"), health_url, gateway_url)


def _start_own_server(stack: Stack, settings: Settings) -> str:
    port = settings.prefect_port
    _refuse_taken_port(port, "OURVIDZ_PREFECT_PORT", " (or PREFECT_API_URL to use the server that is there)")
    return stack.start_prefect_server(
        port, nice=settings.background_nice, database=settings.embedded_database
    )


def _refuse_taken_port(port: int, setting: str, hint: str = "") -> None:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise StackError(f"port {port} is taken: set {setting} to a free port{hint}")
