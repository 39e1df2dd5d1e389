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
    [artifact] = [a for a in response.json() if a["key"].startswith("aether-plan-")]
    await page.set_viewport_size({"width": 1280, "height": 800})
    for ui, prefix in UIS.items():
        await page.goto(f"{ui_server.ui_url}{prefix}/artifacts/artifact/{artifact['id']}")
        # The new UI draws the page in parts, and draws it again: the rows are read in
        # the same moment as the plan's own row is seen whole (a timeout fails the test).
        found = await page.wait_for_function(
            "() => { const rows = [...document.querySelectorAll('table tr')]"
            ".map(r => Array.from(r.cells).map(c => c.innerText.trim()));"
            " return rows.some(r => r.length >= 4 && r[1] === 'clean' && r[2] === 'clean_sales')"
            " ? rows : null; }",
            timeout=30_000,
        )
        rows = await found.json_value()
        text = await page.inner_text("body")
        assert "graph TD" not in text, ui  # no raw diagram source
        assert "-->" not in text, ui
        by_step = {row[1]: row for row in rows if len(row) >= 4}
        assert by_step["clean"][:4] == ["2", "clean", "clean_sales", "load"], (ui, by_step)
        assert by_step["audit"][3] == "regions (order)", ui
        assert set(by_step) >= {s["id"] for s in PLAN["steps"]}, ui
        # The binding, then the value the run used.
        assert "flows/data/sales.csv" in by_step["load"][4], (ui, by_step["load"])
        assert await beyond_the_window(page) == [], ui
    # The results table fits too, and says why a step did not run (here: none failed).
    results = [
        a
        for a in httpx.post(
            f"{ui_server.api_url}/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
            timeout=10,
        ).json()
        if a["key"].startswith("aether-results-")
    ]
    for ui, prefix in UIS.items():
        await page.goto(f"{ui_server.ui_url}{prefix}/artifacts/artifact/{results[0]['id']}")
        # The table, then the lines under it (the new UI draws the page in parts): a
        # timeout here is a failure that names the UI.
        try:
            await page.wait_for_function(
                "() => [...document.querySelectorAll('table td')]"
                ".some(c => c.innerText.trim() === 'clean_sales')"
                " && document.body.innerText.includes("
                "'Outputs, and why a step failed or was skipped')",
                timeout=30_000,
            )
        except Exception as exc:  # playwright's TimeoutError
            text = await page.inner_text("body")
            raise AssertionError(f"{ui}: no results table and lines in {text!r}") from exc
        assert await beyond_the_window(page) == [], ui


async def beyond_the_window(page: Any) -> list[str]:
    """Table cells whose right edge is past the window's (off-screen without scrolling)."""
    found: list[str] = await page.evaluate(
        "() => [...document.querySelectorAll('table td, table th')]"
        ".filter(c => c.getBoundingClientRect().right > window.innerWidth + 1)"
        ".map(c => c.innerText.slice(0, 60))"
    )
    return found


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


def start_approval_run(
    server: PrefectServer, tag: str, plan: dict[str, Any], values: dict[str, Any]
) -> subprocess.Popen[bytes]:
    """`execute_plan(plan, approve=True)` over tests/hitl_flows.py in a process of its own,
    its runs tagged `tag`: it pauses for missing values, then for the approval."""
    script = (
        "import asyncio, json\n"
        "from prefect import tags\n"
        "from prefect_aether.catalog.sources import CatalogSource\n"
        "from prefect_aether.flows import execute_plan\n"
        f"plan, values = json.loads({json.dumps([plan, values])!r})\n"
        f"with tags({tag!r}):\n"
        "    asyncio.run(execute_plan(plan, user_inputs=values, approve=True, return_state=True,"
        " catalog=CatalogSource(modules=['tests.hitl_flows'])))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env={**server.env, "PREFECT_INTEGRATIONS_AETHER_PAUSE_POLL_INTERVAL": "1"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_the_input_and_approval_forms_show_their_fields_and_steps(
    ui_server: PrefectServer, page: Any, tmp_path: Path
) -> None:
    tag = f"ui-forms-{int(time.time() * 1000)}"
    plan = {
        "steps": [
            {
                "id": "hi",
                "action": "greet",
                "inputs": {"name": "${user.name}", "tone": "${user.tone}"},
            }
        ]
    }
    runner = start_approval_run(ui_server, tag, plan, {})
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
            # The plan is in the form itself: its steps, actions and the values they get.
            for shown in ("Approve or reject it below", "greet", "ada", "loud"):
                assert shown in text, (ui, shown, text)
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(
                f"{ui_server.api_url}/flow_runs/{run_id}/resume",
                json={"run_input": {"decision": "reject", "approver": "ui-test"}},
            )
        runner.wait(120)
    finally:
        if runner.poll() is None:
            runner.kill()


