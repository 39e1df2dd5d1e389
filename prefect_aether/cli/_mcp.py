"""`prefect-aether mcp`: build the operator's catalog, then serve it to agents over the
Model Context Protocol (private to the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.cli._common import add_local, clean_errors, errors, fail
from prefect_aether.service import PlannerKind, PlannerService
from prefect_aether.settings import current_settings
from prefect_aether.store import PlanStore


def run_mcp_server(
    *,
    modules: list[str],
    entrypoints: list[str],
    deployments: list[str],
    deployment_tags: list[str],
    flow_ids: list[str] | None,
    planner: str,
    transport: str,
    host: str,
    port: int,
    pause_timeout: int,
) -> None:
    """Check the options, build the catalog and serve until the client leaves."""
    settings = current_settings()
    if planner not in ("auto", "heuristic", "llm"):
        fail(f"--planner must be auto, heuristic or llm, got {planner!r}")
    if transport not in ("stdio", "http"):
        fail(f"--transport must be stdio or http, got {transport!r}")
    if not 1 <= port <= 65535:
        fail(f"--port must be between 1 and 65535, got {port}")
    if pause_timeout < 1:
        fail(f"--pause-timeout must be at least 1 second, got {pause_timeout}")
    token = settings.mcp_token.get_secret_value() if settings.mcp_token else ""
    if transport == "http" and not token:
        fail(
            "--transport http needs a bearer token: set PREFECT_INTEGRATIONS_AETHER_MCP_TOKEN "
            "(clients send it as 'Authorization: Bearer <token>')"
        )
    if not settings.store_enabled:
        fail("the MCP server keeps plans in the plan store, which is off (..._STORE_ENABLED)")
    source = (
        CatalogSource(
            modules=modules,
            entrypoints=entrypoints,
            deployments=deployments,
            deployment_tags=deployment_tags,
        )
        if modules or entrypoints or deployments or deployment_tags
        else CatalogSource.from_settings()
    )
    if not (source.modules or source.entrypoints or source.deployments or source.deployment_tags):
        fail(
            "no actions: pass --module, --entrypoint, --deployment or --deployment-tag, or set "
            "PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES (or another catalog_* setting)"
        )
    # Over stdio, standard output is the protocol's wire: what a module prints when it is
    # imported goes to standard error instead (the SDK diverts it once it serves).
    quiet = contextlib.redirect_stdout(sys.stderr) if transport == "stdio" else nullcontext()
    if transport == "stdio":
        # Unbuffered: a flow's print() reaches fd 1 at once, which the SDK points at
        # standard error while it serves; buffered, it would be flushed onto the wire
        # at exit, after the SDK gave fd 1 back to it.
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True
        )
    with quiet:
        catalog = add_local(ActionCatalog(), source.modules, source.entrypoints)
    if transport == "http" and not _loopback(host):
        errors.print(
            f"[yellow]warning:[/] serving on {host}, beyond this machine; every request still "
            "needs the bearer token",
            highlight=False,
        )
    with clean_errors():
        asyncio.run(
            _serve(
                catalog,
                source,
                flow_ids=flow_ids,
                planner=cast(PlannerKind, planner),
                transport=transport,
                host=host,
                port=port,
                token=token,
                pause_timeout=pause_timeout,
                quiet=quiet,
            )
        )


async def _serve(
    catalog: ActionCatalog,
    source: CatalogSource,
    *,
    flow_ids: list[str] | None,
    planner: PlannerKind,
    transport: str,
    host: str,
    port: int,
    token: str,
    pause_timeout: int,
    quiet: AbstractContextManager[Any],
) -> None:
    from prefect.client.orchestration import get_client

    from prefect_aether.mcp import AgentTools, build_server, serve

    with quiet:
        if source.deployments or source.deployment_tags:
            await catalog.register_deployments(
                names=source.deployments or None, tags=source.deployment_tags or None
            )
        # The first API call starts Prefect's embedded server when no API URL is set:
        # made here, once, before any run's thread could race to start another.
        async with get_client() as client:
            await client.hello()
    store = PlanStore()
    try:
        service = PlannerService(catalog, planner=planner, store=store)
        tools = AgentTools(service, flow_ids=flow_ids, pause_timeout=pause_timeout)
        url = f"http://{host}:{port}"
        server = build_server(tools, token=token or None, url=url)
        if transport == "http":
            errors.print(f"MCP server on {url}/mcp ({len(catalog)} actions)", highlight=False)
        await serve(server, "http" if transport == "http" else "stdio", host=host, port=port)
    finally:
        await store.close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
