"""What the Prefect UI shows, checked in a real browser, in both of Prefect's UIs.

A `prefect server start` with its UI serves the classic UI under `/` and the new one
under `/v2/`; headless Chromium (Debian's, driven by Playwright) opens the plan run
page, the plan artifact and the paused run's forms in each. The run graph is a
canvas: the test reads the graph data the page itself fetched (`graph-v2`).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import BIN, ROOT, PrefectServer

UIS = {"classic": "", "new": "/v2"}
PLAN = {
    "steps": [
        {"id": "load", "action": "load_sales", "inputs": {"path": "${user.csv_path}"}},
        {"id": "clean", "action": "clean_sales", "inputs": {"rows": "${load.rows}"}},
        {"id": "regions", "action": "revenue_by_region", "inputs": {"records": "${clean.records}"}},
        {"id": "trend", "action": "monthly_trend", "inputs": {"records": "${clean.records}"}},
        {"id": "audit", "action": "load_sales", "inputs": {"limit": 1}, "after": ["regions"]},
    ]
}
EDGES = {("load", "clean"), ("clean", "regions"), ("clean", "trend"), ("regions", "audit")}


def run_plan(server: PrefectServer, tmp_path: Path, mode: str) -> str:
    """Run PLAN with the CLI against the server; the plan run's id."""
    plan = tmp_path / f"plan-{mode}.json"
    plan.write_text(json.dumps(PLAN))
    done = subprocess.run(
        [
            *(str(BIN / "prefect-aether"), "run", str(plan), "-m", "flows/pipeline.py"),
            *("-i", "csv_path=flows/data/sales.csv", "--run-as", mode),
        ],
        env={
            **server.env,
            "PREFECT_INTEGRATIONS_AETHER_STORE_URL": f"sqlite+aiosqlite:///{tmp_path}/a.db",
            "COLUMNS": "200",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # With an API URL set, the CLI prints the run's link in the UI.
    link = re.search(r"flow run: (http://\S+/runs/flow-run/([0-9a-f-]{36}))", done.stdout)
    assert link is not None, done.stdout
    assert link.group(1).startswith(server.ui_url)
    return link.group(2)


async def open_run_page(page: Any, url: str) -> tuple[str, dict[str, Any]]:
    """The page's text and the run graph data it fetched."""
    graphs: list[Any] = []

    async def keep(response: Any) -> None:
        if response.url.endswith("/graph-v2"):
            graphs.append(await response.json())

    page.on("response", keep)
    await page.goto(url)
    deadline = time.monotonic() + 30
    while not graphs and time.monotonic() < deadline:
        await page.wait_for_timeout(250)
    await page.wait_for_timeout(1500)
    page.remove_listener("response", keep)
    assert graphs, f"{url} fetched no run graph"
    return await page.inner_text("body"), graphs[-1]


def edges_of(graph: dict[str, Any]) -> set[tuple[str, str]]:
    nodes = dict(graph["nodes"])
    label = {node_id: node["label"].rsplit(" / ", 1)[-1] for node_id, node in nodes.items()}
    return {
        (label[parent["id"]], label[node_id])
        for node_id, node in nodes.items()
        for parent in node["parents"]
    }


@pytest.mark.parametrize("mode", ["task", "subflow"])
async def test_the_plan_run_page_shows_every_step_and_its_edges(
    ui_server: PrefectServer, page: Any, tmp_path: Path, mode: str
) -> None:
    flow_run_id = run_plan(ui_server, tmp_path, mode)
    for ui, prefix in UIS.items():
        text, graph = await open_run_page(
            page, f"{ui_server.ui_url}{prefix}/runs/flow-run/{flow_run_id}"
        )
        assert "Completed" in text, ui
        for step in PLAN["steps"]:
            # The run's log, shown on the page, has a line per step start and end.
            assert f"step {step['id']} (action {step['action']}) started" in text, (ui, step)
        labels = {node["label"].rsplit(" / ", 1)[-1] for _, node in graph["nodes"]}
        assert labels >= {s["id"] for s in PLAN["steps"]}, (ui, labels)
        assert edges_of(graph) == EDGES, (ui, mode)


async def test_the_plan_artifact_reads_as_a_table_in_both_uis(
    ui_server: PrefectServer, page: Any, tmp_path: Path
) -> None:
    flow_run_id = run_plan(ui_server, tmp_path, "task")
    response = httpx.post(
        f"{ui_server.api_url}/artifacts/filter",
        json={
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "type": {"any_": ["markdown"]}}
        },
        timeout=10,
    )
    [artifact] = response.json()
    for ui, prefix in UIS.items():
        await page.goto(f"{ui_server.ui_url}{prefix}/artifacts/artifact/{artifact['id']}")
        await page.wait_for_selector("table", timeout=30_000)
        text = await page.inner_text("body")
        assert "graph TD" not in text, ui  # no raw diagram source
        assert "-->" not in text, ui
        rows = await page.eval_on_selector_all(
            "table tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
        )
        by_step = {row[1]: row for row in rows if len(row) >= 4}
        assert by_step["clean"][:4] == ["2", "clean", "clean_sales", "load"], (ui, by_step)
        assert by_step["audit"][3] == "regions (order)", ui
        assert set(by_step) >= {s["id"] for s in PLAN["steps"]}, ui


async def paused(server: PrefectServer, tag: str, count: int) -> str:
    """The id of the run tagged `tag` once it has paused `count` times."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            runs = (
                await http.post(
                    f"{server.api_url}/flow_runs/filter",
                    json={"flow_runs": {"tags": {"all_": [tag]}}},
                )
            ).json()
            if runs and runs[0]["state"]["type"] == "PAUSED":
                states = (
                    await http.get(
                        f"{server.api_url}/flow_run_states/", params={"flow_run_id": runs[0]["id"]}
                    )
                ).json()
                if sum(s["type"] == "PAUSED" for s in states) >= count:
                    return str(runs[0]["id"])
            await asyncio.sleep(0.5)
    raise AssertionError(f"no run tagged {tag} paused {count} time(s)")


async def form_text(page: Any, url: str) -> str:
    """Open the paused run and its resume form (a button in the classic UI, an item of
    the run's menu in the new one); the form's text."""
    await page.goto(url)
    button = page.get_by_role("button", name=re.compile("^Resume$"))
    menu = page.get_by_role("button", name="Open menu")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some("
        "b => ['Resume', 'Open menu'].includes(b.innerText.trim()))",
        timeout=30_000,
    )
    if await button.count():
        await button.first.click()
    else:
        await menu.first.click()
        await page.get_by_role("menuitem", name=re.compile("Resume")).first.click()
    dialog = page.get_by_role("dialog")
    await dialog.first.wait_for(timeout=30_000)
    await page.wait_for_timeout(1000)
    return str(await dialog.first.inner_text())


async def test_the_input_and_approval_forms_show_their_fields_and_steps(
    ui_server: PrefectServer, page: Any, tmp_path: Path
) -> None:
    tag = f"ui-forms-{int(time.time() * 1000)}"
    script = (
        "import asyncio\n"
        "from prefect import tags\n"
        "from prefect_aether.catalog import CatalogSource\n"
        "from prefect_aether.flows import execute_plan\n"
        "plan = {'steps': [{'id': 'hi', 'action': 'greet', 'inputs': "
        "{'name': '${user.name}', 'tone': '${user.tone}'}}]}\n"
        f"with tags({tag!r}):\n"
        "    asyncio.run(execute_plan(plan, catalog=CatalogSource(modules=['tests.hitl_flows']),"
        " approve=True, return_state=True))\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**ui_server.env, "PREFECT_INTEGRATIONS_AETHER_PAUSE_POLL_INTERVAL": "1"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id = await paused(ui_server, tag, 1)
        for ui, prefix in UIS.items():
            text = await form_text(page, f"{ui_server.ui_url}{prefix}/runs/flow-run/{run_id}")
            for field in ("name", "tone"):
                assert field in text, (ui, text)
            assert "Needed by hi.name." in text, (ui, text)
            assert "Needed by hi.tone." in text, (ui, text)
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(
                f"{ui_server.api_url}/flow_runs/{run_id}/resume",
                json={"run_input": {"name": "ada", "tone": "loud"}},
            )
        await paused(ui_server, tag, 2)
        for ui, prefix in UIS.items():
            text = await form_text(page, f"{ui_server.ui_url}{prefix}/runs/flow-run/{run_id}")
            for label in ("Run this plan?", "Your name, for the audit trail.", "Why"):
                assert label in text, (ui, text)
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(
                f"{ui_server.api_url}/flow_runs/{run_id}/resume",
                json={"run_input": {"approve": False, "approver": "ui-test"}},
            )
        runner.wait(120)
    finally:
        if runner.poll() is None:
            runner.kill()
