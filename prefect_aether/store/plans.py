"""`PlanStore`: the queries over plans, executions, approvals and the plan cache."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prefect_aether._internal.text import preview, sanitize
from prefect_aether.exceptions import StoreError
from prefect_aether.plan import CandidatePlan
from prefect_aether.store.engine import Database
from prefect_aether.store.records import (
    ExecutionRecord,
    PlanRecord,
    execution_record,
    failed_step,
    join_keys,
    normalize_goal,
    now,
    plan_record,
)
from prefect_aether.store.schema import approvals, executions, plans
from prefect_aether.validation.validate import ValidationResult

__all__ = ["PlanStore"]


class PlanStore(Database):
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
            "input_keys": join_keys(input_keys),
            "plan_json": json.dumps(plan.to_dict(), sort_keys=True),
            "validation_ok": bool(validation.ok) if validation is not None else True,
            "validation_summary": validation.summary() if validation is not None else "",
            "missing_keys": join_keys(validation.missing_user_bindings if validation else ()),
            "planner": planner,
            "usage": dict(usage or {}),
            "created_at": now(),
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

        return plan_record(await self._write(f"save plan {plan.plan_id}", work))

    async def find_cached(
        self, goal: str, catalog_fingerprint: str, input_keys: Iterable[str]
    ) -> PlanRecord | None:
        """The newest plan for the same normalized goal, catalog and set of input keys."""
        query = (
            select(plans)
            .where(
                plans.c.normalized_goal == normalize_goal(goal),
                plans.c.catalog_fingerprint == catalog_fingerprint,
                plans.c.input_keys == join_keys(input_keys),
            )
            .order_by(plans.c.created_at.desc(), plans.c.id.desc())
            .limit(1)
        )

        async def work(conn: AsyncConnection) -> PlanRecord | None:
            row = (await conn.execute(query)).mappings().first()
            return plan_record(dict(row)) if row is not None else None

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
            return plan_record(dict(rows[0]))

        return await self._read(f"read plan {plan_id}", work)

    async def list_plans(self, *, goal: str | None = None, limit: int = 20) -> list[PlanRecord]:
        """The newest plans, optionally of one goal (compared normalized)."""
        query = select(plans).order_by(plans.c.created_at.desc(), plans.c.id.desc()).limit(limit)
        if goal is not None:
            query = query.where(plans.c.normalized_goal == normalize_goal(goal))

        async def work(conn: AsyncConnection) -> list[PlanRecord]:
            return [plan_record(dict(r)) for r in (await conn.execute(query)).mappings()]

        return await self._read("list plans", work)

    # -- executions ---------------------------------------------------------------------

    async def start_execution(
        self, plan_id: str, *, execution_id: str | None = None, holder: str | None = None
    ) -> int:
        """Record that an execution of `plan_id` started (or, for an `execution_id`
        already recorded, resumed); returns its row id."""
        values = {"status": "Running", "started_at": now(), "holder": holder}

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
        output_preview: str | None = None,
    ) -> None:
        """Record how an execution ended: outputs are kept as a sanitized preview
        (`output_preview` when given: the executor's, with secret values masked)."""
        if output_preview is None:
            output_preview = preview(outputs, 500) if outputs is not None else ""
        values = {
            "status": status or ("Completed" if ok else "Failed"),
            **({"flow_run_id": flow_run_id} if flow_run_id else {}),
            "ended_at": now(),
            "output_preview": sanitize(output_preview, 500),
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
            return [execution_record(dict(r)) for r in (await conn.execute(query)).mappings()]

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
            runs = [execution_record(dict(r)) for r in (await conn.execute(query)).mappings()]
            wanted = sorted({r.plan_id for r in runs})
            newest: dict[str, PlanRecord] = {}
            if wanted:
                rows = await conn.execute(
                    select(plans).where(plans.c.plan_id.in_(wanted)).order_by(plans.c.id)
                )
                for row in rows.mappings():
                    newest[row["plan_id"]] = plan_record(dict(row))
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
            return execution_record(dict(rows[0])) if rows else None

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
            return [execution_record(dict(r)) for r in (await conn.execute(query)).mappings()]

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
            values["ended_at"] = now()

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
                latest[row["plan_id"]] = plan_record(dict(row))
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
            "decided_at": now(),
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

    async def memory_snippets(
        self, goal: str, *, limit: int = 3, exclude_actions: Iterable[str] = ()
    ) -> list[str]:
        """The last `limit` executions of `goal`, one line each, for the planner: the plan's
        steps and how it ended, never its outputs or error texts (step outputs are
        untrusted: they must not reach a prompt). Executions of plans that use one of
        `exclude_actions` (those a planner must never see, `aether:manual`) are left out.

        Examples:
            >>> import asyncio, tempfile
            >>> store = PlanStore(f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/p.db")
            >>> asyncio.run(store.memory_snippets("x"))
            []
        """
        lines = []
        hidden = set(exclude_actions)
        for plan, run in await self.history(goal=goal, limit=limit):
            if any(step.action in hidden for step in plan.plan.steps):
                continue
            steps = " -> ".join(f"{s.id}:{s.action}" for s in plan.plan.steps[:12])
            when = run.started_at.strftime("%Y-%m-%d %H:%M UTC")
            outcome = run.status.lower()
            failed = failed_step(run.error) if run.error else None
            tail = f" at step {failed}" if failed else ""
            lines.append(f"{when}: plan {plan.plan_id} ({steps}) {outcome}{tail}")
        return lines
