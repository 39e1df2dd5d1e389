"""Reading back the markdown tables of our artifacts (the plan, the results), as a
person reads them: cells split on unescaped pipes, markdown escapes and the zero-width
break points removed."""

from __future__ import annotations

import re

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_ESCAPED = re.compile(r"\\(.)")


def plain(cell: str) -> str:
    text = _ESCAPED.sub(r"\1", cell.strip()).replace("\u200b", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `markdown`, by column name."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [plain(c) for c in _CELL_SPLIT.split(lines[0])[1:-1]]
    return [
        dict(zip(header, (plain(c) for c in _CELL_SPLIT.split(line)[1:-1]), strict=True))
        for line in lines[2:]
    ]


def results(markdown: str) -> dict[str, dict[str, str]]:
    """The results artifact by step: `state` from its table, `output` or `why` from its
    lines (empty when there is none)."""
    found = {
        row["step"]: {"state": row["state"], "output": "", "why": ""}
        for row in table_rows(markdown)
    }
    for line in markdown.splitlines():
        if line.startswith("- ") and " — " in line:
            step, _, rest = line[2:].partition(" — ")
            kind, _, text = rest.partition(": ")
            found[plain(step)][kind] = plain(text)
    return found
