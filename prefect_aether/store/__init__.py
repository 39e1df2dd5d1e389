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

from prefect_aether.store.plans import PlanStore
from prefect_aether.store.records import ExecutionRecord, PlanRecord, normalize_goal
from prefect_aether.store.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ExecutionRecord",
    "PlanRecord",
    "PlanStore",
    "normalize_goal",
]
