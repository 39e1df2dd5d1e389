"""Plans you can trust: read and write roles, no destructive wiring, write conflicts
refused before anything runs, effects in the order written, and "I can't" when no
action fits (tests/effect_flows.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prefect_aether import (
    ActionCatalog,
    CandidatePlan,
    CatalogError,
    HeuristicPlanner,
    PlanExecutor,
    PlanningContext,
    PlanValidationError,
    validate_plan,
)
from prefect_aether.cli import app
from tests import effect_flows

MODULE = str(Path(effect_flows.__file__))


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(effect_flows)
    return catalog


def roles(catalog: ActionCatalog, action: str) -> dict[str, str | None]:
    spec = catalog.get(action)
    assert spec is not None
    return {slot.name: slot.role for slot in spec.inputs}


# -- roles -----------------------------------------------------------------------------


def test_roles_come_from_names_docs_verbs_and_markers(catalog: ActionCatalog) -> None:
    assert roles(catalog, "read-meters") == {"source": "read"}
    assert roles(catalog, "save-usage") == {"usage": None, "output_path": "write"}
    # A channel of a flow that posts is written to; the text is no place at all.
    assert roles(catalog, "post-note") == {"text": None, "channel": "write"}
    # The author's markers, whatever the names say.
    assert roles(catalog, "copy-readings") == {"src_file": "read", "target": "write"}
    # A file of a flow that says nothing of writing is read.
    assert roles(catalog, "tariff-for") == {"meter": None, "tariff_table": "read"}
    text = catalog.render([catalog.get("copy-readings")])  # type: ignore[list-item]
    assert "src_file: string (required) [reads], target: string (required) [writes]" in text


def test_the_operator_sets_roles_at_registration() -> None:
    catalog = ActionCatalog(roles={"tariff-for": {"tariff_table": "write"}})
    catalog.register_module(effect_flows)
    assert roles(catalog, "tariff-for")["tariff_table"] == "write"
    spec = ActionCatalog().register(effect_flows.read_meters, roles={"source": "write"})
    assert spec.inputs[0].role == "write"
    with pytest.raises(CatalogError, match="'sink', which is not one of its parameters"):
        ActionCatalog().register(effect_flows.read_meters, roles={"sink": "write"})
    with pytest.raises(CatalogError, match="a role is 'read' or 'write'"):
        ActionCatalog().register(effect_flows.read_meters, roles={"source": "append"})


# -- write conflicts -------------------------------------------------------------------


def plan_of(*steps: dict[str, Any]) -> CandidatePlan:
    return CandidatePlan.from_dict({"steps": list(steps)})


READ = {"id": "read", "action": "read-meters", "inputs": {"source": "data/readings.csv"}}
TOTAL = {"id": "total", "action": "total-usage", "inputs": {"readings": "${read}"}}


@pytest.mark.parametrize(
    "written",
    ["data/readings.csv", "./data/readings.csv", "data/../data/readings.csv", "${user.where}"],
)
def test_writing_what_the_plan_reads_is_a_write_conflict(
    catalog: ActionCatalog, written: str
) -> None:
    save = {"id": "save", "action": "save-usage", "inputs": {"usage": "${total}"}}
    save["inputs"]["output_path"] = written
    plan = plan_of(READ, TOTAL, save)
    result = validate_plan(plan, catalog, user_inputs={"where": "data/readings.csv"})
    conflicts = [i for i in result.issues if i.kind == "write_conflict"]
    assert [(i.step_id, i.field, i.details["other_step"]) for i in conflicts] == [
        ("save", "output_path", "read")
    ]
    assert result.has_structural_errors
    assert "allow_overwrite=True" in conflicts[0].message
    allowed = validate_plan(
        plan, catalog, user_inputs={"where": "data/readings.csv"}, allow_overwrite=True
    )
    assert allowed.ok


def test_one_user_value_read_and_written_is_a_conflict_before_it_is_known(
    catalog: ActionCatalog,
) -> None:
    read = {**READ, "inputs": {"source": "${user.path}"}}
    save = {
        "id": "save",
        "action": "save-usage",
        "inputs": {"usage": "${total}", "output_path": "${user.path}"},
    }
    result = validate_plan(plan_of(read, TOTAL, save), catalog)
    assert [i.kind for i in result.issues] == ["write_conflict"]


def test_two_unordered_writes_conflict_and_ordered_ones_do_not(catalog: ActionCatalog) -> None:
    def save(sid: str, after: list[str]) -> dict[str, Any]:
        inputs = {"usage": "${total}", "output_path": "out/usage.json"}
        return {"id": sid, "action": "save-usage", "inputs": inputs, "after": after}

    unordered = validate_plan(plan_of(READ, TOTAL, save("a", []), save("b", [])), catalog)
    assert [(i.kind, i.details["other_step"]) for i in unordered.issues] == [
        ("write_conflict", "b")
    ]
    assert validate_plan(plan_of(READ, TOTAL, save("a", []), save("b", ["a"])), catalog).ok


def test_a_file_written_then_read_downstream_passes_data(catalog: ActionCatalog) -> None:
    copy = {
        "id": "copy",
        "action": "copy-readings",
        "inputs": {"src_file": "in.csv", "target": "work/copy.csv"},
    }
    read = {**READ, "inputs": {"source": "work/copy.csv"}, "after": ["copy"]}
    assert validate_plan(plan_of(copy, read), catalog).ok
    # Unordered, the read may come first.
    unordered = validate_plan(plan_of(copy, {**read, "after": []}), catalog)
    assert [i.kind for i in unordered.issues] == ["write_conflict"]
    # The same step reading and writing one file overwrites its own input.
    same = {**copy, "inputs": {"src_file": "a.csv", "target": "./a.csv"}}
    assert [i.details["other_field"] for i in validate_plan(plan_of(same), catalog).issues] == [
        "src_file"
    ]


@pytest.mark.usefixtures("prefect_server")
async def test_the_executor_refuses_a_destructive_plan_before_any_run(
    catalog: ActionCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    Path("data/readings.csv").write_text("meter,kwh\nm1,2.5\n")
    save = {
        "id": "save",
        "action": "save-usage",
        "inputs": {"usage": "${total}", "output_path": "data/readings.csv"},
    }
    plan = plan_of(READ, TOTAL, save)
    with pytest.raises(PlanValidationError, match="write_conflict"):
        await PlanExecutor(catalog).execute(plan)
    assert Path("data/readings.csv").read_text() == "meter,kwh\nm1,2.5\n"
    result = await PlanExecutor(catalog, allow_overwrite=True).execute(plan)
    assert result.ok, result.errors
    assert '"total_kwh":2.5' in Path("data/readings.csv").read_text()


def test_the_cli_refuses_a_write_conflict_unless_allowed(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    save = {
        "id": "save",
        "action": "save-usage",
        "inputs": {"usage": "${total}", "output_path": "data/readings.csv"},
    }
    plan.write_text(plan_of(READ, TOTAL, save).model_dump_json())
    runner = CliRunner()
    refused = runner.invoke(app, ["validate", str(plan), "--module", MODULE])
    assert refused.exit_code == 2
    assert "write_conflict" in refused.output
    allowed = runner.invoke(app, ["validate", str(plan), "--module", MODULE, "--allow-overwrite"])
    assert allowed.exit_code == 0, allowed.output


# -- planning: each value in the slot the goal means -----------------------------------


async def plan_for(catalog: ActionCatalog, goal: str, **inputs: Any) -> Any:
    return await HeuristicPlanner(catalog).plan(PlanningContext(goal=goal, user_inputs=inputs))


async def test_files_go_where_the_goal_moves_them(catalog: ActionCatalog) -> None:
    result = await plan_for(
        catalog, "Add up the usage from data/readings.csv and save it to out/usage.json"
    )
    assert result.plan is not None
    steps = {s.action: s for s in result.plan.steps}
    assert list(steps) == ["read-meters", "total-usage", "save-usage"]
    assert steps["read-meters"].inputs == {"source": "data/readings.csv"}
    assert steps["save-usage"].inputs["output_path"] == "out/usage.json"
    assert result.validation.ok
    # Said the other way round, the write target still never lands in a read slot.
    flipped = await plan_for(
        catalog, "Save the total usage to out/usage.json, reading data/readings.csv"
    )
    assert flipped.plan is not None
    for step in flipped.plan.steps:
        if "source" in step.inputs:
            assert step.inputs["source"] != "out/usage.json"
        if "output_path" in step.inputs:
            assert step.inputs["output_path"] != "data/readings.csv"


async def test_no_producer_is_invented_for_a_plain_value(catalog: ActionCatalog) -> None:
    result = await plan_for(catalog, "What is the total usage?")
    assert result.plan is not None
    assert [s.action for s in result.plan.steps] == ["read-meters", "total-usage"]
    assert result.plan.steps[0].inputs == {"source": "${user.source}"}
    assert result.validation.missing_user_bindings == {"source": ["read_meters.source"]}


async def test_effects_keep_the_order_written(catalog: ActionCatalog) -> None:
    goal = "post 'usage report ready' to #ops and copy readings.csv to backup/readings.csv"
    result = await plan_for(catalog, goal)
    assert result.plan is not None
    by_action = {s.action: s for s in result.plan.steps}
    assert by_action["copy-readings"].after == [by_action["post-note"].id]
    parallel = await plan_for(catalog, goal + " at the same time")
    assert parallel.plan is not None
    assert all(not s.after for s in parallel.plan.steps)
    # Pure computations stay concurrent: nothing orders them.
    computed = await plan_for(
        catalog, "total the usage from a.csv and get the tariff for meter 'm1'"
    )
    assert computed.plan is not None
    assert all(not s.after for s in computed.plan.steps)


# -- "I can't" is an answer ------------------------------------------------------------


async def test_a_goal_no_action_serves_gets_no_plan(catalog: ActionCatalog) -> None:
    result = await plan_for(catalog, "Email the landlord the yearly invoice")
    assert result.plan is None
    assert result.unserved == ["Email the landlord the yearly invoice"]
    assert result.events[-1].message == ("no action can: Email the landlord the yearly invoice")


async def test_a_goal_served_in_part_plans_that_part(catalog: ActionCatalog) -> None:
    result = await plan_for(
        catalog, "Add up the usage from readings.csv and fax it to the utility company"
    )
    assert result.plan is not None
    assert [s.action for s in result.plan.steps] == ["read-meters", "total-usage"]
    assert result.unserved == ["fax it to the utility company"]
    assert result.plan.extras["unserved"] == result.unserved


def test_the_cli_says_what_no_action_can_do_and_runs_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--goal",
            "Email the landlord the yearly invoice",
            "--module",
            MODULE,
            "--planner",
            "heuristic",
            "--no-cache",
        ],
    )
    assert result.exit_code == 2
    assert "no action can: Email the landlord the yearly invoice" in " ".join(result.output.split())
    assert "Traceback" not in result.output


async def test_the_write_the_goal_asks_for_is_added_never_dropped(catalog: ActionCatalog) -> None:
    # No clause picks the writer by itself ("->"): it is added after the data it writes.
    result = await plan_for(catalog, "total usage of data/readings.csv -> out/usage.json")
    assert result.plan is not None
    steps = {s.action: s for s in result.plan.steps}
    assert list(steps) == ["read-meters", "total-usage", "save-usage"]
    total_id = steps["total-usage"].id
    assert steps["save-usage"].inputs == {
        "usage": f"${{{total_id}}}",
        "output_path": "out/usage.json",
    }
    assert "writes 'out/usage.json' as the goal asks" in steps["save-usage"].extras["reason"]
    # With no action that can write it, the write is reported, not dropped.
    readers = ActionCatalog()
    for f in (effect_flows.read_meters, effect_flows.total_usage):
        readers.register(f)
    none = await plan_for(readers, "total usage of data/readings.csv -> out/usage.json")
    assert none.plan is not None
    assert [s.action for s in none.plan.steps] == ["read-meters", "total-usage"]
    assert none.unserved == ["out/usage.json"]


async def test_values_the_goal_names_go_to_their_inputs(catalog: ActionCatalog) -> None:
    result = await plan_for(catalog, "post 'done' to #ops, then read 3 readings from a.csv")
    assert result.plan is not None
    post = next(s for s in result.plan.steps if s.action == "post-note")
    assert post.inputs == {"text": "done", "channel": "#ops"}


async def test_bare_names_and_inline_json_in_the_goal_are_values(catalog: ActionCatalog) -> None:
    # A name the catalog never uses, given bare, is the value of the text input.
    bare = await plan_for(catalog, "check boiler status")
    assert bare.plan is not None
    assert [(s.action, s.inputs) for s in bare.plan.steps] == [
        ("meter-status", {"meter": "boiler"})
    ]
    # Right after the input's own name, even a word the catalog knows.
    named = await plan_for(catalog, "check the status of meter m-42")
    assert named.plan is not None
    assert named.plan.steps[0].inputs == {"meter": "m-42"}
    # An object written in the goal is a value; the URL goes where the action writes.
    hook = await plan_for(catalog, 'POST {"state": "on", "n": 2} to https://hooks.example.com/x')
    assert hook.plan is not None
    assert [(s.action, s.inputs) for s in hook.plan.steps] == [
        ("send-payload", {"url": "https://hooks.example.com/x", "payload": {"state": "on", "n": 2}})
    ]
    # Everyday words are no values: the user is asked.
    asked = await plan_for(catalog, "check the status of the current one")
    assert asked.plan is not None
    assert asked.plan.steps[0].inputs == {"meter": "${user.meter}"}
