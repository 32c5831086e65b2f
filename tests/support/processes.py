"""Real ``magbridge`` (and ``arq``) processes for tests where a process must die, be signalled or be the
entry point under test."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from config.settings import Settings

__all__ = ["settings_env", "start_arq", "start_process", "stop_process"]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process build these same settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAGBRIDGE_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(str(item) for item in value)
        env[f"MAGBRIDGE_{name.upper()}"] = str(value)
    env.update(extra)
    return env


async def start_process(command: str, settings: Settings, **extra: str) -> asyncio.subprocess.Process:
    """``python -m bridge.cli <command>`` with the settings in its environment; output is discarded."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", command,
        env=settings_env(settings, **extra),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def start_arq(settings: Settings, *argv: str, cwd: Path, output: Path) -> asyncio.subprocess.Process:
    """``python -m arq *argv`` (arq's own command line) with the settings in its environment, run in ``cwd``
    (away from any ``.env`` of the working tree); its output goes to ``output``."""
    with output.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "arq", *argv, cwd=cwd, env=settings_env(settings), stdout=sink, stderr=sink
        )


async def stop_process(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 60) -> Any:
    if process.returncode is None:
        process.send_signal(sig)
    return await asyncio.wait_for(process.wait(), timeout)
