"""A real PostgreSQL server with pgvector for tests, on 127.0.0.1: the binaries inside the `pgserver` wheel.

PostgreSQL refuses to run as root, so under root (CI, containers) the server runs as `nobody` from a folder
it owns. Each test gets its own database on one server per test session.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROLE = "memorybot"


def _bin(name: str) -> str:
    spec = importlib.util.find_spec("pgserver")  # found, not imported: only its binaries are used
    assert spec is not None and spec.submodule_search_locations, "install the dev extra (pgserver)"
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, port: int) -> None:
        self.port = port

    def new_database(self) -> str:
        """Create an empty database and return its connection URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    run_as = "nobody" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="memorybot-pg-"))  # under /tmp: reachable by `nobody`
    data = root / "data"
    if run_as:
        shutil.chown(root, run_as)
    port = _free_port()
    log = root / "server.log"
    subprocess.run([_bin("initdb"), "-D", str(data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"],
                   user=run_as, check=True, capture_output=True)
    with open(log, "wb") as out:
        server = subprocess.Popen([_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                   "-k", str(root), "-c", "fsync=off"], user=run_as, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield PostgresServer(port)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)
