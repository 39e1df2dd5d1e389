"""Plan validation: everything that can be checked before anything runs.

The validator never raises on a bad plan: it reports every problem as a
`ValidationIssue`. It is linear in steps + bindings, uses no recursion over
the plan, and does not care about the list order of steps, only that the
dependency graph is acyclic (`graphlib`).

Examples:
    >>> from prefect import flow
    >>> from prefect_aether import ActionCatalog, CandidatePlan, validate_plan
    >>> @flow(name="double", version="1")
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> catalog = ActionCatalog()
    >>> _ = catalog.register(double)
    >>> plan = CandidatePlan.from_dict({"steps": [
    ...     {"id": "b", "action": "double", "inputs": {"x": "${a.result}"}},
    ...     {"id": "a", "action": "double", "inputs": {"x": "${user.n}"}},
    ... ]})
    >>> result = validate_plan(plan, catalog)
    >>> result.is_partial_ok(), result.missing_user_bindings, result.levels
    (True, {'n': ['a.x']}, [['a'], ['b']])
"""

from __future__ import annotations

import difflib
import gc
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from graphlib import CycleError, TopologicalSorter
from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_aether._schema import MISSING, coarse_type, compatible, schema_at_path
from prefect_aether.catalog import ActionCatalog, ActionSpec, IOSlot
from prefect_aether.exceptions import BindingError
from prefect_aether.plan import (
    SECRET_NAMESPACE,
    USER_NAMESPACE,
    Binding,
    CandidatePlan,
    PlanStep,
    iter_strings,
    nesting_depth,
    parse_binding,
)
from prefect_aether.policy import MANUAL
from prefect_aether.settings import AetherSettings

__all__ = ["IssueKind", "ValidationIssue", "ValidationResult", "validate_plan"]

IssueKind = Literal[
    "empty_plan",
    "plan_too_large",
    "duplicate_step_id",
    "invalid_step_id",
    "unknown_action",
    "unknown_input",
    "missing_input",
    "unknown_step",
    "unknown_output",
    "cycle",
    "invalid_literal",
    "type_mismatch",
    "invalid_binding",
    "invalid_policy",
    "secret_binding",
    "manual_action",
]

RUN_MODES = ("task", "subflow")
_UNCHECKED: Any = object()
# Step ids become flow run names, tags and graph labels: identifiers only.
_STEP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_IDS = {USER_NAMESPACE, SECRET_NAMESPACE}
# Prefect's rule for block document names.
_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_MAX_CANDIDATES = 5
# `${user.<key>}` names that ask a person (or an LLM) for a secret: the value would be
# stored with the plan's parameters, shown in forms and logged. Whole words only, so
# `token_limit` or `password_policy_url` are not flagged.
_SECRET_LAST_WORDS = {
    "secret",
    "secrets",
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "pin",
    "token",
    "jwt",
    "apikey",
    "credential",
    "credentials",
    "cred",
    "creds",
    "privatekey",
    "cookie",
    "otp",
}
_SECRET_PAIRS = {
    ("api", "key"),
    ("access", "key"),
    ("private", "key"),
    ("secret", "key"),
    ("signing", "key"),
    ("client", "secret"),
}


