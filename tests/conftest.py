"""Shared fixtures: one real Prefect test server for the whole session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm_server import ScriptedLLMServer


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
