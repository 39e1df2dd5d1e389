"""PlanStore on SQLite and on a real PostgreSQL server: cache, history, migrations, concurrency."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from prefect_aether import CandidatePlan
from prefect_aether.exceptions import StoreError
from prefect_aether.store import MIGRATIONS, SCHEMA_VERSION, PlanStore, normalize_goal


def plan_of(*ids: str) -> CandidatePlan:
    return CandidatePlan.from_dict({"steps": [{"id": i, "action": "greet"} for i in ids]})


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/plans.db"
        return
    server_url: str = request.getfixturevalue("postgres")
    # One database per test, so tests never see each other's rows.
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    yield server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[PlanStore]:
    store = PlanStore(store_url, timeout=5)
    yield store
    await store.close()


async def test_plan_cache_keys_on_goal_catalog_and_input_keys(store: PlanStore) -> None:
    saved = await store.save_plan(
        plan_of("a"),
        goal="Revenue by REGION!",
        catalog_fingerprint="fp1",
        input_keys=["csv", "title"],
        planner="llm",
        usage={"total_tokens": 42},
    )
    assert saved.normalized_goal == "revenue by region"
    hit = await store.find_cached("  revenue  by region ", "fp1", ["title", "csv"])
    assert hit is not None
    assert hit.plan.plan_id == plan_of("a").plan_id
    assert (hit.planner, hit.usage, hit.input_keys) == (
        "llm",
        {"total_tokens": 42},
        ["csv", "title"],
    )
    assert hit.created_at.tzinfo is not None
    assert await store.find_cached("revenue by region", "fp2", ["csv", "title"]) is None
    assert await store.find_cached("revenue by region", "fp1", ["csv"]) is None
    assert await store.find_cached("revenue by country", "fp1", ["csv", "title"]) is None
    # The newest plan of a goal wins.
    await store.save_plan(
        plan_of("b"),
        goal="revenue by region",
        catalog_fingerprint="fp1",
        input_keys=["csv", "title"],
    )
    newest = await store.find_cached("revenue by region", "fp1", ["csv", "title"])
    assert newest is not None
    assert [s.id for s in newest.plan.steps] == ["b"]


async def test_executions_history_and_memory(store: PlanStore) -> None:
    plan = plan_of("load", "report")
    await store.save_plan(plan, goal="daily report", catalog_fingerprint="f")
    first = await store.start_execution(plan.plan_id)
    await store.finish_execution(first, ok=False, flow_run_id="run-1", error="load: \x1b[31mboom")
    second = await store.start_execution(plan.plan_id)
    await store.finish_execution(
        second, ok=True, flow_run_id="run-2", outputs={"path": "out/report.md"}
    )
    runs = await store.executions_of(plan.plan_id)
    assert [(r.flow_run_id, r.status) for r in runs] == [
        ("run-2", "Completed"),
        ("run-1", "Failed"),
    ]
    assert runs[1].error == "load: boom"
    assert runs[0].ended_at is not None
    assert runs[0].ended_at >= runs[0].started_at
    history = await store.history(goal="Daily report")
    assert [(p.plan_id, e.flow_run_id) for p, e in history] == [
        (plan.plan_id, "run-2"),
        (plan.plan_id, "run-1"),
    ]
    assert await store.history(goal="another goal") == []
    memory = await store.memory_snippets("daily report", limit=1)
    assert len(memory) == 1
    assert f"plan {plan.plan_id} (load:greet -> report:greet) completed" in memory[0]
    # Step outputs are untrusted: they never reach a planner's prompt through memory.
    assert "out/report.md" not in " ".join(memory)
    found = await store.get_plan(plan.plan_id[:6])
    assert found is not None
    assert found.plan_id == plan.plan_id


async def test_history_limit_counts_executions_however_often_a_plan_was_stored(
    store: PlanStore,
) -> None:
    plan = plan_of("a", "b")
    first = await store.save_plan(plan, goal="nightly", catalog_fingerprint="f")
    again = await store.save_plan(plan, goal="nightly", catalog_fingerprint="f")
    assert again.id == first.id  # the same plan stored again reuses its row
    await store.save_plan(plan, goal="nightly, run by hand", catalog_fingerprint="f")
    other = plan_of("c")
    await store.save_plan(other, goal="other", catalog_fingerprint="f")
    for i in range(5):
        row = await store.start_execution(plan.plan_id, execution_id=f"{i:032x}")
        await store.finish_execution(row, ok=True, flow_run_id=f"run-{i}")
    row = await store.start_execution(other.plan_id)
    await store.finish_execution(row, ok=True, flow_run_id="run-other")
    history = await store.history(limit=4)
    assert [e.flow_run_id for _, e in history] == ["run-other", "run-4", "run-3", "run-2"]
    assert [e.flow_run_id for _, e in await store.history(goal="nightly", limit=8)] == [
        f"run-{i}" for i in (4, 3, 2, 1, 0)
    ]


async def test_an_execution_id_is_one_row_however_often_it_is_resumed(store: PlanStore) -> None:
    plan = plan_of("a")
    execution = "ab" * 16
    row = await store.start_execution(plan.plan_id, execution_id=execution, holder="h:1")
    await store.finish_execution(row, ok=False, flow_run_id="run-1", error="a: boom")
    resumed = await store.start_execution(plan.plan_id, execution_id=execution, holder="h:2")
    assert resumed == row
    found = await store.find_execution(execution[:8])
    assert found is not None
    assert (found.status, found.holder, found.error, found.flow_run_id) == (
        "Running",
        "h:2",
        None,
        "run-1",
    )
    assert [r.id for r in await store.unfinished_executions()] == [row]
    await store.finish_execution(row, ok=True, flow_run_id=None)
    found = await store.find_execution(execution)
    assert found is not None
    assert (found.status, found.flow_run_id) == ("Completed", "run-1")
    assert await store.unfinished_executions() == []


async def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    store = PlanStore(f"sqlite+aiosqlite:///{tmp_path}/home/aether.db")
    await store.save_plan(plan_of("a"), goal="g", catalog_fingerprint="f")
    await store.close()
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "home" / "aether.db").stat().st_mode & 0o777 == 0o600


async def test_twenty_concurrent_writers_lose_nothing(store_url: str) -> None:
    async def writer(n: int) -> None:
        own = PlanStore(store_url, timeout=30)
        try:
            for i in range(5):
                plan = plan_of(f"w{n}-{i}")
                await own.save_plan(plan, goal=f"goal {n}", catalog_fingerprint="f")
                run = await own.start_execution(plan.plan_id)
                await own.finish_execution(run, ok=True, flow_run_id=f"{n}-{i}")
        finally:
            await own.close()

    await asyncio.gather(*(writer(n) for n in range(20)))
    reader = PlanStore(store_url)
    try:
        plans = await reader.list_plans(limit=1000)
        assert len(plans) == 100
        assert len({p.plan_id for p in plans}) == 100
        history = await reader.history(limit=1000)
        assert sorted(e.flow_run_id or "" for _, e in history) == sorted(
            f"{n}-{i}" for n in range(20) for i in range(5)
        )
        assert all(e.status == "Completed" for _, e in history)
        assert await reader.schema_version() == SCHEMA_VERSION
    finally:
        await reader.close()


async def test_upgrade_from_version_1_keeps_the_rows(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    # A database as version 1 left it, with a plan and an execution in it: made by the
    # version 1 migration itself and plain SQL, not by today's PlanStore.
    from sqlalchemy import create_engine

    from prefect_aether.store.schema import versions

    plan = plan_of("kept")
    engine = create_engine(f"sqlite:///{tmp_path}/old.db")
    with engine.begin() as conn:
        versions.create(conn)
        MIGRATIONS[0](conn)
        conn.execute(text("INSERT INTO aether_schema_version VALUES (1, '2026-01-01 00:00:00')"))
        conn.execute(
            text(
                "INSERT INTO aether_plans (plan_id, goal, normalized_goal, catalog_fingerprint,"
                " input_keys, plan_json, validation_ok, validation_summary, missing_keys,"
                " planner, usage, created_at) VALUES (:p, 'keep me', 'keep me', 'f', '', :j, 1,"
                " '', '', '', '{}', '2026-01-01 00:00:00')"
            ),
            {"p": plan.plan_id, "j": json.dumps(plan.to_dict())},
        )
        conn.execute(
            text(
                "INSERT INTO aether_executions (plan_id, flow_run_id, status, started_at,"
                " output_preview) VALUES (:p, 'r', 'Completed', '2026-01-01 00:00:01', '')"
            ),
            {"p": plan.plan_id},
        )
    engine.dispose()

    new = PlanStore(url)
    try:
        assert await new.schema_version() == len(MIGRATIONS) == 4
        history = await new.history(goal="keep me")
        assert [(p.plan_id, e.flow_run_id) for p, e in history] == [(plan.plan_id, "r")]
    finally:
        await new.close()
    names = {
        row[0]
        for row in sqlite3.connect(tmp_path / "old.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
    }
    assert {
        "ix_aether_plans_cache",
        "ix_aether_plans_goal",
        "ix_aether_executions_execution_id",
        "ix_aether_approvals_plan",
    } <= names


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/new.db"
    store = PlanStore(url)
    await store.list_plans()
    await store.close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        conn.execute("INSERT INTO aether_schema_version VALUES (99, '2030-01-01')")
    again = PlanStore(url)
    with pytest.raises(StoreError, match="schema version 99, newer than"):
        await again.list_plans()
    await again.close()


async def test_a_corrupted_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database at all" * 200)
    store = PlanStore(f"sqlite+aiosqlite:///{path}")
    with pytest.raises(StoreError, match=r"broken\.db: cannot open the schema: .*not a database"):
        await store.list_plans()
    await store.close()
    assert path.read_bytes().startswith(b"this is not a database")


async def test_a_locked_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = PlanStore(f"sqlite+aiosqlite:///{path}", timeout=0.5)
    await store.list_plans()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"database is locked.*more than 0\.5 s"):
            await store.save_plan(plan_of("x"), goal="g", catalog_fingerprint="f")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    saved = await store.save_plan(plan_of("x"), goal="g", catalog_fingerprint="f")
    assert saved.id >= 1
    await store.close()


def test_bad_urls_and_unreachable_servers_are_clear_errors() -> None:
    with pytest.raises(StoreError, match="invalid plan store URL"):
        PlanStore("not a url")
    store = PlanStore("postgresql+asyncpg://u:secret-pw@127.0.0.1:9/db", timeout=2)
    assert "secret-pw" not in repr(store)
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9/db: cannot open the schema") as info:
        asyncio.run(store.list_plans())
    assert "secret-pw" not in str(info.value)


def test_normalize_goal() -> None:
    assert normalize_goal("Build the REPORT,  then save it.") == "build the report then save it"
    assert normalize_goal("") == ""
