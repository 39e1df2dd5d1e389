"""The plan store's database: engine, connections, schema upgrades and error messages
(the queries are `PlanStore`'s, in `prefect_aether.store.plans`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect.blocks.core import Block
from pydantic import SecretStr
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from prefect_aether.exceptions import StoreError
from prefect_aether.settings import current_settings
from prefect_aether.store.schema import apply_migrations, versions

T = TypeVar("T")


class Database:
    """A SQL database for the plan store, opened (and upgraded) on first use."""

    def __init__(self, url: str | None = None, *, timeout: float | None = None) -> None:
        settings = current_settings()
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


async def _block_url(name: str) -> str:
    # Loaded by its block type's slug (the `StoreConnection` class is registered when
    # `prefect_aether` is imported), so the store does not import the blocks module,
    # which sits above it with the planner's LLM configuration.
    try:
        block = await Block.aload(f"aether-store/{name}")
    except (ValueError, OSError) as exc:
        raise StoreError(
            f"cannot load the 'Aether Store' block {name!r} (store_block): {exc}"
        ) from None
    url = getattr(block, "url", None)
    if not isinstance(url, SecretStr):
        raise StoreError(f"the block {name!r} (store_block) holds no store URL")
    return url.get_secret_value()


def _default_url() -> str:
    from prefect.settings import PREFECT_HOME

    home = Path(str(PREFECT_HOME.value())).expanduser()
    return f"sqlite+aiosqlite:///{home / 'aether.db'}"
