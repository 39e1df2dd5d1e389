"""Who may run what: action policy tags and the catalog sources settings allow.

An action's policy comes from its tags. Prefect's `@flow` takes no tags, so they are
given at `ActionCatalog.register(flow, tags=[...])`, in a `CatalogSource`
(`action_tags`), on a deployment, or attached to the flow by `action_tags`:

- `aether:approval`: a plan that contains the action waits for a person's approval
  before anything of it runs;
- `aether:manual`: no planner ever chooses the action; only a hand-written plan may.

The deployable flows build their catalog from a `CatalogSource` run parameter. A run
parameter is untrusted: importing a module runs its code, so only the modules, files,
entrypoints, deployments and deployment tags the `PREFECT_INTEGRATIONS_AETHER_CATALOG_*`
settings list may be named; a parameter can narrow them, never add one.

Examples:
    >>> from prefect import flow
    >>> @action_tags(APPROVAL)
    ... @flow
    ... def charge_card(amount: float) -> None: ...
    >>> flow_tags(charge_card)
    ['aether:approval']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from prefect_aether.exceptions import AetherUsageError
from prefect_aether.settings import AetherSettings, current_settings

__all__ = [
    "APPROVAL",
    "MANUAL",
    "action_tags",
    "check_source",
    "flow_tags",
    "is_manual",
    "needs_approval",
    "policy_problems",
]

APPROVAL = "aether:approval"
MANUAL = "aether:manual"
_ATTRIBUTE = "__aether_tags__"

F = TypeVar("F")


class _Tagged(Protocol):
    tags: list[str]


class _Source(Protocol):
    modules: list[str]
    entrypoints: list[str]
    deployments: list[str]
    deployment_tags: list[str]


def action_tags(*tags: str) -> Callable[[F], F]:
    """Attach policy (or search) tags to a flow; `register` and `register_module` read them.

    Put it above `@flow`. Prefect's own flow options are unchanged.

    Examples:
        >>> from prefect import flow
        >>> from prefect_aether import ActionCatalog
        >>> @action_tags(MANUAL)
        ... @flow
        ... def purge_customers() -> None: ...
        >>> ActionCatalog().register(purge_customers).tags
        ['aether:manual']
    """

    def attach(flow: F) -> F:
        setattr(flow, _ATTRIBUTE, sorted({*flow_tags(flow), *tags}))
        return flow

    return attach


def flow_tags(flow: Any) -> list[str]:
    """The tags `action_tags` attached to a flow (none by default)."""
    return list(getattr(flow, _ATTRIBUTE, ()))


def needs_approval(spec: _Tagged) -> bool:
    """Whether a plan with this action must be approved by a person before it runs."""
    return APPROVAL in spec.tags


def is_manual(spec: _Tagged) -> bool:
    """Whether planners must never choose this action."""
    return MANUAL in spec.tags


RUN_MODES = ("task", "subflow")


def policy_problems(
    extras: Mapping[str, Any], settings: AetherSettings | None = None
) -> list[tuple[str, str]]:
    """The step policies in `extras` that are malformed or over the settings' bounds:
    `(key, what it must be)` each.

    Examples:
        >>> policy_problems({"retries": 25, "run_as": "task"}, current_settings())
        [('retries', 'an integer from 0 to 5 (max_step_retries)')]
    """
    settings = settings or current_settings()
    most_retries, longest = settings.max_step_retries, settings.max_step_timeout_seconds
    checks: list[tuple[str, bool, str]] = []
    if "retries" in extras:
        value = extras["retries"]
        ok = _is_int(value) and 0 <= value <= most_retries
        checks.append(("retries", ok, f"an integer from 0 to {most_retries} (max_step_retries)"))
    if "retry_delay_seconds" in extras:
        value = extras["retry_delay_seconds"]
        items = value if isinstance(value, list) else [value]
        ok = bool(items) and all(_is_number(v) and v >= 0 for v in items)
        checks.append(("retry_delay_seconds", ok, "a non-negative number or a list of them"))
    if "timeout_seconds" in extras:
        value = extras["timeout_seconds"]
        ok = _is_number(value) and 0 < value <= longest
        bound = f"a positive number up to {longest:g} (max_step_timeout_seconds)"
        checks.append(("timeout_seconds", ok, bound))
    if "reuse_within" in extras:
        value = extras["reuse_within"]
        checks.append(
            ("reuse_within", _is_number(value) and value > 0, "a positive number of seconds")
        )
    if "run_as" in extras:
        checks.append(("run_as", extras["run_as"] in RUN_MODES, f"one of {', '.join(RUN_MODES)}"))
    return [(key, expected) for key, ok, expected in checks if not ok]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _module_key(name: str) -> str:
    """A module as settings and parameters name it: a `.py` path resolved, else the
    dotted name."""
    return str(Path(name).resolve()) if name.endswith(".py") else name


def _refused(kind: str, names: Iterable[str], setting: str) -> AetherUsageError:
    listed = ", ".join(repr(n) for n in names)
    return AetherUsageError(
        f"the catalog names {kind} {listed} that the settings do not allow; a run "
        f"parameter may only narrow PREFECT_INTEGRATIONS_AETHER_{setting} (nothing was "
        "imported)"
    )


def check_source(source: _Source, settings: AetherSettings | None = None) -> None:
    """Refuse a catalog source that names anything the `catalog_*` settings do not list.

    Runs before any import. An entrypoint is allowed when it is listed in
    `catalog_entrypoints` or lives in a module `catalog_modules` lists.

    Raises:
        AetherUsageError: Naming the setting and what it does not allow.

    Examples:
        >>> from prefect_aether.catalog.sources import CatalogSource
        >>> check_source(CatalogSource(modules=["os"]), AetherSettings(catalog_modules=[]))
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        prefect_aether.exceptions.AetherUsageError: the catalog names module 'os' that ...
    """
    settings = settings or current_settings()
    modules = {_module_key(m) for m in settings.catalog_modules}
    bad = [m for m in source.modules if _module_key(m) not in modules]
    if bad:
        raise _refused("module" if len(bad) == 1 else "modules", bad, "CATALOG_MODULES")
    entrypoints = set(settings.catalog_entrypoints)
    bad = [
        e
        for e in source.entrypoints
        if e not in entrypoints and _module_key(e.rpartition(":")[0]) not in modules
    ]
    if bad:
        raise _refused("entrypoint", bad, "CATALOG_ENTRYPOINTS")
    bad = [d for d in source.deployments if d not in settings.catalog_deployments]
    if bad:
        raise _refused("deployment", bad, "CATALOG_DEPLOYMENTS")
    bad = [t for t in source.deployment_tags if t not in settings.catalog_deployment_tags]
    if bad:
        raise _refused("deployment tag", bad, "CATALOG_DEPLOYMENT_TAGS")
