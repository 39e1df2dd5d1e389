"""The MCP server: any agent that speaks the Model Context Protocol plans and runs a
team's Prefect flows through validated plans (`prefect-aether mcp`).

An agent is a planner, never an operator: it searches the actions, plans, validates and
runs plans, and follows them; it never runs an `aether:manual` action and never
approves a plan (a person does, in the Prefect UI).
"""

from prefect_aether.mcp.server import INSTRUCTIONS, StaticToken, build_server, serve
from prefect_aether.mcp.tools import AgentTools

__all__ = ["INSTRUCTIONS", "AgentTools", "StaticToken", "build_server", "serve"]
