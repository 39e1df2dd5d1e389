"""`prefect-aether mcp` with the MCP SDK's own client: over stdio (a subprocess per
test, on a real Prefect server), over streamable HTTP with and without the bearer token,
and in process for bad input to every tool."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import pipeline
from prefect_aether import ActionCatalog, CandidatePlan
from prefect_aether.mcp import AgentTools, build_server
from prefect_aether.service import PlannerService
from prefect_aether.store import PlanStore
from tests import figures, guarded_flows
from tests.conftest import use_server
from tests.processes import BIN, ROOT, PrefectServer, free_port
from tests.test_readme import mcp_commands

DEMO_GOAL = "revenue by region, monthly trend, detect anomalies, then build the report and save it"
TOKEN_SETTING = "PREFECT_INTEGRATIONS_AETHER_MCP_TOKEN"
TOOLS = ["history", "plan", "run", "search_actions", "status", "validate"]


def stdio(server: PrefectServer, store: Path, *args: str) -> StdioServerParameters:
    """`prefect-aether mcp ARGS` as the SDK's client starts it, on `server`."""
    env = {**server.env, "PREFECT_INTEGRATIONS_AETHER_STORE_URL": f"sqlite+aiosqlite:///{store}"}
    # As an agent's client starts it: standard output buffered, as Python's is on a pipe.
    env.pop("PYTHONUNBUFFERED", None)
    return StdioServerParameters(
        command=str(BIN / "prefect-aether"), args=["mcp", *args], env=env, cwd=str(ROOT)
    )


def data(result: Any) -> dict[str, Any]:
    """A tool's JSON answer; fails the test on an error result."""
    assert not result.is_error, result.content[0].text
    answer: dict[str, Any] = json.loads(result.content[0].text)
    return answer


def error_of(result: Any) -> str:
    assert result.is_error, result.content[0].text
    text: str = result.content[0].text
    return text


async def until(client: Client, execution_id: str, *states: str, timeout: float = 120) -> dict:
    """Poll `status` until the execution is in one of `states`."""
    deadline = time.monotonic() + timeout
    while True:
        status = data(await client.call_tool("status", {"execution_id": execution_id}))
        if status["state"] in states:
            return status
        assert not status["finished"], status
        assert time.monotonic() < deadline, f"still {status['state']} after {timeout} s"
        await asyncio.sleep(0.5)