def looks_like_secret(key: str) -> bool:
    """Whether a user input key or slot name names a secret (`api_key`, `DB_PASSWORD`,
    `authToken`, `ssh_passphrase`, `card_pin`).

    Examples:
        >>> [looks_like_secret(k) for k in ("OPENAI_API_KEY", "token_limit", "authToken")]
        [True, False, True]
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]
    if not words:
        return False
    return words[-1] in _SECRET_LAST_WORDS or tuple(words[-2:]) in _SECRET_PAIRS


class ValidationIssue(BaseModel):
    """One problem in a plan, located by step and field.

    Examples:
        >>> issue = ValidationIssue(kind="unknown_step", message="no step 'x'", field="n")
        >>> issue.field
        'n'
    """

    kind: IssueKind = Field(description="What is wrong (see the module docs for the kinds).")
    message: str = Field(description="Human- and LLM-readable explanation.")
    step_id: str | None = Field(default=None, description="The step where it was found.")
    field: str | None = Field(
        default=None, description="The input (with a path into it), extra or output concerned."
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Machine-readable extras: candidates, cycle path, expected schema.",
    )

    def __str__(self) -> str:
        where = "".join(
            f" {k}={v}" for k, v in (("step", self.step_id), ("field", self.field)) if v is not None
        )
        return f"[{self.kind}]{where}: {self.message}"


class ValidationResult(BaseModel):
    """The outcome of `validate_plan`.

    Examples:
        >>> ValidationResult(ok=True).summary()
        'Plan is valid.'
    """

    ok: bool = Field(description="No issues and no missing user values: ready to run.")
    issues: list[ValidationIssue] = Field(default_factory=list, description="Every problem found.")
    has_structural_errors: bool = Field(
        default=False, description="Any issue at all (missing user values are not issues)."
    )
    missing_user_bindings: dict[str, list[str]] = Field(
        default_factory=dict,
        description='User input key to the "step.field" locations that need it.',
    )
    levels: list[list[str]] = Field(
        default_factory=list,
        description="Step ids grouped by dependency depth: each level can run together.",
    )

    def is_partial_ok(self) -> bool:
        """Structurally valid, but waiting for some `${user.*}` values."""
        return not self.has_structural_errors and bool(self.missing_user_bindings)

    def summary(self) -> str:
        """A short multi-line report, suitable for logs and LLM repair prompts."""
        if self.ok:
            return "Plan is valid."
        lines = ["Plan is invalid:" if self.has_structural_errors else "Plan needs user input:"]
        lines += [f"- {issue}" for issue in self.issues]
        for key, places in self.missing_user_bindings.items():
            lines.append(f"- [missing_user_input] user.{key} is needed by {', '.join(places)}")
        return "\n".join(lines)


def validate_plan(
    plan: CandidatePlan,
    catalog: ActionCatalog,
    *,
    user_inputs: Mapping[str, Any] | None = None,
    flow_ids: Iterable[str] | None = None,
    max_steps: int | None = None,
    allow_manual: bool = True,
) -> ValidationResult:
    """Check a plan against a catalog before anything runs.

    Args:
        plan: The plan to check.
        catalog: The actions it may use.
        user_inputs: Values for `${user.*}` bindings known so far; checked
            against the inputs they feed.
        flow_ids: Restrict actions to these groups (and global actions).
        max_steps: Largest plan accepted; defaults to the `max_steps` setting.
        allow_manual: Whether the plan may use `aether:manual` actions; planners
            validate with False (only a hand-written plan may use them).

    Returns:
        The result; it never raises for a bad plan.

    Examples:
        >>> from prefect_aether import ActionCatalog, CandidatePlan
        >>> plan = CandidatePlan.from_dict({"steps": [{"id": "a", "action": "nope"}]})
        >>> [issue.kind for issue in validate_plan(plan, ActionCatalog()).issues]
        ['unknown_action']
    """
    limit = max_steps if max_steps is not None else AetherSettings().max_steps
    if not plan.steps:
        issue = ValidationIssue(kind="empty_plan", message="The plan has no steps.")
        return _result([issue], {}, [])
    if len(plan.steps) > limit:
        issue = ValidationIssue(
            kind="plan_too_large",
            message=f"The plan has {len(plan.steps)} steps; at most {limit} are allowed.",
            details={"steps": len(plan.steps), "max_steps": limit},
        )
        return _result([issue], {}, [])
    with _gc_paused():
        return _Validator(plan, catalog, user_inputs or {}, flow_ids, allow_manual).run()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while validating.

    Validation allocates a few small containers per step and creates no
    reference cycles, so reference counting frees everything. Left on, the
    collector rescans the whole heap (a large plan included) again and again,
    which makes validating a 64k-step plan superlinear.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _result(
    issues: list[ValidationIssue], missing: dict[str, list[str]], levels: list[list[str]]
) -> ValidationResult:
    # Built from already-checked data: skip pydantic's re-validation of every level.
    return ValidationResult.model_construct(
        ok=not issues and not missing,
        issues=issues,
        has_structural_errors=bool(issues),
        missing_user_bindings=missing,
        levels=levels,
    )


def _location(field: str, loc: tuple[str | int, ...]) -> str:
    return ".".join([field, *(str(p) for p in loc)])


class _Action:
    """A resolved action with its slots indexed by name."""

    __slots__ = ("inputs", "outputs", "required", "spec")

    def __init__(self, spec: ActionSpec) -> None:
        self.spec = spec
        self.inputs = {s.name: s for s in spec.inputs}
        self.outputs = {s.name: s for s in spec.outputs}
        self.required = [s for s in spec.inputs if s.required]


class _Validator:
    """One validation run; holds the indices so each check is a dict lookup."""

    def __init__(
        self,
        plan: CandidatePlan,
        catalog: ActionCatalog,
        user_inputs: Mapping[str, Any],
        flow_ids: Iterable[str] | None,
        allow_manual: bool = True,
    ) -> None:
        self.plan = plan
        self.allow_manual = allow_manual
        self.catalog = catalog
        self.user_inputs = user_inputs
        self.allowed = (
            None if flow_ids is None else {s.name for s in catalog.list_actions(flow_ids=flow_ids)}
        )
        settings = AetherSettings()
        self.max_depth = settings.max_input_depth
        self.max_retries = settings.max_step_retries
        self.max_timeout = settings.max_step_timeout_seconds
        self.issues: list[ValidationIssue] = []
        self.missing: dict[str, list[str]] = {}
        self.order: dict[str, int] = {}
        self.specs: dict[str, _Action | None] = {}
        self.graph: dict[str, list[str]] = {}
        self.producers: dict[int, list[dict[str, Any]]] = {}
        self.resolved: dict[str, _Action | None] = {}
        # Memos keyed by identity/value: plans repeat the same wiring and literals.
        self.compatible: dict[tuple[int, int], tuple[bool, Any, Any]] = {}
        self.literals: dict[tuple[str, str, type, Any], str | None] = {}

    def issue(
        self,
        kind: IssueKind,
        message: str,
        step: PlanStep | None = None,
        field: str | None = None,
        **details: Any,
    ) -> None:
        self.issues.append(
            ValidationIssue(
                kind=kind,
                message=message,
                step_id=step.id if step else None,
                field=field,
                details=details,
            )
        )

    def run(self) -> ValidationResult:
        unique: list[PlanStep] = []
        order = self.order
        for position, step in enumerate(self.plan.steps):
            sid = step.id
            if sid in order:
                first = order[sid]
                self.issue(
                    "duplicate_step_id",
                    f"Step id {sid!r} is used by steps #{first} and #{position}; "
                    "ids must be unique.",
                    step,
                    positions=[first, position],
                )
                continue
            order[sid] = position
            unique.append(step)
            if sid in _RESERVED_IDS or _STEP_ID.fullmatch(sid) is None:
                self.issue(
                    "invalid_step_id",
                    f"Step id {sid!r} must be an identifier: ASCII letters, digits and '_', "
                    "not starting with a digit (and not 'user' or 'secret'), so that bindings, "
                    "run names and graphs can name it.",
                    step,
                    field="id",
                )
            self.specs[sid] = self._action(step)
            if step.extras:
                self._check_policy(step)
        for step in unique:
            self._check_inputs(step)
        return _result(self.issues, self.missing, self._levels())

    # -- steps -------------------------------------------------------------------------

    def _action(self, step: PlanStep) -> _Action | None:
        name = step.action or step.action_ref or ""
        if name in self.resolved:
            action = self.resolved[name]
        else:
            spec = self.catalog.get(name) if name else None
            allowed = spec is not None and (self.allowed is None or spec.name in self.allowed)
            action = self.resolved[name] = _Action(spec) if spec is not None and allowed else None
        if action is None:
            self._resolve(step)
        elif not self.allow_manual and MANUAL in action.spec.tags:
            self.issue(
                "manual_action",
                f"Action {action.spec.name!r} is tagged {MANUAL}: a planner may not choose it; "
                "only a hand-written plan may run it.",
                step,
                field="action",
                action=action.spec.name,
            )
        return action

    def _resolve(self, step: PlanStep) -> None:
        name = step.action or step.action_ref or ""
        spec = self.catalog.get(name) if name else None
        names = sorted(self.allowed if self.allowed is not None else (s.name for s in self.catalog))
        suggestions = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        if spec is not None:
            message = f"Action {name!r} is not available to this plan's flow_ids."
        elif not name:
            message = "The step names no action."
        else:
            hint = (
                f" Did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
            )
            message = f"Unknown action {name!r}.{hint}"
        self.issue(
            "unknown_action", message, step, field="action", action=name, suggestions=suggestions
        )

    def _check_policy(self, step: PlanStep) -> None:
        extras = step.extras
        checks: list[tuple[str, bool, str]] = []
        if "retries" in extras:
            value = extras["retries"]
            ok = (
                isinstance(value, int)
                and not isinstance(value, bool)
                and 0 <= value <= self.max_retries
            )
            checks.append(
                ("retries", ok, f"an integer from 0 to {self.max_retries} (max_step_retries)")
            )
        if "retry_delay_seconds" in extras:
            value = extras["retry_delay_seconds"]
            items = value if isinstance(value, list) else [value]
            ok = bool(items) and all(_is_number(v) and v >= 0 for v in items)
            checks.append(("retry_delay_seconds", ok, "a non-negative number or a list of them"))
        if "timeout_seconds" in extras:
            value = extras["timeout_seconds"]
            ok = _is_number(value) and 0 < value <= self.max_timeout
            checks.append(
                (
                    "timeout_seconds",
                    ok,
                    f"a positive number up to {self.max_timeout:g} (max_step_timeout_seconds)",
                )
            )
        if "reuse_within" in extras:
            value = extras["reuse_within"]
            ok = _is_number(value) and value > 0
            checks.append(("reuse_within", ok, "a positive number of seconds"))
        if "run_as" in extras:
            checks.append(
                ("run_as", extras["run_as"] in RUN_MODES, f"one of {', '.join(RUN_MODES)}")
            )
        for key, ok, expected in checks:
            if not ok:
                self.issue(
                    "invalid_policy",
                    f"extras.{key} must be {expected}, got {extras[key]!r}.",
                    step,
                    field=f"extras.{key}",
                    expected=expected,
                )

    # -- inputs and bindings -----------------------------------------------------------

    def _check_inputs(self, step: PlanStep) -> None:
        action = self.specs[step.id]
        spec = action.spec if action else None
        inputs = action.inputs if action else {}
        deps: list[str] = []
        self.graph[step.id] = deps
        for field, value in step.inputs.items():
            slot = inputs.get(field)
            if spec is not None and slot is None:
                close = difflib.get_close_matches(field, list(inputs), n=3, cutoff=0.5)
                self.issue(
                    "unknown_input",
                    f"Action {spec.name!r} has no input {field!r}; its inputs are "
                    f"{', '.join(inputs) or '(none)'}.",
                    step,
                    field=field,
                    suggestions=close,
                )
            if isinstance(value, str) and "${" in value:
                try:
                    binding = parse_binding(value)
                except BindingError as exc:
                    self.issue("invalid_binding", str(exc), step, field=field, raw=value)
                    continue
                # The common case, a whole input bound to another step: no walker.
                if binding.kind == "step_output":
                    target = slot.json_schema if slot is not None else None
                    self._check_step_output(step, field, binding, target, deps)
                elif binding.kind == "external":
                    self._check_external(step, spec, slot, field, field, binding, ())
                elif binding.kind == "secret":
                    self._check_secret(step, spec, field, binding)
                elif slot is not None:
                    self._check_literal(step, spec, slot, field, binding.value)
            elif isinstance(value, (dict, list)):
                self._check_bindings(step, spec, slot, field, value, deps)
            elif slot is not None:
                self._check_literal(step, spec, slot, field, value)
        for position, upstream in enumerate(step.after):
            self._check_after(step, position, upstream, deps)
        if action is not None and spec is not None:
            for slot in action.required:
                if slot.name not in step.inputs:
                    self._missing_input(step, spec, slot)

    def _check_after(self, step: PlanStep, position: int, upstream: str, deps: list[str]) -> None:
        """An order-only edge: `upstream` must be another step of the plan."""
        if upstream not in self.order:
            self._unknown_step(
                step, f"after.{position}", upstream, f"after names step {upstream!r}"
            )
        else:
            # A step waiting for itself is the shortest cycle; the graph check reports it.
            deps.append(upstream)

    def _check_literal(
        self,
        step: PlanStep,
        spec: ActionSpec | None,
        slot: IOSlot | None,
        field: str,
        value: Any,
        *,
        user_key: str | None = None,
    ) -> None:
        if spec is None or slot is None:
            return
        if isinstance(value, (str, int, float, bool)) or value is None:
            key = (spec.name, slot.name, type(value), value)
            problem = self.literals.get(key, _UNCHECKED)
            if problem is _UNCHECKED:
                problem = self.literals[key] = self.catalog.check_input(spec.name, slot.name, value)
        elif nesting_depth(value, self.max_depth) > self.max_depth:
            problem = (
                f"lists and objects nest deeper than {self.max_depth} levels (max_input_depth)"
            )
        else:
            problem = self.catalog.check_input(spec.name, slot.name, value)
        if problem is not None:
            source = f"User input {user_key!r} for " if user_key else "Literal for "
            self.issue(
                "invalid_literal",
                f"{source}{spec.name}.{field} is invalid: {problem}.",
                step,
                field=field,
                expected=slot.json_schema,
                **({"user_key": user_key} if user_key else {}),
            )

    def _check_bindings(
        self,
        step: PlanStep,
        spec: ActionSpec | None,
        slot: IOSlot | None,
        field: str,
        value: Any,
        deps: list[str],
    ) -> None:
        has_binding = False
        for loc, text in iter_strings(value):
            where = _location(field, loc) if loc else field
            try:
                binding = parse_binding(text)
            except BindingError as exc:
                has_binding = True
                self.issue("invalid_binding", str(exc), step, field=where, raw=text)
                continue
            if binding.kind == "literal":
                continue
            has_binding = True
            if binding.kind == "external":
                self._check_external(step, spec, slot, field, where, binding, loc)
            elif binding.kind == "secret":
                self._check_secret(step, spec, where, binding)
            else:
                target = schema_at_path(slot.json_schema, loc) if slot is not None else None
                self._check_step_output(step, where, binding, target, deps)
        if not has_binding:
            self._check_literal(step, spec, slot, field, value)

    def _check_external(
        self,
        step: PlanStep,
        spec: ActionSpec | None,
        slot: IOSlot | None,
        field: str,
        where: str,
        binding: Binding,
        loc: tuple[str | int, ...],
    ) -> None:
        key = binding.key or ""
        if looks_like_secret(key) or (slot is not None and _secret_slot(slot)):
            named = key if looks_like_secret(key) else f"{spec.name if spec else ''}.{field}"
            self.issue(
                "secret_binding",
                f"{binding.raw} asks for a secret ({named!r}); plan inputs are stored, shown in "
                "forms and logged, so secrets must not be among them: save it in a Prefect "
                "Secret block and bind '${secret.<block-name>}' instead.",
                step,
                field=where,
            )
            return
        if key not in self.user_inputs:
            self.missing.setdefault(key, []).append(f"{step.id}.{where}")
        elif not loc and not binding.path:
            self._check_literal(step, spec, slot, field, self.user_inputs[key], user_key=key)

    def _check_secret(
        self, step: PlanStep, spec: ActionSpec | None, where: str, binding: Binding
    ) -> None:
        """`${secret.<block>}`: a Prefect Secret block read when the step runs, only where
        its value stays in this process (a task-mode step)."""
        name = binding.key or ""
        problem = None
        if _BLOCK_NAME.fullmatch(name) is None:
            problem = "block names are lowercase letters, digits and '-'"
        elif spec is not None and spec.kind == "deployment":
            problem = (
                "a deployment run's parameters are stored on the Prefect server; let the "
                "deployment's flow load the Secret block itself"
            )
        elif step.extras.get("run_as") == "subflow":
            problem = (
                "a child flow run's parameters are stored on the Prefect server; a step "
                "given a secret runs as a task"
            )
        if problem is not None:
            self.issue(
                "secret_binding", f"{binding.raw} cannot be used here: {problem}.", step, where
            )

    def _unknown_step(self, step: PlanStep, where: str, name: str, said: str) -> None:
        close = difflib.get_close_matches(name, list(self.order), n=3, cutoff=0.6)
        self.issue(
            "unknown_step",
            f"{said}, which is not in the plan.",
            step,
            field=where,
            suggestions=close,
        )

    def _check_step_output(
        self, step: PlanStep, where: str, binding: Binding, target: Any, deps: list[str]
    ) -> None:
        source_id = binding.step_id or ""
        if source_id not in self.order:
            self._unknown_step(
                step, where, source_id, f"{binding.raw} refers to step {source_id!r}"
            )
            return
        deps.append(source_id)
        source = self.specs.get(source_id)
        if source is None:
            return
        source_spec, outputs = source.spec, source.outputs
        out = outputs.get(binding.output or "")
        if out is None:
            self.issue(
                "unknown_output",
                f"{binding.raw}: action {source_spec.name!r} (step {source_id!r}) has no output "
                f"{binding.output!r}; its outputs are {', '.join(outputs) or '(none)'}.",
                step,
                field=where,
                outputs=list(outputs),
            )
            return
        produced = (
            schema_at_path(out.json_schema, binding.path) if binding.path else out.json_schema
        )
        if produced is MISSING:
            self.issue(
                "unknown_output",
                f"{binding.raw}: output {out.name!r} of step {source_id!r} has no path "
                f"{'.'.join(str(p) for p in binding.path)!r}.",
                step,
                field=where,
                output_schema=out.json_schema,
            )
        elif (
            target is not None and target is not MISSING and not self._compatible(produced, target)
        ):
            self.issue(
                "type_mismatch",
                f"{binding.raw} gives {_kind(produced)} but {where} expects {_kind(target)}.",
                step,
                field=where,
                produced=produced,
                expected=target,
            )

    def _compatible(self, produced: dict[str, Any], target: dict[str, Any]) -> bool:
        key = (id(produced), id(target))
        known = self.compatible.get(key)
        if known is None:
            # Holding both schemas keeps their ids from being reused by other objects.
            known = self.compatible[key] = (compatible(produced, target), produced, target)
        return known[0]

    def _missing_input(self, step: PlanStep, spec: ActionSpec, slot: IOSlot) -> None:
        producers = self._producers(slot)
        in_plan = [
            f"${{{sid}.{out.name}}}"
            for sid, other in self.specs.items()
            if other is not None and sid != step.id
            for out in other.spec.outputs
            if out.name == slot.name and compatible(out.json_schema, slot.json_schema)
        ][:_MAX_CANDIDATES]
        hint = ""
        if producers:
            hint = (
                " Actions that can produce it: "
                + ", ".join(f"{p['action']}.{p['output']}" for p in producers)
                + "."
            )
        self.issue(
            "missing_input",
            f"Required input {slot.name!r} of action {spec.name!r} is not given.{hint}",
            step,
            field=slot.name,
            candidates=producers,
            plan_bindings=in_plan,
            expected=slot.json_schema,
        )

    def _producers(self, slot: IOSlot) -> list[dict[str, Any]]:
        cached = self.producers.get(id(slot))
        if cached is not None:
            return cached
        scored = []
        for spec in self.catalog:
            if self.allowed is not None and spec.name not in self.allowed:
                continue
            for out in spec.outputs:
                if (
                    out.type is None
                    or slot.type is None
                    or not compatible(out.json_schema, slot.json_schema)
                ):
                    continue
                score = max(
                    difflib.SequenceMatcher(None, slot.name, out.name).ratio(),
                    difflib.SequenceMatcher(None, slot.name, spec.name).ratio(),
                )
                scored.append((-score, spec.name, out.name))
        scored.sort()
        result = [
            {"action": a, "output": o, "score": round(-s, 3)}
            for s, a, o in scored[:_MAX_CANDIDATES]
        ]
        self.producers[id(slot)] = result
        return result

    # -- graph -------------------------------------------------------------------------

    def _levels(self) -> list[list[str]]:
        # Kahn's algorithm by levels, linear in steps + edges. graphlib's sorter
        # costs ~3x more per node here, so it is only asked for the cycle path.
        indegree: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        for sid, deps in self.graph.items():
            indegree[sid] = len(deps)
            for dep in deps:
                waiting = children.get(dep)
                if waiting is None:
                    children[dep] = [sid]
                else:
                    waiting.append(sid)
        level = [sid for sid, count in indegree.items() if count == 0]
        levels: list[list[str]] = []
        placed = 0
        while level:
            levels.append(level)
            placed += len(level)
            following = []
            for sid in level:
                for child in children.get(sid, ()):
                    indegree[child] -= 1
                    if indegree[child] == 0:
                        following.append(child)
            if len(following) > 1:
                following.sort(key=self.order.__getitem__)
            level = following
        if placed == len(self.graph):
            return levels
        stuck = {sid: deps for sid, deps in self.graph.items() if indegree[sid] > 0}
        cycle = sorted(stuck, key=self.order.__getitem__)
        try:
            TopologicalSorter(stuck).prepare()
        except CycleError as exc:
            cycle = [str(node) for node in exc.args[1]]
        self.issue(
            "cycle",
            f"The steps depend on each other in a cycle: {' -> '.join(cycle)}.",
            self.plan.steps[self.order[cycle[0]]],
            cycle=cycle,
        )
        return []


def _secret_slot(slot: IOSlot) -> bool:
    """A slot that takes a secret: by its name, or a `SecretStr` annotation (whose JSON
    schema says `format: password`, `writeOnly`)."""
    schema = slot.json_schema
    return looks_like_secret(slot.name) or (
        schema.get("format") == "password" or schema.get("writeOnly") is True
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(schema: Any) -> str:
    return coarse_type(schema) or "any"
