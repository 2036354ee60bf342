"""Debian's chromium, driven by Playwright (which cannot download its own browsers here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"


@asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    """A headless chromium for the block; fails saying how to install it when it is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing; run scripts/ensure-chromium.sh (make test runs it)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        await chromium.close()
