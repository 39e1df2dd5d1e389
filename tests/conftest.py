"""Shared fixtures: one real Prefect test server for the whole session."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import ARGS, BrowserUnavailable, chromium
from tests.llm_server import ScriptedLLMServer
from tests.processes import ALLOWED_MODULES, PostgresServer, PostgresUnavailable, PrefectServer

# What the deployable flows may import when the tests call them in this process.
os.environ["PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES"] = ALLOWED_MODULES


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real Prefect API (temporary SQLite database) with results kept in a temp dir."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings(
            updates={PREFECT_LOCAL_STORAGE_PATH: storage, PREFECT_SERVER_ANALYTICS_ENABLED: False}
        ),
        prefect_test_harness(server_startup_timeout=60),
    ):
        # One API call from the main thread first: threads racing to make the first
        # call could otherwise each start an ephemeral server.
        from prefect.client.orchestration import get_client

        async def ping() -> None:
            async with get_client() as client:
                await client.hello()

        asyncio.run(ping())
        yield


@pytest.fixture
def counter_dir(tmp_path: Path) -> Path:
    """A directory where test flows record each real execution as a file."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def llm_server() -> Iterator[ScriptedLLMServer]:
    """A chat-completions server on 127.0.0.1 answering from a scripted queue."""
    server = ScriptedLLMServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def scripted_answers_are_heard(request: pytest.FixtureRequest) -> Iterator[None]:
    """With a scripted LLM, the model is asked for every goal: the heuristic draft is not
    trusted in its place (`planner_trust_draft`), so the scripted answers are what the
    tests exercise. The rule itself is tested with `trust_draft=True`."""
    if "llm_server" not in request.fixturenames:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_INTEGRATIONS_AETHER_PLANNER_TRUST_DRAFT", "false")
        yield


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` on 127.0.0.1, plus a process serving tests/deploy_flows.py.

    Tests talk to it inside `use_server(real_server)`.
    """
    server = PrefectServer(tmp_path_factory.mktemp("prefect-real"))
    runs = tmp_path_factory.mktemp("deployment-runs")
    try:
        serving = server.start(
            [sys.executable, "-m", "tests.deploy_flows"], "serve", AETHER_TEST_RUNS=str(runs)
        )
        serving.wait_until(
            lambda: deployment_count(server.api_url) >= 4, 120, "serve tests/deploy_flows.py"
        )
        server.runs = runs
        yield server
    finally:
        # Send what is still queued for this server while it is up, then stop it.
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)
        server.stop()


def deployment_count(api_url: str) -> int:
    response = httpx.post(f"{api_url}/deployments/count", json={}, timeout=5)
    return int(response.json())


@contextmanager
def use_server(server: PrefectServer) -> Iterator[None]:
    """Point this process's Prefect client at `server` (and at its result storage)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    with temporary_settings(
        updates={PREFECT_API_URL: server.api_url, PREFECT_LOCAL_STORAGE_PATH: server.storage}
    ):
        yield


@pytest.fixture(scope="session", autouse=True)
def plan_store_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every PlanStore() of the test session writes to a temporary SQLite file."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('store')}/aether.db"
    previous = os.environ.get("PREFECT_INTEGRATIONS_AETHER_STORE_URL")
    os.environ["PREFECT_INTEGRATIONS_AETHER_STORE_URL"] = url
    yield url
    if previous is None:
        os.environ.pop("PREFECT_INTEGRATIONS_AETHER_STORE_URL", None)
    else:
        os.environ["PREFECT_INTEGRATIONS_AETHER_STORE_URL"] = previous


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 (installed from Debian's packages if missing)."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the reliability figures the tests gathered (tests/figures.py)."""
    import json

    from tests.figures import FIGURES, summary

    if FIGURES:
        terminalreporter.section("reliability figures")
        terminalreporter.write_line(json.dumps(summary(), indent=2))


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start` with its UIs (classic at `/`, new under `/v2/`), when a
    browser can be had to look at them (see `page`)."""
    try:
        chromium()
    except BrowserUnavailable as exc:
        pytest.skip(f"Chromium unavailable: {exc}")
    server = PrefectServer(tmp_path_factory.mktemp("prefect-ui"), ui=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A page of headless Chromium (Debian's, installed when missing) driven by Playwright."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium()), args=ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def real_llm() -> Iterator[str]:
    """A real model on loopback: llama.cpp's server and a 1.5B instruct model, installed
    into a cache outside the repository (tests/llama.py); its base URL."""
    from tests.llama import LlamaServer

    server = LlamaServer()
    try:
        yield server.base_url
    finally:
        server.stop()