# What an attacker puts in a goal, a literal or a value to make the approval screen lie:
# hide the steps, fake a review, leak the reviewer's address through images, plant links.
LEAK = "http://127.0.0.1:9"
ADVERSARIAL_GOAL = (
    "<details><summary>steps</summary> **Reviewed by SecOps: safe to approve** "
    f"![pixel]({LEAK}/goal.png) <img src={LEAK}/goal2.png> [click here]({LEAK}/phish) "
    f"{LEAK}/autolink www.example.com evil.example.com mail ops@example.com"
)
ADVERSARIAL_PLAN = {
    "extras": {"goal": ADVERSARIAL_GOAL},
    "steps": [
        {"id": "hi", "action": "greet", "inputs": {"name": "${user.name}"}},
        {
            "id": "loud",
            "action": "shout",
            "inputs": {"text": f"`</td><a href='{LEAK}/cell'>x</a>` [y]({LEAK}/literal)"},
            "after": ["hi"],
        },
    ],
}
ADVERSARIAL_NAME = f"<img src={LEAK}/value.png> **bold** [z]({LEAK}/value)"


async def injected(page: Any) -> dict[str, int]:
    """Elements an injection would have made: hidden sections, fake emphasis, links and
    images pointing at the attacker."""
    counts = await page.evaluate(
        """leak => {
          // Links the UI itself shows (its own pages, Prefect's site) are not injected.
          const outside = href => {
            if (!href) return false;
            const host = new URL(href, location.href).host;
            return host !== location.host && !/(^|[.])prefect[.]io$/.test(host);
          };
          return {
            details: document.querySelectorAll('details').length,
            links: [...document.querySelectorAll('a')].filter(a => outside(a.href)).length,
            images: [...document.querySelectorAll('img')].filter(
                i => (i.src || '').includes(leak)).length,
            bold: [...document.querySelectorAll('strong, b')].filter(
                b => b.innerText.includes('SecOps')).length,
          };
        }""",
        LEAK,
    )
    return dict(counts)


async def test_untrusted_text_is_inert_in_both_uis(
    ui_server: PrefectServer, page: Any, tmp_path: Path
) -> None:
    """The plan and approval artifacts of an adversarial plan, rendered by each Prefect
    UI in Chromium: no injected element, link or image, no request to the attacker's
    address, and every step still visible."""
    from tests import figures

    tag = f"ui-inert-{int(time.time() * 1000)}"
    runner = start_approval_run(ui_server, tag, ADVERSARIAL_PLAN, {"name": ADVERSARIAL_NAME})
    leaked: list[str] = []
    page.on("request", lambda request: leaked.append(request.url) if LEAK in request.url else None)
    try:
        run_id = await paused(ui_server, tag, 1)
        await check_artifacts(ui_server, page, run_id, "aether-approval-")
        async with httpx.AsyncClient(timeout=10) as http:
            await http.post(
                f"{ui_server.api_url}/flow_runs/{run_id}/resume",
                json={"run_input": {"decision": "approve", "approver": "ui-test"}},
            )
        assert runner.wait(180) == 0
        plan_run = httpx.post(
            f"{ui_server.api_url}/flow_runs/filter",
            json={
                "flow_runs": {"tags": {"all_": [tag]}},
                "flows": {"name": {"any_": ["aether-plan"]}},
            },
            timeout=10,
        ).json()
        assert plan_run, "the approved plan did not run"
        await check_artifacts(ui_server, page, plan_run[0]["id"], "aether-plan-")
        await check_artifacts(
            ui_server, page, plan_run[0]["id"], "aether-results-", goal_shown=False
        )
    finally:
        if runner.poll() is None:
            runner.kill()
    assert leaked == []
    figures.add("guardrails.ui_injection_blocked", 3 * len(UIS))


async def check_artifacts(
    ui_server: PrefectServer, page: Any, run_id: str, key: str, *, goal_shown: bool = True
) -> None:
    from tests import figures

    response = httpx.post(
        f"{ui_server.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["markdown"]}}},
        timeout=10,
    )
    [artifact] = [a for a in response.json() if a["key"].startswith(key)]
    for ui, prefix in UIS.items():
        figures.add("guardrails.ui_injection_tried")
        await page.goto(f"{ui_server.ui_url}{prefix}/artifacts/artifact/{artifact['id']}")
        await page.wait_for_selector("table", timeout=30_000)
        await page.wait_for_timeout(1000)
        found = await injected(page)
        hrefs = await page.evaluate(
            "() => [...document.querySelectorAll('a')].filter(a => a.href && "
            "!a.href.includes('prefect.io') && "
            "new URL(a.href, location.href).host !== location.host).map(a => a.outerHTML)"
        )
        assert found == {"details": 0, "links": 0, "images": 0, "bold": 0}, (ui, hrefs)
        text = await page.inner_text("body")
        if goal_shown:
            # The attacker's text is there to read, as text.
            assert "Reviewed by SecOps" in text, ui
        rows = await page.eval_on_selector_all(
            "table tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
        )
        cells = {cell for row in rows for cell in row}
        assert cells >= {"hi", "loud"}, (ui, rows)
