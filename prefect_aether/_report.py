"""What a plan run shows in the Prefect UI: artifacts and events (private to `execute.py`)."""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prefect.events import emit_event

from prefect_aether.plan import CandidatePlan, canonical_json, iter_bindings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

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


# Every ASCII punctuation mark markdown may read (CommonMark lets all of them be
# escaped); ":", "/" and "@" too, so no autolinker finds a URL or an address.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>:/@=$%^'\"])")
_VALUE_CHARS = 120
# After escaping: where a scheme's "://", a "www." or an e-mail's "@" begins.
_AUTOLINK = re.compile(r"(\\:\\/\\/|(?<=www)\\\.|\\@)", re.IGNORECASE)


def inert(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Untrusted text made inert for markdown and HTML: sanitized (`sanitize`), `&`,
    `<` and `>` as entities, every markdown punctuation mark backslash-escaped, so it
    can never open a tag, a link, an image, a code span or a table cell. Renderers that
    turn URLs, `www.` names and e-mail addresses in plain text into links (GitHub's
    autolink literals, as Prefect's new UI does after escapes are read) find none: a
    zero-width space splits each of them.

    >>> print(inert("<b>**hi**</b> [x](http://e) `y`|"))
    &lt;b&gt;\\*\\*hi\\*\\*&lt;\\/b&gt; \\[x\\]\\(http\u200b\\:\\/\\/e\\) \\`y\\`\\|
    """
    clean = sanitize(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _AUTOLINK.sub("\u200b\\1", _MARKDOWN_SPECIAL.sub(r"\\\1", clean))


# Where a table cell's text could start a tag, an autolink, a link or an image: `<`,
# "](", and the autolink literals (a scheme's "://", "www.", an e-mail's "@").
_CELL_BREAKS = re.compile(r"(?<=<)|(?<=\])(?=\()|(?=://)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)


def cell(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Untrusted text for a table artifact cell: sanitized, and inert where Prefect's
    classic UI reads the cell as markdown, yet plain to read where the new UI shows it
    as text: a zero-width space breaks every tag, link, image and autolink.

    >>> cell("[x](http://e) <img src=y>") == "[x]\u200b(http\u200b://e) <\u200bimg src=y>"
    True
    """
    return _CELL_BREAKS.sub("\u200b", sanitize(text, limit))


def _inputs_cell(inputs: Mapping[str, Any]) -> str:
    return (
        "; ".join(
            f"{inert(name, 60)} = {inert(canonical_json(value), _VALUE_CHARS)}"
            for name, value in inputs.items()
        )
        or "—"
    )


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
    from prefect_aether.validate import looks_like_secret

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
                f"| {_inputs_cell(step.inputs)} | {reason} |"
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
