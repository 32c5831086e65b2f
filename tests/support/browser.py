"""A real headless Chromium driven through selenium, from async tests: each step runs in a thread, so
the test's event loop (the simulators live in it) keeps serving while the browser waits.

Chromium and its chromedriver are Debian packages (``chromium``, ``chromium-driver``) that
``make install-dev`` installs through ``scripts/system-packages``; selenium is told where both are,
so it never looks for or downloads a browser. Without them the test fails saying what to install.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = ["Browser", "browser_paths"]

_T = TypeVar("_T")
_WIDTH = 1360


def browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver, or a failure that says how to get them (the browser tests are never
    skipped: CI installs both)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path)
        pytest.fail(
            f"the console's browser tests need {missing}: run `make install-dev` as root, or "
            "`scripts/system-packages chromium chromedriver` (Debian: apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    return chromium, driver


class Browser:
    """One headless Chromium window on ``base_url``."""

    def __init__(self, base_url: str, screenshots: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = browser_paths()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI containers run as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={_WIDTH},900",
            "--lang=en-GB",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        self.base_url = base_url
        self.screenshots = screenshots

    async def _run(self, step: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(step)

    async def go(self, path: str) -> None:
        await self._run(lambda: self.driver.get(self.base_url + path))

    async def path(self) -> str:
        """The current URL's path and query."""
        url: str = await self._run(lambda: self.driver.current_url)
        return url.removeprefix(self.base_url)

    async def fill(self, selector: str, value: str) -> None:
        def step() -> None:
            field = self.driver.find_element("css selector", selector)
            field.clear()
            field.send_keys(value)

        await self._run(step)

    async def click(self, selector: str) -> None:
        await self._run(lambda: self.driver.find_element("css selector", selector).click())

    async def text(self, selector: str = "main") -> str:
        return await self._run(lambda: str(self.driver.find_element("css selector", selector).text))

    async def texts(self, selector: str) -> list[str]:
        return await self._run(lambda: [str(e.text) for e in self.driver.find_elements("css selector", selector)])

    async def script(self, source: str) -> Any:
        """DevTools runs this outside the page's content security policy, as an attacker's page could not."""
        return await self._run(lambda: self.driver.execute_script(source))

    async def wait_for_text(self, selector: str, wanted: str, timeout: float = 20) -> str:
        """Wait (the page's own script refreshing it, or a navigation) until ``selector`` shows ``wanted``."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def shown(driver: Any) -> str | bool:
            try:
                found = " ".join(str(e.text) for e in driver.find_elements("css selector", selector))
            except StaleElementReferenceException:  # the region was swapped while being read
                return False
            return found if wanted in found else False

        result: str = await self._run(
            lambda: WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                shown, f"{selector!r} never showed {wanted!r}"
            )
        )
        return result

    async def wait_for_path(self, prefix: str, timeout: float = 20) -> str:
        """Wait until the page's path (and query) starts with ``prefix``: a form's answer has loaded."""
        from selenium.webdriver.support.ui import WebDriverWait

        def arrived(driver: Any) -> str | bool:
            path = str(driver.current_url).removeprefix(self.base_url)
            ready = driver.execute_script("return document.readyState") == "complete"
            return path if ready and path.startswith(prefix) else False

        path: str = await self._run(
            lambda: WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
                arrived, f"never arrived at {prefix!r}"
            )
        )
        return path

    async def screenshot(self, name: str) -> Path:
        """The whole page, not only the window, as ``<screenshots>/<name>.png`` (DevTools' own capture)."""

        def step() -> Path:
            metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
            size = metrics["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": _WIDTH, "height": min(int(size["height"]), 6000), "scale": 1}
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
            target = self.screenshots / f"{name}.png"
            target.write_bytes(base64.b64decode(shot["data"]))
            return target

        self.screenshots.mkdir(parents=True, exist_ok=True)
        return await self._run(step)

    def quit(self) -> None:
        self.driver.quit()
