"""A real browser for what the Prefect UI shows: Debian's Chromium driven by Playwright.

`chromium()` finds `/usr/bin/chromium`, installing Debian's package when it is
missing (as the PostgreSQL fixture does); `BrowserUnavailable` says why it cannot
be had. Playwright's own browser download is never used: it launches this one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.processes import apt_install

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class BrowserUnavailable(Exception):
    """Chromium cannot be installed or found here; the message says why."""


def chromium() -> Path:
    found = shutil.which("chromium")
    if found:
        return Path(found)
    problem = apt_install("chromium")
    if problem is not None:
        raise BrowserUnavailable(problem)
    found = shutil.which("chromium")
    if not found:
        raise BrowserUnavailable("apt-get installed chromium, but it is not on PATH")
    return Path(found)
