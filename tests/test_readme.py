"""The README's example runs as written."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.usefixtures("prefect_server")
def test_readme_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    code, *snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    for snippet in snippets:  # illustrations: they must at least be valid Python
        compile(snippet, "README.md", "exec")
    output = io.StringIO()
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    printed = output.getvalue()
    assert "- load_rows: Load rows from a CSV file." in printed
    assert "user.path is needed by load.path" in printed
    assert "True {'result': 120}" in printed


def documented_commands() -> list[tuple[str, str]]:
    """Every `prefect-aether` command in a shell block of the README and the docs, with
    continuation lines joined and comments dropped: (page, command)."""
    found = []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                command = line.split("  #", 1)[0].strip()
                if command.startswith("prefect-aether "):
                    found.append((page.name, command))
    return found


def mcp_commands() -> list[str]:
    """The documented `prefect-aether mcp` commands (tests/test_mcp.py serves agents with
    them, as written; environment assignments in front of one are kept)."""
    found = []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                if "prefect-aether mcp" in line:
                    found.append(line.split("  #", 1)[0].strip())
    return found


def served_commands() -> list[tuple[str, str]]:
    """The documented commands that run and end (an MCP server serves until its client
    leaves: tests/test_mcp.py runs those)."""
    return [
        (page, c) for page, c in documented_commands() if not c.startswith("prefect-aether mcp")
    ]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(("page", "command"), served_commands())
def test_documented_commands_run(
    page: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example runs as written, against the demo catalog (a copy of flows/)."""
    import shlex
    import shutil

    from typer.testing import CliRunner

    from prefect_aether.cli.app import app, resume_flag

    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    # Some examples continue or show what an earlier one ran: run the demo plan first.
    setup = [
        "run", "flows/plan.json", "--module", "flows/pipeline.py",
        "--input", "csv_path=flows/data/sales.csv", "--input", "output_dir=out",
    ]  # fmt: skip
    assert runner.invoke(app, setup).exit_code == 0
    args = resume_flag(shlex.split(command)[1:])
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{page}: {command}\n{result.output}"
    assert "Traceback" not in result.output


def test_the_documented_commands_are_found() -> None:
    commands = [c for _, c in documented_commands()]
    assert len(commands) >= 10
    assert "prefect-aether mcp --module flows/pipeline.py" in mcp_commands()
    assert any("--transport http" in c for c in mcp_commands())
    assert any(c.startswith("prefect-aether validate") for c in commands)
    assert any("--resume" in c for c in commands)


def test_the_writing_flows_page_prints_what_it_says() -> None:
    """Each example of docs/writing-flows.md runs, in order, and prints the text block
    that follows it on the page."""
    text = (ROOT / "docs" / "writing-flows.md").read_text()
    namespace: dict[str, object] = {"__name__": "writing_flows"}
    checked = 0
    for match in re.finditer(r"```python\n(.*?)```(?:\n\n```text\n(.*?)```)?", text, flags=re.S):
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(match.group(1), "writing-flows.md", "exec", dont_inherit=True), namespace)
        if match.group(2) is not None:
            assert output.getvalue() == match.group(2)
            checked += 1
    assert checked == 3


def test_every_setting_is_documented() -> None:
    """docs/settings.md names each setting, README's summary too."""
    from prefect_aether.settings import AetherSettings

    page = (ROOT / "docs" / "settings.md").read_text()
    readme = (ROOT / "README.md").read_text()
    missing = [
        name.upper()
        for name in AetherSettings.model_fields
        if f"`{name.upper()}`" not in page or name.upper() not in readme
    ]
    assert missing == []
