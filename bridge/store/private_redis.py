"""A private redis-server: a child process on a free loopback port, its files in a folder of its own.

``magbridge demo`` runs on one so that nothing it writes lands in an operator's Redis, and the tests
run on one so that they never touch a shared server. It keeps nothing on disk unless asked
(``--save ""``; AOF only with ``appendonly=True``), answers only on 127.0.0.1, and ``stop`` ends it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["PrivateRedis", "RedisServerMissing", "free_port", "stop_server"]


class RedisServerMissing(RuntimeError):
    """No ``redis-server`` on the ``PATH``."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_server(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM (a redis-server exits cleanly on it), then SIGKILL if it has not gone within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PrivateRedis:
    """One redis-server process of our own; ``start`` waits until it answers ``PING``."""

    def __init__(self, workdir: Path, *, appendonly: bool = False):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing("redis-server is not on the PATH")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        """Start the server (again, after ``stop``: same port, same folder) and wait until it answers."""
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # it exited: the port was taken meanwhile, or a bad binary
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server ({self.binary}) did not start on port {self.port}")

    def stop(self) -> None:
        """End the server; its data goes with it unless it was started with ``appendonly``."""
        if self.process is not None:
            stop_server(self.process)
            self.process = None
