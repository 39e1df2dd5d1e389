"""What a plan run shows in the Prefect UI: artifacts and events (private to `execute.py`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prefect.events import emit_event

from prefect_aether.plan import CandidatePlan, canonical_json, iter_bindings

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
# The same characters once JSON has escaped them (`"\x1b[31m"` becomes `\u001b[31m`).
_JSON_ANSI = re.compile(
    r"\\u001[bB]\[[0-?]*[ -/]*[@-~]|\\u001[bB]\][^\\]*(?:\\u0007|\\u001[bB]\\\\)?"
)
_JSON_CONTROL = re.compile(r"\\u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F]|7[fF])")
PREVIEW_CHARS = 200
EVENT_PREFIX = "prefect-aether.step"


def sanitize(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Strip ANSI escapes and control/invisible characters; truncate to `limit` characters.

    >>> sanitize("\\x1b[31mred\\x1b[0m\\x07 text", limit=6)
    'red t…'
    """
    clean = _CONTROL.sub("", _ANSI.sub("", text)).replace("\n", " ").replace("\t", " ")
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A short, sanitized one-line preview of any value (JSON when it can be).

    >>> preview({"msg": "\x1b[31mred\x1b[0m\x07!"})
    '{"msg":"red!"}'
    """
    try:
        text = canonical_json(value)
        text = _JSON_CONTROL.sub("", _JSON_ANSI.sub("", text))
    except (TypeError, ValueError):
        text = repr(value)
    return sanitize(text, limit)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def plan_markdown(
    plan: CandidatePlan, levels: list[list[str]], deps: Mapping[str, list[str]]
) -> str:
    """Markdown of a plan: its steps with inputs and reasons, and a mermaid graph of the DAG.

    Data edges are solid arrows, order-only (`after`) edges dotted ones.
    """
    lines = [
        f"# Plan `{plan.plan_id}`",
        "",
        f"{len(plan.steps)} steps in {len(levels)} levels."
        + (f" Goal: {sanitize(str(plan.extras['goal']), 300)}." if plan.extras.get("goal") else ""),
        "",
        f"Every run of this plan is tagged `plan:{plan.plan_id}`; with the plan store on, "
        f"`prefect-aether show {plan.plan_id}` shows how it was planned and each execution.",
        "",
        "| step | action | inputs | after | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    order = [sid for level in levels for sid in level]
    by_id = {s.id: s for s in plan.steps}
    for sid in order:
        step = by_id[sid]
        after = ", ".join(f"`{a}`" for a in step.after)
        reason = _cell(sanitize(str(step.extras.get("reason", "")), 200))
        lines.append(
            f"| `{sid}` | `{step.action}` | `{_cell(sanitize(canonical_json(step.inputs), 300))}` "
            f"| {after} | {reason} |"
        )
    lines += ["", "```mermaid", "graph TD"]
    for sid in order:
        lines.append(f'    {sid}["{sid}: {step_label(by_id[sid].action)}"]')
    for sid in order:
        ordered = set(by_id[sid].after)
        for dep in dict.fromkeys(deps.get(sid, [])):
            data = dep in {b.step_id for _, b in iter_bindings(by_id[sid].inputs)}
            arrow = "-->" if data or dep not in ordered else "-.->"
            lines.append(f"    {dep} {arrow} {sid}")
    lines.append("```")
    return "\n".join(lines)


def step_label(action: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:@/ -]", "", action)


def emit_step_event(
    phase: str, plan_id: str, step_id: str, action: str, payload: dict[str, Any]
) -> None:
    """Emit `prefect-aether.step.<phase>` on resource `prefect-aether.plan.<plan_id>`."""
    emit_event(
        event=f"{EVENT_PREFIX}.{phase}",
        resource={
            "prefect.resource.id": f"prefect-aether.plan.{plan_id}",
            "prefect.resource.name": f"plan-{plan_id}",
        },
        related=[
            {
                "prefect.resource.id": f"prefect-aether.step.{plan_id}.{step_id}",
                "prefect.resource.role": "step",
                "prefect.resource.name": step_id,
            },
            {
                "prefect.resource.id": f"prefect-aether.action.{step_label(action)}",
                "prefect.resource.role": "action",
            },
        ],
        payload={"step_id": step_id, "action": action, **payload},
    )
