"""Send webhooks at a steady rate while costing the machine as little CPU as a load generator can.

The benchmark's load generator shares two cores with the bridge, Redis and the simulators. An
aiohttp client spends about 0.2 ms of CPU per request, 20-30 % of a core at 1,000 requests/s, taken
from the processes being measured (in production the sender is Magnews, on its own machines). This
one writes prebuilt HTTP/1.1 requests on 64 keep-alive connections and reads only each response's
status line and length.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["SendResult", "send_paced"]


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: int  # requests answered 200
    failed: int  # answered otherwise, or never answered
    cpu_ms_per_request: float


class _Connection(asyncio.Protocol):
    """One keep-alive connection; requests may pipeline, and the server answers them in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_flight = 0
        self.ok = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.in_flight += 1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            mark = head.find(b"content-length:")
            length = int(head[mark + 15 :].split(b"\r\n", 1)[0]) if mark >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still coming
            del self.buffer[: end + 4 + length]
            self.in_flight -= 1
            self.ok += head.startswith(b"http/1.1 200")

    def connection_lost(self, exc: Exception | None) -> None:
        self.in_flight = 0  # what it still waited for is counted as failed


async def send_paced(
    url: str, body: Callable[[int], bytes], *, rate: int, seconds: int, connections: int = 64
) -> SendResult:
    """POST ``body(n)`` for n in ``range(rate * seconds)``, ``rate`` a second, round robin over
    ``connections``; waits up to 60 s for the last answers."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    loop = asyncio.get_running_loop()
    pool = [(await loop.create_connection(_Connection, host, port))[1] for _ in range(connections)]
    cpu = time.process_time()
    total, sent, started = rate * seconds, 0, loop.time()
    while sent < total:
        due = min(total, int((loop.time() - started) * rate) + 1)
        for number in range(sent, due):
            payload = body(number)
            pool[number % connections].send(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        sent = due
        await asyncio.sleep(max(0.001, started + sent / rate - loop.time()))  # until the next is due
    deadline = loop.time() + 60
    while any(conn.in_flight for conn in pool) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    cpu_ms = (time.process_time() - cpu) * 1000
    for conn in pool:
        assert conn.transport is not None
        conn.transport.close()
    ok = sum(conn.ok for conn in pool)
    return SendResult(ok=ok, failed=total - ok, cpu_ms_per_request=cpu_ms / max(total, 1))
