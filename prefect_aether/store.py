"""`PlanStore`: plans, their executions and a plan cache, on SQLAlchemy's async engine.

By default a SQLite file under PREFECT_HOME (`aether.db`); the
`PREFECT_INTEGRATIONS_AETHER_STORE_URL` setting selects another database, such
as PostgreSQL (`postgresql+asyncpg://user:password@host/db`). The schema is
versioned: opening a store applies the forward migrations it lacks, in one
transaction, so an upgrade never loses rows; a store written by a newer
version is refused rather than touched.

Examples:
    >>> import asyncio, tempfile
    >>> from prefect_aether import CandidatePlan
    >>> async def demo() -> list[str]:
    ...     store = PlanStore(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/plans.db")
    ...     plan = CandidatePlan.from_dict({"steps": [{"id": "a", "action": "x"}]})
    ...     await store.save_plan(plan, goal="Do X", catalog_fingerprint="f1")
    ...     found = await store.find_cached("do x", "f1", [])
    ...     await store.close()
    ...     return [step.id for step in found.plan.steps]
    >>> asyncio.run(demo())
    ['a']
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, Field
from sqlalchemy import (
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from prefect_aether._report import preview, sanitize
from prefect_aether._store_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    apply_migrations,
    approvals,
    executions,
    plans,
    versions,
)
from prefect_aether.exceptions import StoreError
from prefect_aether.plan import CandidatePlan
from prefect_aether.settings import AetherSettings
from prefect_aether.validate import ValidationResult

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ExecutionRecord",
    "PlanRecord",
    "PlanStore",
    "normalize_goal",
]

T = TypeVar("T")

_WORDS = re.compile(r"[\w$-]+", re.UNICODE)


def normalize_goal(goal: str) -> str:
    """The cache key form of a goal: lower case, words only, single spaces.

    Examples:
        >>> normalize_goal("  Revenue by REGION, then the report! ")
        'revenue by region then the report'
    """
    return " ".join(_WORDS.findall(goal.casefold()))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite gives back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


class PlanRecord(BaseModel):
    """A stored plan.

    Examples:
        >>> PlanRecord(id=1, plan_id="p", goal="g", normalized_goal="g",
        ...            catalog_fingerprint="f", plan=CandidatePlan(steps=[]),
        ...            validation_ok=True, created_at=_now()).input_keys
        []
    """

    id: int = Field(description="Row id.")
    plan_id: str = Field(description="The plan's content hash.")
    goal: str = Field(description="The goal as asked.")
    normalized_goal: str = Field(description="The goal as the cache compares it.")
    catalog_fingerprint: str = Field(description="Fingerprint of the catalog it was planned on.")
    input_keys: list[str] = Field(default_factory=list, description="User input keys given.")
    plan: CandidatePlan = Field(description="The plan.")
    validation_ok: bool = Field(description="Whether it was valid as planned.")
    validation_summary: str = Field(default="", description="`ValidationResult.summary()`.")
    missing_keys: list[str] = Field(default_factory=list, description="User values it needed.")
    planner: str = Field(default="", description="Which planner made it.")
    usage: dict[str, int] = Field(default_factory=dict, description="LLM tokens spent.")
    created_at: dt.datetime = Field(description="When it was stored (UTC).")


class ExecutionRecord(BaseModel):
    """One execution of a stored plan.

    Examples:
        >>> ExecutionRecord(id=1, plan_id="p", status="Running", started_at=_now()).error is None
        True
    """

    id: int = Field(description="Row id.")
    plan_id: str = Field(description="The plan executed.")
    flow_run_id: str | None = Field(default=None, description="The plan's flow run.")
    status: str = Field(description="`Running`, `Completed` or `Failed`.")
    started_at: dt.datetime = Field(description="Start (UTC).")
    ended_at: dt.datetime | None = Field(default=None, description="End (UTC), once ended.")
    output_preview: str = Field(default="", description="Sanitized, truncated outputs.")
    error: str | None = Field(default=None, description="First error, if it failed.")
    execution_id: str | None = Field(
        default=None, description="The execution's id (tag `execution:<id>` on its flow run)."
    )
    holder: str | None = Field(default=None, description="`host:pid` of the process running it.")


def _keys(keys: Iterable[str]) -> str:
    return ",".join(sorted(set(keys)))


def _split(value: str | None) -> list[str]:
    return [k for k in (value or "").split(",") if k]


class PlanStore:
    """Plans, executions and the plan cache in one SQL database.

    Args:
        url: SQLAlchemy async URL; the `store_url` setting, else
            `sqlite+aiosqlite:///<PREFECT_HOME>/aether.db`.
        timeout: Seconds to wait for a lock held by another writer (the
            `store_timeout` setting by default).

    Raises:
        StoreError: The URL is malformed (raised at once), or, on first use,
            the database is not a database, is locked past `timeout`, cannot
            be reached, or was written by a newer prefect-aether.

    Examples:
        >>> PlanStore("sqlite+aiosqlite:////tmp/x.db").url
        'sqlite+aiosqlite:////tmp/x.db'
    """

    def __init__(self, url: str | None = None, *, timeout: float | None = None) -> None:
        settings = AetherSettings()
        self._block: str | None = None
        if url is None and not settings.store_url and settings.store_block:
            # The URL (with its password) is read from the block when first connecting.
            self._block = settings.store_block
        elif url is None:
            url = settings.store_url or _default_url()
        self.timeout = timeout if timeout is not None else settings.store_timeout
        self._engine: AsyncEngine | None = None
        self._ready: asyncio.Lock | None = None
        self._migrated = False
        self._private: Path | None = None
        self.url = ""
        self._display = f"block {self._block!r}"
        self._sqlite = False
        if url is not None:
            self._use(url)

    def _use(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"invalid plan store URL: {exc}") from None
        self.url = url
        self._display = parsed.render_as_string(hide_password=True)
        self._sqlite = parsed.get_backend_name() == "sqlite"

    def __repr__(self) -> str:
        return f"PlanStore({self._display!r})"

    # -- connection and schema ----------------------------------------------------------

    def _make_engine(self) -> AsyncEngine:
        if self._sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                # Plans and their inputs are private to the user: 0700 folder, 0600 file.
                folder = Path(path).expanduser().parent
                if not folder.exists():
                    folder.mkdir(parents=True, mode=0o700)
                self._private = Path(path).expanduser()
            engine = create_async_engine(self.url, connect_args={"timeout": self.timeout})

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                # Transactions are begun by the "begin" hook below, not by the driver.
                dbapi_conn.isolation_level = None
                cursor = dbapi_conn.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
                cursor.close()

            @event.listens_for(engine.sync_engine, "begin")
            def _immediate(conn: Any) -> None:
                # Take the write lock up front: two readers upgrading to writers at once
                # would otherwise fail with "database is locked" without waiting.
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        backend = make_url(self.url).get_backend_name()
        # asyncpg's connect timeout; other drivers name theirs differently.
        connect_args = {"timeout": self.timeout} if backend == "postgresql" else {}
        return create_async_engine(self.url, pool_pre_ping=True, connect_args=connect_args)

    async def _guard(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work`, turning database errors into a `StoreError` that says what failed."""
        try:
            return await work()
        except StoreError:
            raise
        except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
            raise StoreError(self._explain(what, exc)) from None

    def _explain(self, what: str, exc: BaseException) -> str:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        hint = ""
        lowered = detail.lower()
        if "locked" in lowered or "busy" in lowered:
            hint = f" (another writer held the lock for more than {self.timeout:g} s)"
        elif "not a database" in lowered or "malformed" in lowered:
            hint = " (the file is corrupted or is not a SQLite database; move it away)"
        return f"plan store {self._display}: cannot {what}: {detail}{hint}"

    async def _connect(self) -> AsyncEngine:
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self._engine is None:
                if self._block is not None and not self.url:
                    self._use(await _block_url(self._block))
                self._engine = self._make_engine()
            if not self._migrated:
                await self._guard("open the schema", self._migrate)
                self._migrated = True
                if self._private is not None:
                    for suffix in ("", "-wal", "-shm"):
                        private = self._private.with_name(self._private.name + suffix)
                        if private.exists():
                            private.chmod(0o600)
        return self._engine

    async def _migrate(self) -> None:
        assert self._engine is not None
        # SQLite answers "database is locked" at once, whatever the busy timeout, when
        # several new connections switch the same file to WAL together: retry until
        # the store's timeout.
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(apply_migrations)
                return
            except DBAPIError as exc:
                locked = "locked" in str(exc.orig or exc).lower()
                if not (self._sqlite and locked) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def schema_version(self) -> int:
        """The schema version of the database (after opening, the current one)."""
        engine = await self._connect()

        async def read() -> int:
            async with engine.connect() as conn:
                found = await conn.scalar(select(func.max(versions.c.version)))
                return int(found or 0)

        return await self._guard("read the schema version", read)

    async def close(self) -> None:
        """Release the connections."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
            self._migrated = False

    async def _write(self, what: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        engine = await self._connect()

        async def run() -> T:
            async with engine.begin() as conn:
                return await work(conn)

        return await self._guard(what, run)

    async def _read(self, what: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        engine = await self._connect()

        async def run() -> T:
            async with engine.connect() as conn:
                return await work(conn)

        return await self._guard(what, run)

    # -- plans --------------------------------------------------------------------------

    async def save_plan(
        self,
        plan: CandidatePlan,
        *,
        goal: str,
        catalog_fingerprint: str,
        input_keys: Iterable[str] = (),
        validation: ValidationResult | None = None,
        planner: str = "",
        usage: Mapping[str, int] | None = None,
    ) -> PlanRecord:
        """Store a plan planned for `goal` on a catalog with this fingerprint."""
        row = {
            "plan_id": plan.plan_id,
            "goal": goal,
            "normalized_goal": normalize_goal(goal),
            "catalog_fingerprint": catalog_fingerprint,
            "input_keys": _keys(input_keys),
            "plan_json": json.dumps(plan.to_dict(), sort_keys=True),
            "validation_ok": bool(validation.ok) if validation is not None else True,
            "validation_summary": validation.summary() if validation is not None else "",
            "missing_keys": _keys(validation.missing_user_bindings if validation else ()),
            "planner": planner,
            "usage": dict(usage or {}),
            "created_at": _now(),
        }

        same = select(plans).where(
            plans.c.plan_id == row["plan_id"],
            plans.c.normalized_goal == row["normalized_goal"],
            plans.c.catalog_fingerprint == row["catalog_fingerprint"],
            plans.c.input_keys == row["input_keys"],
            plans.c.plan_json == row["plan_json"],
        )

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            # The same plan stored again for the same goal and catalog is the same row.
            found = (await conn.execute(same.limit(1))).mappings().first()
            if found is not None:
                return dict(found)
            result = await conn.execute(insert(plans).values(**row).returning(plans.c.id))
            return {**row, "id": int(result.scalar_one())}

        return _plan_record(await self._write(f"save plan {plan.plan_id}", work))

    async def find_cached(
        self, goal: str, catalog_fingerprint: str, input_keys: Iterable[str]
    ) -> PlanRecord | None:
        """The newest plan for the same normalized goal, catalog and set of input keys."""
        query = (
            select(plans)
            .where(
                plans.c.normalized_goal == normalize_goal(goal),
                plans.c.catalog_fingerprint == catalog_fingerprint,
                plans.c.input_keys == _keys(input_keys),
            )
            .order_by(plans.c.created_at.desc(), plans.c.id.desc())
            .limit(1)
        )

        async def work(conn: AsyncConnection) -> PlanRecord | None:
            row = (await conn.execute(query)).mappings().first()
            return _plan_record(dict(row)) if row is not None else None

        return await self._read("look up the plan cache", work)

    async def get_plan(self, plan_id: str) -> PlanRecord | None:
        """The newest stored record of this plan id (a prefix of 4+ characters works)."""
        if len(plan_id) >= 16:
            condition = plans.c.plan_id == plan_id
        elif len(plan_id) >= 4:
            condition = plans.c.plan_id.startswith(plan_id, autoescape=True)
        else:
            return None
        query = select(plans).where(condition).order_by(plans.c.id.desc()).limit(2)

        async def work(conn: AsyncConnection) -> PlanRecord | None:
            rows = (await conn.execute(query)).mappings().all()
            if not rows:
                return None
            if len({r["plan_id"] for r in rows}) > 1:
                raise StoreError(f"plan id prefix {plan_id!r} is ambiguous; give more characters")
            return _plan_record(dict(rows[0]))

        return await self._read(f"read plan {plan_id}", work)

    async def list_plans(self, *, goal: str | None = None, limit: int = 20) -> list[PlanRecord]:
        """The newest plans, optionally of one goal (compared normalized)."""
        query = select(plans).order_by(plans.c.created_at.desc(), plans.c.id.desc()).limit(limit)
        if goal is not None:
            query = query.where(plans.c.normalized_goal == normalize_goal(goal))

        async def work(conn: AsyncConnection) -> list[PlanRecord]:
            return [_plan_record(dict(r)) for r in (await conn.execute(query)).mappings()]

        return await self._read("list plans", work)

    # -- executions ---------------------------------------------------------------------

    async def start_execution(
        self, plan_id: str, *, execution_id: str | None = None, holder: str | None = None
    ) -> int:
        """Record that an execution of `plan_id` started (or, for an `execution_id`
        already recorded, resumed); returns its row id."""
        values = {"status": "Running", "started_at": _now(), "holder": holder}

        async def work(conn: AsyncConnection) -> int:
            if execution_id is not None:
                known = await conn.scalar(
                    select(executions.c.id).where(executions.c.execution_id == execution_id)
                )
                if known is not None:
                    await conn.execute(
                        update(executions)
                        .where(executions.c.id == known)
                        .values(status="Running", ended_at=None, error=None, holder=holder)
                    )
                    return int(known)
            result = await conn.execute(
                insert(executions)
                .values(plan_id=plan_id, execution_id=execution_id, output_preview="", **values)
                .returning(executions.c.id)
            )
            return int(result.scalar_one())

        return await self._write(f"record the start of plan {plan_id}", work)

    async def finish_execution(
        self,
        execution_id: int,
        *,
        ok: bool,
        flow_run_id: str | None,
        outputs: Any = None,
        error: str | None = None,
        status: str | None = None,
    ) -> None:
        """Record how an execution ended (outputs are kept as a sanitized preview)."""
        values = {
            "status": status or ("Completed" if ok else "Failed"),
            **({"flow_run_id": flow_run_id} if flow_run_id else {}),
            "ended_at": _now(),
            "output_preview": preview(outputs, 500) if outputs is not None else "",
            "error": sanitize(error, 1000) if error else None,
        }

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                update(executions).where(executions.c.id == execution_id).values(**values)
            )

        await self._write(f"record the end of execution {execution_id}", work)

    async def executions_of(self, plan_id: str, *, limit: int = 20) -> list[ExecutionRecord]:
        """The newest executions of a plan."""
        query = (
            select(executions)
            .where(executions.c.plan_id == plan_id)
            .order_by(executions.c.started_at.desc(), executions.c.id.desc())
            .limit(limit)
        )

        async def work(conn: AsyncConnection) -> list[ExecutionRecord]:
            return [_execution_record(dict(r)) for r in (await conn.execute(query)).mappings()]

        return await self._read(f"read executions of plan {plan_id}", work)

    async def history(
        self, *, goal: str | None = None, limit: int = 20
    ) -> list[tuple[PlanRecord, ExecutionRecord]]:
        """The newest `limit` executions (of one goal's plans, if given), each with the
        newest stored record of its plan."""
        query = select(executions).order_by(executions.c.started_at.desc(), executions.c.id.desc())
        if goal is not None:
            of_goal = select(plans.c.plan_id).where(plans.c.normalized_goal == normalize_goal(goal))
            query = query.where(executions.c.plan_id.in_(of_goal))
        query = query.limit(limit)

        async def work(conn: AsyncConnection) -> list[tuple[PlanRecord, ExecutionRecord]]:
            runs = [_execution_record(dict(r)) for r in (await conn.execute(query)).mappings()]
            wanted = sorted({r.plan_id for r in runs})
            newest: dict[str, PlanRecord] = {}
            if wanted:
                rows = await conn.execute(
                    select(plans).where(plans.c.plan_id.in_(wanted)).order_by(plans.c.id)
                )
                for row in rows.mappings():
                    newest[row["plan_id"]] = _plan_record(dict(row))
            return [(newest[r.plan_id], r) for r in runs if r.plan_id in newest]

        return await self._read("read the history", work)

    async def find_execution(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this id (a prefix of 8+ characters works)."""
        if len(execution_id) >= 32:
            condition = executions.c.execution_id == execution_id
        elif len(execution_id) >= 8:
            condition = executions.c.execution_id.startswith(execution_id, autoescape=True)
        else:
            return None
        query = select(executions).where(condition).order_by(executions.c.id.desc()).limit(2)

        async def work(conn: AsyncConnection) -> ExecutionRecord | None:
            rows = (await conn.execute(query)).mappings().all()
            if len(rows) > 1:
                raise StoreError(
                    f"execution id prefix {execution_id!r} is ambiguous; give more characters"
                )
            return _execution_record(dict(rows[0])) if rows else None

        return await self._read(f"read execution {execution_id}", work)

    async def unfinished_executions(self, *, limit: int = 100) -> list[ExecutionRecord]:
        """Executions recorded as running, or interrupted (they gave up while the Prefect
        API was down, so their flow run may still say running): candidates to reconcile."""
        query = (
            select(executions)
            .where(executions.c.status.in_(["Running", "Interrupted"]))
            .order_by(executions.c.id.desc())
            .limit(limit)
        )

        async def work(conn: AsyncConnection) -> list[ExecutionRecord]:
            return [_execution_record(dict(r)) for r in (await conn.execute(query)).mappings()]

        return await self._read("read unfinished executions", work)

    async def set_execution_status(
        self,
        row_id: int,
        status: str,
        *,
        error: str | None = None,
        flow_run_id: str | None = None,
    ) -> None:
        """Correct an execution's status (reconciliation)."""
        values: dict[str, Any] = {"status": status}
        if error is not None:
            values["error"] = sanitize(error, 1000)
        if flow_run_id is not None:
            values["flow_run_id"] = flow_run_id
        if status != "Running":
            values["ended_at"] = _now()

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(update(executions).where(executions.c.id == row_id).values(**values))

        await self._write(f"update execution {row_id}", work)

    async def successful_plans(self, *, limit: int = 200) -> list[PlanRecord]:
        """The plans of the newest completed executions, one record per plan id."""
        newest = (
            select(executions.c.plan_id, func.max(executions.c.id).label("last"))
            .where(executions.c.status == "Completed")
            .group_by(executions.c.plan_id)
            .order_by(func.max(executions.c.id).desc())
            .limit(limit)
        )

        async def work(conn: AsyncConnection) -> list[PlanRecord]:
            ids = [row[0] for row in (await conn.execute(newest)).all()]
            if not ids:
                return []
            rows = await conn.execute(
                select(plans).where(plans.c.plan_id.in_(ids)).order_by(plans.c.id)
            )
            latest: dict[str, PlanRecord] = {}
            for row in rows.mappings():
                latest[row["plan_id"]] = _plan_record(dict(row))
            return [latest[i] for i in ids if i in latest]

        return await self._read("read plans that ran successfully", work)

    async def record_approval(
        self,
        plan_id: str,
        *,
        approved: bool,
        approver: str = "",
        comment: str = "",
        flow_run_id: str | None = None,
    ) -> None:
        """Record a person's decision on a plan (the audit trail of approvals)."""
        row = {
            "plan_id": plan_id,
            "flow_run_id": flow_run_id,
            "approved": approved,
            "approver": sanitize(approver, 200),
            "comment": sanitize(comment, 2000),
            "decided_at": _now(),
        }

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(insert(approvals).values(**row))

        await self._write(f"record the approval decision on plan {plan_id}", work)

    async def approvals_of(self, plan_id: str) -> list[dict[str, Any]]:
        """The decisions on a plan, newest first."""
        query = (
            select(approvals).where(approvals.c.plan_id == plan_id).order_by(approvals.c.id.desc())
        )

        async def work(conn: AsyncConnection) -> list[dict[str, Any]]:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

        return await self._read(f"read the approvals of plan {plan_id}", work)

    async def memory_snippets(self, goal: str, *, limit: int = 3) -> list[str]:
        """The last `limit` executions of `goal`, one line each, for the planner: the plan's
        steps and how it ended, never its outputs or error texts (step outputs are
        untrusted: they must not reach a prompt).

        Examples:
            >>> import tempfile
            >>> store = PlanStore(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/p.db")
            >>> asyncio.run(store.memory_snippets("x"))
            []
        """
        lines = []
        for plan, run in await self.history(goal=goal, limit=limit):
            steps = " -> ".join(f"{s.id}:{s.action}" for s in plan.plan.steps[:12])
            when = run.started_at.strftime("%Y-%m-%d %H:%M UTC")
            outcome = run.status.lower()
            failed = _failed_step(run.error) if run.error else None
            tail = f" at step {failed}" if failed else ""
            lines.append(f"{when}: plan {plan.plan_id} ({steps}) {outcome}{tail}")
        return lines


def _failed_step(error: str) -> str | None:
    """The step id an execution's error starts with (`"<step>: <message>"`), if any."""
    head = error.partition(":")[0]
    return head if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head) else None


