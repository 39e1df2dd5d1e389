"""The MCP server of `prefect-aether mcp`, on the official MCP Python SDK (`MCPServer`).

Six tools (`search_actions`, `plan`, `validate`, `run`, `status`, `history`) over one
catalog chosen by the operator when the server starts. Over stdio by default; over
streamable HTTP on request, where every request must carry the bearer token of the
`mcp_token` setting (compared in constant time).
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations at run
# time to build their JSON schemas.
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import AnyHttpUrl, Field

from prefect_aether._internal.text import sanitize
from prefect_aether._version import __version__
from prefect_aether.exceptions import AetherUsageError, PrefectAetherError
from prefect_aether.mcp.tools import AgentTools

__all__ = ["INSTRUCTIONS", "StaticToken", "build_server"]

logger = logging.getLogger("prefect_aether.mcp")

INSTRUCTIONS = """\
This server plans and runs a team's Prefect flows ("actions") for a goal in words.
1. `search_actions` shows what the actions do, their inputs and outputs.
2. `plan` turns a goal into a validated plan stored under a plan_id; it says which
   inputs are missing (with their JSON schemas) and what nothing can do ("unserved").
   Or write a plan yourself and check it with `validate`.
3. `run` starts a plan by its plan_id and returns an execution_id at once;
   `status` follows it step by step; `history` lists past executions.
You plan; you never approve. A plan using an action marked needs_approval waits for a
person in the Prefect UI. Actions an operator marked manual are never available here.
"""

_Json = dict[str, Any]
Goal = Annotated[str, Field(description="What should be done, in plain words.")]
Values = Annotated[
    dict[str, Any] | None,
    Field(description="Values for the plan's `${user.<key>}` inputs, as {key: JSON value}."),
]


class StaticToken:
    """A `TokenVerifier` for one shared bearer token (the `mcp_token` setting)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return AccessToken(token=token, client_id="prefect-aether-mcp", scopes=[])


def _guarded(work: Callable[..., Awaitable[_Json]]) -> Callable[..., Awaitable[_Json]]:
    """A tool body whose failures come back as one clear line: our own errors as they
    are (they name the problem), anything else without its text (it may hold data)."""

    @functools.wraps(work)
    async def tool(*args: Any, **kwargs: Any) -> _Json:
        try:
            return await work(*args, **kwargs)
        except PrefectAetherError as exc:
            raise ToolError(sanitize(str(exc), 2000)) from None
        except Exception as exc:
            logger.exception("MCP tool %s failed", work.__name__)
            raise ToolError(
                f"{work.__name__} failed inside the server ({type(exc).__name__}); "
                "the server's log has the details"
            ) from None

    return tool


def build_server(
    tools: AgentTools,
    *,
    token: str | None = None,
    url: str = "http://127.0.0.1:8000",
) -> MCPServer:
    """The MCP server over `tools`; with `token`, HTTP requests need `Bearer <token>`.

    Args:
        tools: What the tools do.
        token: The bearer token HTTP clients must send (stdio needs none).
        url: Where the HTTP server listens (its issuer URL for the SDK's auth).
    """
    auth: dict[str, Any] = {}
    if token:
        auth = {
            "token_verifier": StaticToken(token),
            "auth": AuthSettings(
                issuer_url=AnyHttpUrl(url),
                resource_server_url=None,
                validate_token_resource=False,
            ),
        }
    server = MCPServer(
        "prefect-aether",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
        **auth,
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    @_guarded
    async def search_actions(
        query: Annotated[
            str, Field(description="Words for what you need done; empty lists every action.")
        ] = "",
        limit: Annotated[int, Field(description="Most actions returned (1 to 50).")] = 10,
    ) -> _Json:
        """Find the actions (Prefect flows) a plan can use: for each, its description,
        inputs and outputs with their types, JSON schemas and roles (read/write), and
        whether it needs a person's approval."""
        return tools.search_actions(query, limit)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, open_world_hint=False))
    @_guarded
    async def plan(goal: Goal, user_inputs: Values = None) -> _Json:
        """Plan a goal with the team's actions. Returns the plan (steps, actions, input
        bindings), whether it is valid and ready, its issues, `unserved` (parts of the goal
        no action can do), `missing_inputs` (the `${user.*}` values still needed, with
        their JSON schemas), `needs_approval`, and `plan_id` for `run`. Nothing runs."""
        return await tools.plan(goal, user_inputs)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, open_world_hint=False))
    @_guarded
    async def validate(
        plan: Annotated[
            dict[str, Any],
            Field(
                description='A plan: {"steps": [{"id": ..., "action": ..., "inputs": {...}, '
                '"after": [...]}]}; inputs are JSON values or bindings like "${user.key}", '
                '"${step_id.output}", "${step_id}".'
            ),
        ],
        user_inputs: Values = None,
        goal: Annotated[str, Field(description="What the plan is for (kept in history).")] = "",
    ) -> _Json:
        """Check a plan you wrote against the actions: issues, missing inputs, levels
        (steps that run together), needs_approval. A plan that can run is stored and its
        `plan_id` returned for `run`. Nothing runs."""
        return await tools.validate(plan, user_inputs, goal)

    @server.tool(
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, open_world_hint=True
        )
    )
    @_guarded
    async def run(
        plan_id: Annotated[str, Field(description="The plan_id `plan` or `validate` returned.")],
        user_inputs: Values = None,
    ) -> _Json:
        """Start executing a stored plan as one Prefect flow run; returns at once with its
        `execution_id` (and the run's page in the Prefect UI). A plan with an action that
        needs approval waits for a person in the Prefect UI; you cannot approve it."""
        return await tools.run(plan_id, user_inputs)

    @server.tool(annotations=read_only)
    @_guarded
    async def status(
        execution_id: Annotated[str, Field(description="The execution_id `run` returned.")],
    ) -> _Json:
        """The state of an execution (Starting, AwaitingApproval, Running, Completed,
        Failed, Rejected) and of each step, with output previews and errors."""
        return await tools.status(execution_id)

    @server.tool(annotations=read_only)
    @_guarded
    async def history(
        goal: Annotated[str, Field(description="Only executions of this goal; empty: all.")] = "",
        limit: Annotated[int, Field(description="Most executions returned (1 to 50).")] = 10,
    ) -> _Json:
        """Past executions (all, or those of one goal), newest first: execution_id,
        plan_id, goal, the steps' actions, state, output preview and error."""
        return await tools.history(goal, limit)

    return server


Transport = Literal["stdio", "http"]


async def serve(
    server: MCPServer, transport: Transport, *, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve until the client leaves (stdio) or the process is stopped (HTTP)."""
    if transport == "stdio":
        await server.run_stdio_async()
    elif transport == "http":
        await server.run_streamable_http_async(host=host, port=port)
    else:
        raise AetherUsageError(f"transport must be stdio or http, got {transport!r}")
