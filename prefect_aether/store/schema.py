"""The plan store's tables and their forward migrations (private to the store).

Each migration creates exactly what it says, from its own column lists: the
`Table` objects describe the current schema, so `CreateTable` on them would
create columns a later migration adds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from prefect_aether.exceptions import StoreError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "apply_migrations",
    "approvals",
    "executions",
    "plans",
    "versions",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _plan_columns() -> list[Column[object]]:
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("plan_id", String(32), nullable=False),
        Column("goal", Text, nullable=False),
        Column("normalized_goal", Text, nullable=False),
        Column("catalog_fingerprint", String(64), nullable=False),
        Column("input_keys", Text, nullable=False, default=""),
        Column("plan_json", Text, nullable=False),
        Column("validation_ok", Boolean, nullable=False),
        Column("validation_summary", Text, nullable=False, default=""),
        Column("missing_keys", Text, nullable=False, default=""),
        Column("planner", String(64), nullable=False, default=""),
        Column("usage", JSON, nullable=False, default=dict),
        Column("created_at", DateTime(timezone=True), nullable=False),
    ]


def _execution_columns_v1() -> list[Column[object]]:
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("plan_id", String(32), nullable=False),
        Column("flow_run_id", String(64), nullable=True),
        Column("status", String(32), nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("ended_at", DateTime(timezone=True), nullable=True),
        Column("output_preview", Text, nullable=False, default=""),
        Column("error", Text, nullable=True),
    ]


# v3: an execution's own id (tag `execution:<id>`), and who runs it (host:pid), so a
# row whose process died can be told from one still running.
_EXECUTION_COLUMNS_V3 = (("execution_id", 32), ("holder", 128))

metadata = MetaData()
plans = Table("aether_plans", metadata, *_plan_columns())
executions = Table(
    "aether_executions",
    metadata,
    *_execution_columns_v1(),
    *(Column(name, String(size), nullable=True) for name, size in _EXECUTION_COLUMNS_V3),
)
approvals = Table(
    "aether_approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("plan_id", String(32), nullable=False),
    Column("flow_run_id", String(64), nullable=True),
    Column("approved", Boolean, nullable=False),
    Column("approver", String(200), nullable=False, default=""),
    Column("comment", Text, nullable=False, default=""),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)
versions = Table(
    "aether_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

_CACHE_INDEX = Index(
    "ix_aether_plans_cache",
    plans.c.normalized_goal,
    plans.c.catalog_fingerprint,
    plans.c.input_keys,
    plans.c.created_at,
)
_EXEC_INDEX = Index("ix_aether_executions_plan", executions.c.plan_id, executions.c.started_at)
_GOAL_INDEX = Index("ix_aether_plans_goal", plans.c.normalized_goal, plans.c.created_at)
_STARTED_INDEX = Index("ix_aether_executions_started", executions.c.started_at)
_PLAN_ID_INDEX = Index("ix_aether_plans_plan_id", plans.c.plan_id)
_EXECUTION_ID_INDEX = Index(
    "ix_aether_executions_execution_id", executions.c.execution_id, unique=True
)


def _v1(conn: Connection) -> None:
    """Plans and executions, with the cache and per-plan indices."""
    v1 = MetaData()
    for table in (
        Table(plans.name, v1, *_plan_columns()),
        Table(executions.name, v1, *_execution_columns_v1()),
    ):
        conn.execute(CreateTable(table))
    for index in (_CACHE_INDEX, _EXEC_INDEX, _PLAN_ID_INDEX):
        conn.execute(CreateIndex(index))


def _v2(conn: Connection) -> None:
    """History by goal: the newest executions of one goal's plans."""
    for index in (_GOAL_INDEX, _STARTED_INDEX):
        conn.execute(CreateIndex(index))


def _v3(conn: Connection) -> None:
    """Executions get their own id and their holder."""
    for name, size in _EXECUTION_COLUMNS_V3:
        conn.execute(text(f"ALTER TABLE {executions.name} ADD COLUMN {name} VARCHAR({size})"))
    conn.execute(CreateIndex(_EXECUTION_ID_INDEX))


def _v4(conn: Connection) -> None:
    """Approval decisions: who approved or rejected which plan, with their comment."""
    conn.execute(CreateTable(approvals))
    conn.execute(CreateIndex(Index("ix_aether_approvals_plan", approvals.c.plan_id)))


#: Forward migrations, in order; the schema version is their count.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4]
SCHEMA_VERSION = len(MIGRATIONS)


def apply_migrations(conn: Connection) -> None:
    """Bring the schema to `SCHEMA_VERSION`, one recorded migration at a time."""
    if conn.dialect.name == "postgresql":
        # Two processes opening a new database at once: one migrates, the other waits.
        conn.execute(text("SELECT pg_advisory_xact_lock(4242424242)"))
    if not inspect(conn).has_table(versions.name):
        versions.create(conn)
    current = int(conn.scalar(select(func.max(versions.c.version))) or 0)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"the plan store has schema version {current}, newer than this prefect-aether "
            f"knows ({SCHEMA_VERSION}); upgrade prefect-aether"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
        conn.execute(insert(versions).values(version=version, applied_at=_now()))