async def _block_url(name: str) -> str:
    from prefect_aether.blocks import StoreConnection

    try:
        block = cast(StoreConnection, await StoreConnection.aload(name))
    except (ValueError, OSError) as exc:
        raise StoreError(
            f"cannot load the 'Aether Store' block {name!r} (store_block): {exc}"
        ) from None
    return block.url.get_secret_value()


def _default_url() -> str:
    from prefect.settings import PREFECT_HOME

    home = Path(str(PREFECT_HOME.value())).expanduser()
    return f"sqlite+aiosqlite:///{home / 'aether.db'}"


def _plan_record(row: dict[str, Any]) -> PlanRecord:
    return PlanRecord(
        id=row["id"],
        plan_id=row["plan_id"],
        goal=row["goal"],
        normalized_goal=row["normalized_goal"],
        catalog_fingerprint=row["catalog_fingerprint"],
        input_keys=_split(row["input_keys"]),
        plan=CandidatePlan.from_dict(json.loads(row["plan_json"])),
        validation_ok=row["validation_ok"],
        validation_summary=row["validation_summary"] or "",
        missing_keys=_split(row["missing_keys"]),
        planner=row["planner"] or "",
        usage=dict(row["usage"] or {}),
        created_at=_aware(row["created_at"]),
    )


def _execution_record(row: dict[str, Any]) -> ExecutionRecord:
    return ExecutionRecord(
        **{**row, "started_at": _aware(row["started_at"]), "ended_at": _aware(row["ended_at"])}
    )
