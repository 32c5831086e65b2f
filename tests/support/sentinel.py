"""A private Redis replication set watched by Sentinels: a primary, replicas and Sentinels, each a
``redis-server`` process of its own (Sentinels in sentinel mode) on a free loopback port.

Nodes keep their port for life, so a node killed and started again (``restart_as_replica``) is the
one the Sentinels already know. Timings are short (``down_after_ms``, ``failover_timeout_ms``) so
that a failover takes a few seconds. Nothing is kept on disk except the Sentinels' own files, which
Sentinel rewrites as it learns.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from bridge.store.private_redis import stop_server
from tests.support.redis_server import free_port

__all__ = ["MASTER_NAME", "RedisNode", "SentinelSet", "answer_or_false"]

MASTER_NAME = "mymaster"


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; the tests need a local Redis binary")
    return binary


def _command(*words: str) -> bytes:
    """One command in RESP (a password may hold spaces)."""
    encoded = [word.encode() for word in words]
    return f"*{len(encoded)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)


def _answers(port: int, password: str | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall((_command("AUTH", password) if password else b"") + _command("PING"))
            reply = b""
            while reply.count(b"\r\n") < (2 if password else 1):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply.endswith(b"+PONG\r\n")
    except OSError:
        return False


class RedisNode:
    """One ``redis-server`` (or Sentinel) process on a fixed port; ``args`` are given at each start."""

    def __init__(self, name: str, workdir: Path, *, password: str | None = None):
        self.name = name
        self.port = free_port()
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen([_binary(), *args], stdout=log, stderr=log, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + 10
        while not _answers(self.port, self.password):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start on port {self.port}: see {self.workdir}/server.log")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        """This node alone, as a ``redis://`` URL."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: the host is gone, with whatever it had not yet sent to its replicas."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            stop_server(self.process)
            self.process = None


class SentinelSet:
    """``replicas`` + 1 data nodes and ``sentinels`` Sentinels (quorum: a majority) for ``MASTER_NAME``."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ):
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes = [RedisNode(f"redis-{n}", workdir, password=password) for n in range(replicas + 1)]
        self.sentinels = [RedisNode(f"sentinel-{n}", workdir, password=sentinel_password) for n in range(sentinels)]
        self.quorum = sentinels // 2 + 1

    @property
    def url(self) -> str:
        """The ``MAGBRIDGE_REDIS_URL`` of this set."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        query = f"?sentinel_password={quote(self.sentinel_password, safe='')}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/0{query}"

    def node(self, port: int) -> RedisNode:
        return next(node for node in self.nodes if node.port == port)

    def _data_args(self, node: RedisNode, master: RedisNode | None) -> list[str]:
        args = [
            "--port", str(node.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(node.workdir),
            # Any node may become the master: none waits before a diskless full sync (7.0 waits 5 s).
            "--repl-diskless-sync-delay", "0",
            "--shutdown-on-sigterm", "now",  # a test's end need not wait for replicas to catch up
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if master is not None:
            args += ["--replicaof", "127.0.0.1", str(master.port)]
        return args

    def _sentinel_conf(self, sentinel: RedisNode, master: RedisNode) -> Path:
        lines = [
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            f"dir {sentinel.workdir}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password:
            lines.append(f'sentinel auth-pass {MASTER_NAME} "{self.password}"')
        if self.sentinel_password:
            lines.append(f'requirepass "{self.sentinel_password}"')  # Sentinels use it with each other too
        conf = sentinel.workdir / "sentinel.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        """The first node as primary, the others its replicas, then the Sentinels."""
        primary, *replicas = self.nodes
        try:
            primary.start(*self._data_args(primary, None))
            for replica in replicas:
                replica.start(*self._data_args(replica, primary))
            for sentinel in self.sentinels:
                sentinel.start(str(self._sentinel_conf(sentinel, primary)), "--sentinel")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()

    def restart_as_replica(self, node: RedisNode, master_port: int) -> None:
        """Start a node that was killed again, empty, as a replica of the current master."""
        node.start(*self._data_args(node, self.node(master_port)))

    async def master_port(self) -> int | None:
        """The master's port as a majority of the Sentinels name it (``None`` while they disagree)."""
        ports: list[int] = []
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                address = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                ports.append(int(address[1]))
            except (OSError, aioredis.RedisError):
                continue
            finally:
                await client.aclose()
        best = max(set(ports), key=ports.count, default=None)
        return best if best is not None and ports.count(best) >= self.quorum else None

    async def wait_ready(self, timeout: float = 20) -> None:
        """Until every Sentinel knows the others and every replica, and every replica is in sync."""
        deadline = time.monotonic() + timeout
        while not await answer_or_false(self._ready()):
            assert time.monotonic() < deadline, "the Sentinel set did not settle"
            await asyncio.sleep(0.1)

    async def _ready(self) -> bool:
        master = await self.master_port() if self.sentinels else self.nodes[0].port
        if master is None:
            return False
        replicas = [node for node in self.nodes if node.port != master and node.process is not None]
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = await client.execute_command("SENTINEL", "MASTER", MASTER_NAME)
                known = await client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            finally:
                await client.aclose()
            fields = _pairs(state)
            if int(fields["num-other-sentinels"]) < len(self.sentinels) - 1:
                return False
            healthy = {int(fields["port"]) for fields in map(_pairs, known) if _promotable(fields)}
            if not {r.port for r in replicas} <= healthy:
                return False
        for replica in replicas:
            client = replica.client()
            try:
                info = await client.info("replication")
            finally:
                await client.aclose()
            if info.get("master_link_status") != "up" or int(info.get("master_port", 0)) != master:
                return False
        # After a diskless full sync the master streams to a replica only once it has acknowledged
        # (within a second): until then a WAIT would time out.
        client = self.node(master).client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                confirmed = (await pipe.incr("sentinel-set:ready").wait(len(replicas), 100).execute())[1]
        finally:
            await client.aclose()
        return int(confirmed) >= len(replicas)

    async def wait_failover(self, old_master: int, timeout: float = 30) -> int:
        """Seconds are the caller's to measure; the new master's port once a majority names it."""
        deadline = time.monotonic() + timeout
        while True:
            port = await self.master_port()
            if port is not None and port != old_master and await answer_or_false(self._is_master(port)):
                return port
            assert time.monotonic() < deadline, "no failover"
            await asyncio.sleep(0.05)

    async def _is_master(self, port: int) -> bool:
        client = self.node(port).client()
        try:
            return (await client.info("replication")).get("role") == "master"
        finally:
            await client.aclose()


async def answer_or_false(check: Coroutine[Any, Any, bool]) -> bool:
    """``check``'s answer; ``False`` when a node does not answer (a Sentinel closes every client
    connection of a node it reconfigures, and a node may be down)."""
    try:
        return await check
    except (OSError, aioredis.RedisError):
        return False


def _promotable(replica: dict[str, str]) -> bool:
    """A replica the Sentinel sees up, connected and in sync with its master."""
    flags = replica["flags"].split(",")
    return "s_down" not in flags and "disconnected" not in flags and replica["master-link-status"] == "ok"


def _pairs(reply: object) -> dict[str, str]:
    """A Sentinel reply of alternating field names and values (redis-py may already give a dict)."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    assert isinstance(reply, list)
    return {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
