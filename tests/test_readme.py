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
