from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefect_aether.cli import app

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = str(ROOT / "flows" / "pipeline.py")
PLAN = str(ROOT / "flows" / "plan.json")
CSV = str(ROOT / "flows" / "data" / "sales.csv")
runner = CliRunner()


def test_catalog_json_lists_the_demo_flows() -> None:
    result = runner.invoke(app, ["catalog", "--module", PIPELINE, "--json"])
    assert result.exit_code == 0, result.output
    names = [spec["name"] for spec in json.loads(result.output)]
    assert names == [
        "build_report",
        "clean_sales",
        "detect_anomalies",
        "load_sales",
        "monthly_trend",
        "revenue_by_region",
        "save_report",
    ]


def test_catalog_table() -> None:
    result = runner.invoke(app, ["catalog", "--entrypoint", f"{PIPELINE}:clean_sales"])
    assert result.exit_code == 0, result.output
    assert "clean_sales" in result.output
    assert "records: array" in result.output


def test_validate_reports_levels_and_missing_inputs() -> None:
    ok = runner.invoke(
        app, ["validate", PLAN, "-m", PIPELINE, "-i", f"csv_path={CSV}", "-i", "output_dir=out"]
    )
    assert ok.exit_code == 0, ok.output
    assert "['regions', 'trend', 'anomalies']" in ok.output
    partial = runner.invoke(app, ["validate", PLAN, "-m", PIPELINE])
    assert partial.exit_code == 2
    assert "user.csv_path is needed by load.path" in partial.output


def test_yaml_plans_are_accepted(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("steps:\n  - id: load\n    action: load_sales\n    inputs: {limit: 3}\n")
    result = runner.invoke(app, ["validate", str(plan), "-m", PIPELINE])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "missing.json", "-m", PIPELINE], "cannot read plan 'missing.json'"),
        (["validate", PLAN], "no actions: pass --module"),
        (
            ["validate", PLAN, "-m", "no/such/file.py"],
            "module file 'no/such/file.py' does not exist",
        ),
        (["validate", PLAN, "-m", "no_such_module"], "cannot import module 'no_such_module'"),
        (["validate", PLAN, "-m", PIPELINE, "-i", "novalue"], "--input 'novalue' must look like"),
        (["run", PLAN, "-m", PIPELINE, "--run-as", "thread"], "--run-as must be task or subflow"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("{not json", ".json", "is not valid JSON"),
        ("steps: [unclosed", ".yaml", "is not valid YAML"),
        ('{"steps": [{"action": "x"}]}', ".json", "steps.0.id: Field required"),
    ],
)
def test_bad_plan_files(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"plan{suffix}"
    path.write_text(content)
    result = runner.invoke(app, ["validate", str(path), "-m", PIPELINE])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("prefect_server")
def test_run_executes_the_demo_plan(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", PLAN, "-m", PIPELINE, "-i", f"csv_path={CSV}", "-i", f"output_dir={tmp_path}"],
    )
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Sales 2026")
    assert "Top region: east" in report
    assert "succeeded" in result.output
    assert "flow run" in result.output


@pytest.mark.usefixtures("prefect_server")
def test_run_refuses_a_partial_plan_without_running() -> None:
    result = runner.invoke(app, ["run", PLAN, "-m", PIPELINE])
    assert result.exit_code == 2
    assert "cannot run" in result.output
    assert "user.output_dir" in result.output
