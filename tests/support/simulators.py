"""The simulators seen through their control routes (``/_sim/...``), as a test outside them would."""

from __future__ import annotations

from typing import Any

import aiohttp

__all__ = ["set_faults", "sim_requests", "sim_state"]


async def sim_requests(base_url: str, path: str, method: str = "POST") -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/_sim/requests", params={"path": path, "method": method}) as response:
            records: list[dict[str, Any]] = await response.json()
    return records


async def sim_state(base_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_sim/state") as response:
        state: dict[str, Any] = await response.json()
    return state


async def set_faults(base_url: str, **faults: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/_sim/faults", json=faults) as response:
            assert response.status == 200