async def test_an_agent_plans_runs_and_reads_the_demo_report_over_stdio(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    values = {"title": "Sales 2026", "output_dir": str(out)}
    # The README's command, as written.
    args = shlex.split(mcp_commands()[0])
    assert args[:2] == ["prefect-aether", "mcp"]
    params = stdio(real_server, tmp_path / "store.db", *args[2:])
    async with Client(params, read_timeout_seconds=120) as client:
        tools = (await client.list_tools()).tools
        assert sorted(tool.name for tool in tools) == TOOLS
        for tool in tools:
            assert len(tool.description or "") > 80, tool.name
            assert tool.input_schema["type"] == "object"
        plan_schema = next(t for t in tools if t.name == "plan").input_schema
        assert plan_schema["required"] == ["goal"]

        found = data(await client.call_tool("search_actions", {"query": "revenue per region"}))
        assert found["total_actions"] == 7
        best = found["actions"][0]
        assert best["name"] == "revenue_by_region"
        assert best["inputs"][0]["name"] == "records"
        assert best["outputs"][0]["name"] == "totals"
        assert best["needs_approval"] is False

        planned = data(await client.call_tool("plan", {"goal": DEMO_GOAL, "user_inputs": values}))
        assert planned["ready"], planned["issues"]
        assert planned["unserved"] == []
        assert planned["needs_approval"] == []
        actions = {step["id"]: step["action"] for step in planned["plan"]["steps"]}
        assert {"revenue_by_region", "build_report", "save_report"} <= set(actions.values())

        started = data(
            await client.call_tool("run", {"plan_id": planned["plan_id"], "user_inputs": values})
        )
        assert started["plan_id"] == planned["plan_id"]
        assert started["flow_run_url"].startswith(real_server.ui_url)
        status = await until(client, started["execution_id"], "Completed")

    # The numbers the agent read are the pipeline's own.
    rows = pipeline.load_sales.fn(pipeline.DATA).rows
    expected = pipeline.revenue_by_region.fn(pipeline.clean_sales.fn(rows).records).totals
    steps = {step["step"]: step for step in status["steps"]}
    assert all(step["state"] == "Completed" for step in steps.values()), steps
    revenue = next(s for sid, s in steps.items() if actions[sid] == "revenue_by_region")
    assert json.loads(revenue["output_preview"])["totals"] == expected
    report = (out / "report.md").read_text()
    for region, total in expected.items():
        assert f"| {region} | {total:,.2f} |" in report

    # One agent run on the server, tagged for agents, whose child is the plan's run.
    api = real_server.api_url
    agent_run = httpx.get(f"{api}/flow_runs/{status['flow_run_id']}", timeout=10).json()
    assert agent_run["state"]["type"] == "COMPLETED"
    plan_run = httpx.get(f"{api}/flow_runs/{status['plan_flow_run_id']}", timeout=10).json()
    assert {"origin:agent", "app:mcp"} <= set(plan_run["tags"])
    assert status["flow_run_url"].endswith(f"/runs/flow-run/{status['flow_run_id']}")


async def test_an_agent_never_approves_and_never_runs_a_manual_action(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    store_path = tmp_path / "store.db"
    # A person stored a plan with a manual action (allowed for them, by hand).
    store = PlanStore(f"sqlite+aiosqlite:///{store_path}")
    manual = CandidatePlan.from_dict(
        {"steps": [{"id": "p", "action": "purge_customers", "inputs": {"log_dir": str(log_dir)}}]}
    )
    await store.save_plan(manual, goal="purge", catalog_fingerprint="by hand")
    await store.close()
    charge = {
        "steps": [
            {"id": "c", "action": "charge_card", "inputs": {"amount": 5, "log_dir": str(log_dir)}}
        ]
    }
    params = stdio(real_server, store_path, "--module", "tests/guarded_flows.py")
    async with Client(params, read_timeout_seconds=120) as client:
        listed = data(await client.call_tool("search_actions", {"query": "", "limit": 50}))
        names = {action["name"]: action for action in listed["actions"]}
        assert "purge_customers" not in names
        assert names["charge_card"]["needs_approval"] is True

        figures.add("guardrails.unplanned_manual_actions_tried", 2)
        refused = data(await client.call_tool("validate", {"plan": manual.to_dict()}))
        assert refused["plan_id"] is None
        assert not refused["valid"]
        assert [issue["kind"] for issue in refused["issues"]] == ["manual_action"]
        assert "cannot run here" in error_of(
            await client.call_tool("run", {"plan_id": manual.plan_id})
        )
        figures.add("guardrails.unplanned_manual_actions_blocked", 2)

        checked = data(await client.call_tool("validate", {"plan": charge, "goal": "charge"}))
        assert checked["ready"]
        assert checked["needs_approval"] == ["charge_card"]
        # No argument approves: an extra "approve" is not a parameter of `run`.
        first = data(
            await client.call_tool("run", {"plan_id": checked["plan_id"], "approve": True})
        )
        second = data(await client.call_tool("run", {"plan_id": checked["plan_id"]}))
        waiting = [
            await until(client, run["execution_id"], "AwaitingApproval") for run in (first, second)
        ]
        assert "an agent cannot approve" in waiting[0]["message"]
        await asyncio.sleep(2)
        assert list(log_dir.iterdir()) == []
        figures.add("guardrails.agent_approvals_tried", 2)
        figures.add("guardrails.agent_approvals_blocked", 2)

        # A person decides in the Prefect UI (here, through its API): one yes, one no.
        with use_server(real_server):
            async with get_client() as prefect:
                for status in waiting:
                    flow_run = await prefect.read_flow_run(UUID(status["flow_run_id"]))
                    assert flow_run.state is not None
                    assert flow_run.state.is_paused()
            await resume_flow_run(
                UUID(waiting[0]["flow_run_id"]),
                run_input={"decision": "approve", "approver": "rita"},
            )
            await resume_flow_run(UUID(waiting[1]["flow_run_id"]), run_input={"decision": "reject"})
        done = await until(client, first["execution_id"], "Completed")
        rejected = await until(client, second["execution_id"], "Rejected")
    assert [step["state"] for step in done["steps"]] == ["Completed"]
    assert [step["state"] for step in rejected["steps"]] == ["Pending"]
    assert [path.name for path in log_dir.iterdir()] == ["charge-5.0"]


def test_what_flows_print_never_reaches_the_stdio_wire(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    """Byte for byte: every line the server writes to standard output, to its exit, is a
    JSON-RPC message, though the module prints when imported and its flow when it runs."""
    params = stdio(real_server, tmp_path / "store.db", "--module", "tests/guarded_flows.py")
    process = subprocess.Popen(
        [params.command, *params.args],
        env=params.env,
        cwd=params.cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    lines: list[str] = []

    def call(number: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": number, "method": method, "params": params}
        process.stdin.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        while True:
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, "the server closed its standard output"
            lines.append(line)
            answer: dict[str, Any] = json.loads(line)
            if answer.get("id") == number:
                return answer

    def tool(number: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = call(number, "tools/call", {"name": name, "arguments": arguments})["result"]
        assert not result.get("isError"), result
        answer: dict[str, Any] = json.loads(result["content"][0]["text"])
        return answer

    try:
        call(
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        process.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        process.stdin.write("\n")
        plan = {"steps": [{"id": "l", "action": "list_customers", "inputs": {"log_dir": "x"}}]}
        plan_id = tool(2, "validate", {"plan": plan})["plan_id"]
        execution = tool(3, "run", {"plan_id": plan_id})["execution_id"]
        for number in range(4, 200):
            if tool(number, "status", {"execution_id": execution})["finished"]:
                break
            time.sleep(0.5)
        process.stdin.close()
        lines.extend(process.stdout.readlines())
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in lines), lines
    assert json.loads(lines[-1])["result"]["content"][0]["text"].count('"Completed"') == 2


@pytest.fixture
async def tools(prefect_server: None, tmp_path: Path) -> Iterator[AgentTools]:
    catalog = ActionCatalog()
    catalog.register_module(guarded_flows)
    store = PlanStore(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    yield AgentTools(PlannerService(catalog, planner="heuristic", store=store))
    await store.close()


async def test_bad_input_to_every_tool_is_an_error_result_naming_it(tools: AgentTools) -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("search_actions", {"limit": 0}, "limit must be between 1 and 50"),
        ("search_actions", {"limit": "many"}, "limit"),
        ("plan", {"goal": "   "}, "the goal is empty"),
        ("plan", {"goal": "x" * 20_001}, "at most 20000 are accepted (max_goal_chars)"),
        ("plan", {"goal": "list the customers", "user_inputs": "log_dir=/tmp"}, "user_inputs"),
        (
            "plan",
            {"goal": "list the customers", "user_inputs": {"k": deep}},
            "deeper than 100 levels",
        ),
        ("plan", {}, "goal"),
        ("validate", {"plan": {"steps": "all of them"}}, "not a valid plan"),
        ("validate", {"plan": {"steps": [{"id": "a", "action": "nope"}]}}, ""),
        ("validate", {"plan": ["x"]}, "plan"),
        ("run", {"plan_id": "'; drop table plans; --"}, "plan_id must be the hex id"),
        ("run", {"plan_id": "0123456789abcdef"}, "no plan '0123456789abcdef' in the plan store"),
        ("status", {"execution_id": "nope"}, "execution_id must be the hex id"),
        ("status", {"execution_id": "0123abcd0123abcd"}, "no execution '0123abcd0123abcd'"),
        ("history", {"limit": 10**20}, "limit"),
        ("nonexistent_tool", {}, "nonexistent_tool"),
    ]
    async with Client(build_server(tools)) as client:
        for name, arguments, expected in cases:
            result = await client.call_tool(name, arguments)
            if name == "validate" and not expected:
                # A plan that names an unknown action is an answer, not an error.
                answer = data(result)
                assert [i["kind"] for i in answer["issues"]] == ["unknown_action"], answer
                continue
            text = error_of(result)
            assert expected in text, (name, arguments, text)
            assert "Traceback" not in text
        # The server still answers after all of that.
        assert len(data(await client.call_tool("search_actions", {}))["actions"]) == 5


async def test_missing_values_and_approval_without_a_prefect_server_are_refused(
    tools: AgentTools, tmp_path: Path
) -> None:
    plan = {
        "steps": [
            {"id": "c", "action": "charge_card", "inputs": {"amount": 5, "log_dir": "${user.dir}"}}
        ]
    }
    async with Client(build_server(tools)) as client:
        checked = data(await client.call_tool("validate", {"plan": plan}))
        assert checked["valid"]
        assert not checked["ready"]
        assert checked["missing_inputs"]["dir"]["schema"]["type"] == "string"
        plan_id = checked["plan_id"]
        assert "needs values for dir" in error_of(
            await client.call_tool("run", {"plan_id": plan_id})
        )
        # Prefect's embedded server has no UI where a person could approve.
        figures.add("guardrails.agent_approvals_tried")
        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            refused = error_of(
                await client.call_tool(
                    "run", {"plan_id": plan_id, "user_inputs": {"dir": str(tmp_path)}}
                )
            )
    assert "an agent cannot approve" in refused
    assert "Nothing ran" in refused
    assert list(tmp_path.glob("charge-*")) == []
    figures.add("guardrails.agent_approvals_blocked")


@pytest.fixture
def http_server(real_server: PrefectServer, tmp_path: Path) -> Iterator[str]:
    # The README's HTTP command, as written but for the port (8765 may be taken here).
    [command] = [c for c in mcp_commands() if c.startswith(TOKEN_SETTING)][:1]
    assignment, _, *args = shlex.split(command)
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    env = {
        **real_server.env,
        "PREFECT_INTEGRATIONS_AETHER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/store.db",
        TOKEN_SETTING: assignment.split("=", 1)[1],
    }
    log = (tmp_path / "mcp.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "prefect-aether"), *args], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "mcp.log").read_text()
                assert time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def test_streamable_http_needs_the_bearer_token(http_server: str) -> None:
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    for token in (None, "wrong-token", "change-me-but-longer"):
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(http_server, json=hello, headers={**headers, **auth}, timeout=10)
        assert response.status_code == 401, (token, response.text)

    good = {"Authorization": "Bearer change-me"}
    async with (
        httpx2.AsyncClient(headers=good, timeout=60) as http,
        Client(streamable_http_client(http_server, http_client=http)) as client,
    ):
        assert sorted(tool.name for tool in (await client.list_tools()).tools) == TOOLS
        planned = data(await client.call_tool("plan", {"goal": "revenue by region"}))
        assert planned["valid"]


def test_http_without_a_token_does_not_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "prefect-aether"), "mcp", "--transport", "http", "-m", "flows/pipeline.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "needs a bearer token" in result.stderr
    assert "Traceback" not in result.stderr
