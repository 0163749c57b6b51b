"""A real ``redis-server`` for tests: its own free port and temp dir, stoppable and restartable.

Never the machine's shared Redis, never a fake: the store's Lua, streams, TTLs and pub/sub are
exactly what these tests are about. `stop()` shuts the server down (saving its data into the
temp dir by default, like a production Redis with persistence restarting) and `start()` brings
it back on the same port, for outage tests.

Use from a test module with ``from tests.redis_server import redis_server, redis_url``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _die_with_parent_hook() -> Callable[[], None] | None:
    """On Linux, a child hook making the server exit with the test process, even a killed one,
    so an interrupted run leaves no server behind."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now, not in the forked child
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
        if binary is None:
            # Failing, not skipping: without it the production store path goes untested.
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(self, line: str, *, reply: bool = True) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(line.encode() + b"\r\n")
            return sock.recv(1024) if reply else b""

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = (self.directory / "redis.log").open("ab")
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",  # no snapshots of its own; `stop(save=True)` asks for one
            "appendonly": "no",
            "dir": str(self.directory),
            "daemonize": "no",
        }
        argv = [self.binary]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent_hook()
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.directory / 'redis.log'}")
            try:
                if self._command("PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("redis-server did not answer PING in time")

    def stop(self, *, save: bool = True) -> None:
        """Shuts down; with `save`, the data comes back at the next `start()`."""
        if not self.running:
            return
        assert self.process is not None
        try:
            self._command("SHUTDOWN SAVE" if save else "SHUTDOWN NOSAVE", reply=False)
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        if not save:
            (self.directory / "dump.rdb").unlink(missing_ok=True)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def flushall(self) -> None:
        assert self._command("FLUSHALL").startswith(b"+OK")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop(save=False)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """An empty, running server for this test (restarted if a previous test stopped it)."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url
