from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor
from prefect_aether.catalog.words import stem
from prefect_aether.planning._goal import read_goal
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.llm_planner import PlanningContext, PlanningEvent

ROOT = Path(__file__).resolve().parent.parent

LOAD = ("load_sales", "load_sales", {})
CLEAN = ("clean_sales", "clean_sales", {"rows": "${load_sales.rows}"})
REGIONS = ("revenue_by_region", "revenue_by_region", {"records": "${clean_sales.records}"})
TREND = ("monthly_trend", "monthly_trend", {"records": "${clean_sales.records}"})
ANOMALIES = ("detect_anomalies", "detect_anomalies", {"records": "${clean_sales.records}"})
REPORT = (
    "build_report",
    "build_report",
    {
        "title": "${user.title}",
        "region_totals": "${revenue_by_region.totals}",
        "top_region": "${revenue_by_region.top_region}",
        "growth_pct": "${monthly_trend.growth_pct}",
    },
)
SAVE = ("save_report", "save_report", {"markdown": "${build_report.markdown}"})

GOALS: list[tuple[str, dict[str, Any], list[tuple[str, str, dict[str, Any]]], bool]] = [
    # goal, user inputs, exact plan, complete (no missing user values)
    ("load the sales data", {}, [LOAD], True),
    (
        "load sales from my csv",
        {"path": "x.csv"},
        [("load_sales", "load_sales", {"path": "${user.path}"})],
        True,
    ),
    ("clean the sales data", {}, [LOAD, CLEAN], True),
    ("compute revenue by region", {}, [LOAD, CLEAN, REGIONS], True),
    ("show the monthly trend", {}, [LOAD, CLEAN, TREND], True),
    ("detect anomalies in the sales", {}, [LOAD, CLEAN, ANOMALIES], True),
    (
        "load the sales, clean them, then compute revenue by region",
        {},
        [LOAD, CLEAN, REGIONS],
        True,
    ),
    ("revenue by region and monthly trend", {}, [LOAD, CLEAN, REGIONS, TREND], True),
    ("monthly trend; revenue by region", {}, [LOAD, CLEAN, TREND, REGIONS], True),
    ("build a report", {}, [LOAD, CLEAN, REGIONS, TREND, REPORT], False),
    ("build a report", {"title": "Q3"}, [LOAD, CLEAN, REGIONS, TREND, REPORT], True),
    ("save the report", {}, [LOAD, CLEAN, REGIONS, TREND, REPORT, SAVE], False),
    (
        "save the report to the out folder",
        {"output_dir": "out"},
        [
            LOAD,
            CLEAN,
            REGIONS,
            TREND,
            REPORT,
            ("save_report", "save_report", {**SAVE[2], "output_dir": "${user.output_dir}"}),
        ],
        False,
    ),
]


# More goals over the demo catalog: synonyms, resources in the goal, sequence words and
# reordered clauses. (goal, exact plan as (step id, inputs, after)); ids are action names.
LOADED = [("load_sales", {}, []), ("clean_sales", {"rows": "${load_sales.rows}"}, [])]
ON_CLEAN = {"records": "${clean_sales.records}"}
REPORT_IN = {
    "title": "${user.title}",
    "region_totals": "${revenue_by_region.totals}",
    "top_region": "${revenue_by_region.top_region}",
    "growth_pct": "${monthly_trend.growth_pct}",
}
MORE_GOALS: list[tuple[str, list[tuple[str, dict[str, Any], list[str]]]]] = [
    ("calculate the revenue per region", [*LOADED, ("revenue_by_region", ON_CLEAN, [])]),
    ("find outliers in the sales", [*LOADED, ("detect_anomalies", ON_CLEAN, [])]),
    (
        "first detect anomalies, then compute the monthly trend",
        [
            *LOADED,
            ("detect_anomalies", ON_CLEAN, []),
            # the trend reads the clean records, not the anomalous ones, and waits in order
            ("monthly_trend", ON_CLEAN, ["detect_anomalies"]),
        ],
    ),
    (
        "load 'flows/data/sales.csv' and show the monthly trend",
        [
            ("load_sales", {"path": "flows/data/sales.csv"}, []),
            ("clean_sales", {"rows": "${load_sales.rows}"}, []),
            ("monthly_trend", ON_CLEAN, []),
        ],
    ),
    ("what is the growth over the period?", [*LOADED, ("monthly_trend", ON_CLEAN, [])]),
    (
        "save the report after computing the revenue by region",
        [
            *LOADED,
            ("revenue_by_region", ON_CLEAN, []),
            ("monthly_trend", ON_CLEAN, []),
            ("build_report", REPORT_IN, []),
            ("save_report", {"markdown": "${build_report.markdown}"}, []),
        ],
    ),
    (
        "spot unusual records with a z threshold of 2.5",
        [*LOADED, ("detect_anomalies", {**ON_CLEAN, "z_threshold": 2.5}, [])],
    ),
    ("read the first 10 rows of the sales", [("load_sales", {"limit": 10}, [])]),
    (
        "compute revenue by region then detect anomalies",
        [
            *LOADED,
            ("revenue_by_region", ON_CLEAN, []),
            ("detect_anomalies", ON_CLEAN, ["revenue_by_region"]),
        ],
    ),
    (
        "monthly trend and anomalies, then a report titled 'Q3 review'",
        [
            *LOADED,
            ("monthly_trend", ON_CLEAN, []),
            ("detect_anomalies", ON_CLEAN, []),
            ("revenue_by_region", ON_CLEAN, []),
            (
                "build_report",
                {
                    **REPORT_IN,
                    "title": "Q3 review",
                    "anomaly_count": "${detect_anomalies.count}",
                },
                [],
            ),
        ],
    ),
    (
        "After detecting anomalies, build a report",
        [
            *LOADED,
            ("detect_anomalies", ON_CLEAN, []),
            ("revenue_by_region", ON_CLEAN, []),
            ("monthly_trend", ON_CLEAN, []),
            ("build_report", {**REPORT_IN, "anomaly_count": "${detect_anomalies.count}"}, []),
        ],
    ),
]


