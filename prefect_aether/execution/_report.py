"""What a plan run shows in the Prefect UI: artifacts and events (private to `_run`)."""

from __future__ import annotations

import functools
import json
import re
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prefect.artifacts import MarkdownArtifact
from prefect.events import emit_event

from prefect_aether._internal.text import inert
from prefect_aether.plan import CandidatePlan, canonical_json, iter_bindings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

EVENT_PREFIX = "prefect-aether.step"
_VALUE_CHARS = 120


def _json(value: Any, limit: int) -> str:
    """Untrusted JSON made inert, with spaces after its commas and colons so a table
    cell can wrap it (canonical JSON has none: one long word overflows the page)."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return inert(text, limit)


def _inputs_cell(inputs: Mapping[str, Any], values: Mapping[str, Any] | None) -> str:
    """Each input with its binding and, for a `${user.*}` binding whose value is known,
    the value it gets (a secret-looking key's value is never shown)."""
    from prefect_aether.validation.validate import looks_like_secret

    parts = []
    for name, value in inputs.items():
        text = f"{inert(name, 60)} = {_json(value, _VALUE_CHARS)}"
        key = value[7:-1] if isinstance(value, str) and value.startswith("${user.") else None
        if key is not None and values is not None and key in values:
            shown = "(secret, not shown)" if looks_like_secret(key) else _json(values[key], 80)
            text += f" → {shown}"
        parts.append(text)
    return "; ".join(parts) or "—"


def plan_markdown(
    plan: CandidatePlan,
    levels: list[list[str]],
    deps: Mapping[str, list[str]],
    *,
    user_inputs: Mapping[str, Any] | None = None,
) -> str:
    """Markdown of a plan that reads the same in both Prefect UIs: its steps by level,
    what each waits for (the DAG), its inputs and why it is there; with `user_inputs`,
    the values the plan will use (secrets masked). Every string that did not come from
    this code is escaped (`inert`)."""
    from prefect_aether.validation.validate import looks_like_secret

    goal = plan.extras.get("goal")
    lines = [
        f"# Plan {plan.plan_id}",
        "",
        f"{len(plan.steps)} steps in {len(levels)} levels."
        + (f" Goal: {inert(str(goal), 300)}" if goal else ""),
        "",
        f"Every run of this plan is tagged plan:{plan.plan_id}; with the plan store on, "
        f"prefect-aether show {plan.plan_id} shows how it was planned and each execution.",
        "",
        "| level | step | action | waits for | inputs | why |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by_id = {s.id: s for s in plan.steps}
    for number, level in enumerate(levels, 1):
        for sid in level:
            step = by_id[sid]
            data = {b.step_id for _, b in iter_bindings(step.inputs)}
            waits = ", ".join(
                inert(dep, 60) + ("" if dep in data else " (order)")
                for dep in dict.fromkeys(deps.get(sid, []))
            )
            reason = inert(str(step.extras.get("reason", "")), 200) or "—"
            lines.append(
                f"| {number} | {inert(sid, 60)} | {inert(step.action, 80)} | {waits or '—'} "
                f"| {_inputs_cell(step.inputs, user_inputs)} | {reason} |"
            )
    if user_inputs:
        used: dict[str, list[str]] = {}
        for step in plan.steps:
            for _, binding in iter_bindings(step.inputs):
                if binding.kind == "external" and binding.key is not None:
                    used.setdefault(binding.key, []).append(step.id)
        lines += ["", "Values the plan will use:", "", "| value | used by | given |"]
        lines.append("| --- | --- | --- |")
        for key in sorted(used):
            shown = (
                "(secret, not shown)"
                if looks_like_secret(key)
                else inert(canonical_json(user_inputs[key]), _VALUE_CHARS)
                if key in user_inputs
                else "(missing)"
            )
            steps = ", ".join(inert(s, 60) for s in dict.fromkeys(used[key]))
            lines.append(f"| {inert(key, 60)} | {steps} | {shown} |")
    return "\n".join(lines)


def approval_markdown(plan: CandidatePlan, values: Mapping[str, Any], link: str) -> str:
    """What the approval form shows above its fields: the plan's steps, their actions and
    the values they will run with (secret-looking ones not shown), and the run's page."""
    lines = [
        f"**Plan {plan.plan_id}**: {len(plan.steps)} steps. Approve or reject it below.",
        "",
        "| step | action | inputs → values |",
        "| --- | --- | --- |",
    ]
    for step in plan.steps:
        lines.append(
            f"| {inert(step.id, 60)} | {inert(step.action, 80)} "
            f"| {_inputs_cell(step.inputs, values)} |"
        )
    # The link is ours (the UI's URL and the run's id), not untrusted text.
    lines += ["", f"The run: {link}"]
    return "\n".join(lines)


def results_markdown(
    plan_id: str, steps: Iterable[tuple[str, str, str, float | None, str, str]]
) -> str:
    """The results artifact: a table of each step's action, state and seconds, then a
    line per step with its output preview, or why it failed or was skipped (its masked
    error, or the reason). The long texts are lines, not cells: the classic UI never
    wraps a table cell, and both UIs wrap lines to the window. Every text that did not
    come from this code is made inert, with break points in long words."""
    table = [
        f"# Results of plan {plan_id}",
        "",
        "| step | action | state | seconds |",
        "| --- | --- | --- | --- |",
    ]
    details = ["", "Outputs, and why a step failed or was skipped:", ""]
    for sid, action, state, duration, output, why in steps:
        seconds = "—" if duration is None else f"{duration:.2f}"
        table.append(f"| {inert(sid, 60)} | {inert(action, 80)} | {inert(state, 30)} | {seconds} |")
        if why:
            details.append(f"- {inert(sid, 60)} — why: {_wrappable(inert(why, 300))}")
        elif output:
            details.append(f"- {inert(sid, 60)} — output: {_wrappable(inert(output))}")
    return "\n".join(table + details)


_PUNCTUATION = re.compile(r"([,:;/])(?=\S)")
_LONG_WORD = re.compile(r"([^\s\u200b]{30})(?=[^\s\u200b])")


def _wrappable(text: str) -> str:
    """`text` with a zero-width space after each comma, colon, semicolon and slash and
    inside any 30 characters without a break, so a table cell wraps it to the window
    (compact JSON is one long word that pushes the table off-screen).

    >>> _wrappable('{"a":[1,2]}') == '{"a":\u200b[1,\u200b2]}'
    True
    """
    return _LONG_WORD.sub("\\1\u200b", _PUNCTUATION.sub("\\1\u200b", text))


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


async def plan_artifact(
    plan: CandidatePlan,
    levels: list[list[str]],
    deps: Mapping[str, list[str]],
    user_inputs: Mapping[str, Any],
    plan_id: str,
    client: PrefectClient | None,
) -> None:
    """Write (or, after a replan, update) the plan artifact of one execution."""
    await MarkdownArtifact(
        markdown=plan_markdown(plan, levels, deps, user_inputs=user_inputs),
        key=f"aether-plan-{plan_id}",
        description=f"prefect-aether plan {plan_id}",
    ).acreate(client)


async def results_artifact(
    plan_id: str,
    rows: Iterable[tuple[str, str, str, float | None, str, str]],
    client: PrefectClient | None,
) -> None:
    """Write the results artifact (`results_markdown`) of one execution."""
    await MarkdownArtifact(
        markdown=results_markdown(plan_id, rows),
        key=f"aether-results-{plan_id}",
        description=f"prefect-aether step results of plan {plan_id}",
    ).acreate(client)


def emit_replanned_event(plan_id: str, payload: dict[str, Any]) -> None:
    """Emit `prefect-aether.plan.replanned` on resource `prefect-aether.plan.<plan_id>`."""
    emit_event(
        event="prefect-aether.plan.replanned",
        resource={
            "prefect.resource.id": f"prefect-aether.plan.{plan_id}",
            "prefect.resource.name": f"plan-{plan_id}",
        },
        payload=payload,
    )


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, insecure: bool) -> ssl.SSLContext:
    import certifi

    context = ssl.create_default_context(cafile=cert_file or certifi.where())
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def api_client() -> PrefectClient:
    """A Prefect client (to enter with `async with`) on one TLS context per process and
    TLS settings. Prefect's `get_client()` builds a new context, loading every CA
    certificate (10-30 ms here), for each client it makes; this one is configured the
    way Prefect configures its own (`PREFECT_API_SSL_CERT_FILE`,
    `PREFECT_API_TLS_INSECURE_SKIP_VERIFY`)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    )

    context = _tls_context(
        PREFECT_API_SSL_CERT_FILE.value() or None,
        bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()),
    )
    return get_client(httpx_settings={"verify": context})