def demo_goal() -> str:
    """`make demo`'s goal, read from the Makefile so the test cannot drift from it."""
    match = re.search(r"^DEMO_GOAL := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match is not None
    return match.group(1).strip()


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    from prefect.utilities.importtools import load_script_as_module

    catalog = ActionCatalog()
    catalog.register_module(load_script_as_module(str(ROOT / "flows" / "pipeline.py")))
    return catalog


@pytest.mark.parametrize(("goal", "user_inputs", "expected", "complete"), GOALS)
async def test_exact_plans_on_the_demo_catalog(
    catalog: ActionCatalog,
    goal: str,
    user_inputs: dict[str, Any],
    expected: list[tuple[str, str, dict[str, Any]]],
    complete: bool,
) -> None:
    result = await HeuristicPlanner(catalog).plan(
        PlanningContext(goal=goal, user_inputs=user_inputs)
    )
    assert result.plan is not None
    assert result.validation is not None
    assert [(s.id, s.action, s.inputs) for s in result.plan.steps] == expected
    assert result.validation.ok is complete
    assert result.validation.is_partial_ok() is not complete
    assert result.plan.extras == {"goal": goal, "planner": "heuristic"}
    assert result.planner == "heuristic"


async def test_same_input_same_plan(catalog: ActionCatalog) -> None:
    ctx = PlanningContext(goal="revenue by region and monthly trend")
    first = await HeuristicPlanner(catalog).plan(ctx)
    second = await HeuristicPlanner(catalog).plan(ctx)
    assert first.plan is not None
    assert second.plan is not None
    assert first.plan.plan_id == second.plan.plan_id


async def test_events_match_the_llm_planner(catalog: ActionCatalog) -> None:
    events: list[PlanningEvent] = []
    await HeuristicPlanner(catalog).plan(
        PlanningContext(goal="load the sales"), on_event=events.append
    )
    assert [e.phase for e in events] == ["start", "validation", "success"]
    assert events[-1].plan_dict is not None


async def test_a_failing_event_callback_never_breaks_planning(catalog: ActionCatalog) -> None:
    seen: list[str] = []

    async def callback(event: PlanningEvent) -> None:
        seen.append(event.phase)
        raise RuntimeError("callback bug")

    result = await HeuristicPlanner(catalog).plan(
        PlanningContext(goal="load the sales"), on_event=callback
    )
    assert result.plan is not None
    assert seen == ["start", "validation", "success"]


async def test_unknown_goal_fails_cleanly(catalog: ActionCatalog) -> None:
    result = await HeuristicPlanner(catalog).plan(PlanningContext(goal="launch the rocket"))
    assert result.plan is None
    assert result.events[-1].phase == "failure"
    assert result.events[-1].message == "no action can: launch the rocket"
    assert result.unserved == ["launch the rocket"]


async def test_partial_plan_refused_when_not_allowed(catalog: ActionCatalog) -> None:
    ctx = PlanningContext(goal="build a report", allow_partial_plans=False)
    result = await HeuristicPlanner(catalog).plan(ctx)
    assert result.plan is None
    assert result.validation is not None
    assert result.validation.missing_user_bindings == {"title": ["build_report.title"]}


async def test_backward_chaining_depth_is_bounded(catalog: ActionCatalog) -> None:
    result = await HeuristicPlanner(catalog, max_depth=1).plan(
        PlanningContext(goal="compute revenue by region")
    )
    assert result.plan is not None
    assert [(s.id, s.inputs) for s in result.plan.steps] == [
        ("clean_sales", {"rows": "${user.rows}"}),
        ("revenue_by_region", {"records": "${clean_sales.records}"}),
    ]


@pytest.mark.parametrize(("goal", "expected"), MORE_GOALS)
async def test_more_exact_plans_on_the_demo_catalog(
    catalog: ActionCatalog, goal: str, expected: list[tuple[str, dict[str, Any], list[str]]]
) -> None:
    result = await HeuristicPlanner(catalog).plan(PlanningContext(goal=goal))
    assert result.plan is not None
    assert [(s.id, s.inputs, s.after) for s in result.plan.steps] == expected
    assert all(s.action == s.id for s in result.plan.steps)


def test_demo_goal_wires_every_branch_into_the_report(catalog: ActionCatalog) -> None:
    plan = HeuristicPlanner(catalog).build(
        PlanningContext(goal=demo_goal(), user_inputs={"title": "Sales 2026", "output_dir": "out"})
    )
    report = next(s for s in plan.steps if s.action == "build_report")
    assert report.inputs["anomaly_count"] == "${detect_anomalies.count}"
    # No step's output is a dead end: every step but the last feeds a later one.
    fed = {b for s in plan.steps for b in re.findall(r"\$\{(\w+)\.", json.dumps(s.inputs))}
    assert {s.id for s in plan.steps} - fed == {"save_report"}
    reasons = {s.id: s.extras["reason"] for s in plan.steps}
    assert reasons["detect_anomalies"].startswith("asked for by 'detect anomalies'")
    assert reasons["clean_sales"] == "produces 'records' for revenue_by_region.records"


@pytest.mark.usefixtures("prefect_server")
async def test_demo_goal_report_matches_the_hand_written_plan(
    catalog: ActionCatalog, tmp_path: Path
) -> None:
    csv = str(ROOT / "flows" / "data" / "sales.csv")
    planned = HeuristicPlanner(catalog).build(
        PlanningContext(
            goal=demo_goal(), user_inputs={"title": "Sales 2026", "output_dir": str(tmp_path / "a")}
        )
    )
    ran = await PlanExecutor(catalog).execute(
        planned, user_inputs={"title": "Sales 2026", "output_dir": str(tmp_path / "a")}
    )
    assert ran.ok, ran.errors
    by_hand = CandidatePlan.from_dict(json.loads((ROOT / "flows" / "plan.json").read_text()))
    ran_by_hand = await PlanExecutor(catalog).execute(
        by_hand, user_inputs={"csv_path": csv, "output_dir": str(tmp_path / "b")}
    )
    assert ran_by_hand.ok, ran_by_hand.errors
    report = (tmp_path / "a" / "report.md").read_text()
    assert "Anomalous records: 1" in report
    assert report == (tmp_path / "b" / "report.md").read_text()


def test_goal_resources_and_clauses() -> None:
    goal = read_goal(
        "Ask Dr. Smith about 'example.jpg', e.g. the file at https://x.org/a.b/c.png?s=1; "
        'then send the note "hi, there. bye" and save it after computing 3.5 kg of rows.'
    )
    assert [(r.value, r.kind, r.media) for r in goal.resources] == [
        ("https://x.org/a.b/c.png?s=1", "url", None),
        ("example.jpg", "file", "image"),
        ("hi, there. bye", "text", None),
        ("3.5 kg", "number", None),
    ]
    assert [(c.text, c.follows) for c in goal.clauses] == [
        ("Ask Dr Smith about", False),
        ("e.g the file at", False),
        ("send the note", True),
        ("computing of rows", False),
        ("save it", True),
    ]
    assert goal.resources[2].cue == {stem("send"), stem("note")}


def test_words_meet_across_forms_and_synonyms() -> None:
    assert stem("translate") == stem("translation")
    assert stem("images") == stem("image") == stem("picture")
    assert stem("find") == stem("search")


def small_catalog() -> ActionCatalog:
    @flow(name="text_to_audio", version="1")
    def text_to_audio(text: str) -> dict[str, str]:
        """Speak a text aloud.

        Args:
            text: The text to speak.
        """
        return {"audio": text}

    @flow(name="audio_to_text", version="1")
    def audio_to_text(audio: str) -> str:
        """Write down the words spoken in an audio file.

        Args:
            audio: The audio file.
        """
        return audio

    @flow(name="summarize_text", version="1")
    def summarize_text(text: str) -> str:
        """Summarize a text.

        Args:
            text: The text.
        """
        return text

    @flow(name="book_taxi", version="1")
    def book_taxi(destination: str) -> None:
        """Book a taxi to a destination."""

    @flow(name="play_song", version="1")
    def play_song(song: str) -> None:
        """Play a song."""

    catalog = ActionCatalog()
    for f in (text_to_audio, audio_to_text, summarize_text, book_taxi, play_song):
        catalog.register(f)
    return catalog


def test_direction_of_the_data_tells_a_to_b_from_b_to_a() -> None:
    planner = HeuristicPlanner(small_catalog())
    to_text = planner.build(PlanningContext(goal="convert 'talk.wav' into text"))
    assert [(s.action, s.inputs) for s in to_text.steps] == [
        ("audio_to_text", {"audio": "talk.wav"})
    ]
    to_audio = planner.build(PlanningContext(goal="convert the text 'hello' to audio"))
    assert [(s.action, s.inputs) for s in to_audio.steps] == [("text_to_audio", {"text": "hello"})]


def test_an_action_may_serve_several_steps_and_outputs_flow_on() -> None:
    planner = HeuristicPlanner(small_catalog())
    plan = planner.build(
        PlanningContext(goal="summarize 'first text' and summarize 'second text', then speak it")
    )
    assert [(s.id, s.inputs) for s in plan.steps] == [
        ("summarize_text", {"text": "first text"}),
        ("summarize_text_2", {"text": "second text"}),
        ("text_to_audio", {"text": "${summarize_text_2.result}"}),
    ]


def test_order_only_edges_for_then_without_data() -> None:
    plan = HeuristicPlanner(small_catalog()).build(
        PlanningContext(goal="book a taxi to 'the airport', then play the song 'Yellow'")
    )
    assert [(s.id, s.inputs, s.after) for s in plan.steps] == [
        ("book_taxi", {"destination": "the airport"}, []),
        ("play_song", {"song": "Yellow"}, ["book_taxi"]),
    ]


def test_plans_are_the_same_in_every_process() -> None:
    script = (
        "import json, sys\n"
        "from prefect.utilities.importtools import load_script_as_module\n"
        "from prefect_aether import ActionCatalog, HeuristicPlanner, PlanningContext\n"
        "c = ActionCatalog(); c.register_module(load_script_as_module(sys.argv[1]))\n"
        "goals = ['revenue and trend and anomalies then report', 'clean and count and save',\n"
        "         'the sales, the region, the month']\n"
        "plans = [HeuristicPlanner(c).build(PlanningContext(goal=g)).to_dict() for g in goals]\n"
        "print(json.dumps(plans, sort_keys=True))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, str(ROOT / "flows" / "pipeline.py")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_plan_artifact_shows_reasons_and_dotted_order_edges() -> None:
    from prefect_aether.execution._report import plan_markdown
    from prefect_aether.plan import step_dependencies
    from prefect_aether.validation.validate import validate_plan

    catalog = small_catalog()
    plan = HeuristicPlanner(catalog).build(
        PlanningContext(goal="book a taxi to 'the airport', then play the song 'Yellow'")
    )
    levels = validate_plan(plan, catalog).levels
    text = plan_markdown(plan, levels, step_dependencies(plan))
    assert "| level | step | action | waits for | inputs | why |" in text
    assert "asked for by \\'play the song\\' \\(matched play, song\\)" in text
    assert "| 2 | play\\_song | play\\_song | book\\_taxi (order) |" in text


def test_cli_plan_prints_why_each_step_is_there() -> None:
    from typer.testing import CliRunner

    from prefect_aether.cli.app import app

    result = CliRunner().invoke(
        app,
        [
            "plan",
            "detect anomalies",
            "--module",
            str(ROOT / "flows" / "pipeline.py"),
            "--planner",
            "heuristic",
            "--no-cache",
        ],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 0, result.output
    assert "why" in result.output
    assert "produces 'records' for detect_anomalies.records" in result.output


def test_a_file_goes_only_where_its_media_fits() -> None:
    plan = HeuristicPlanner(small_catalog()).build(
        PlanningContext(goal="write down the words spoken in 'photo.jpg'")
    )
    assert [(s.action, s.inputs) for s in plan.steps] == [
        ("audio_to_text", {"audio": "${user.audio}"})
    ]
    spoken = HeuristicPlanner(small_catalog()).build(
        PlanningContext(goal="write down the words spoken in 'talk.wav'")
    )
    assert [(s.action, s.inputs) for s in spoken.steps] == [
        ("audio_to_text", {"audio": "talk.wav"})
    ]
