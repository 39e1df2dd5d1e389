"""The plan checker behind `validate_plan` (private)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_aether.catalog.policy import MANUAL, policy_problems
from prefect_aether.catalog.registry import ActionCatalog, ActionSpec, IOSlot
from prefect_aether.catalog.schemas import mismatch, schema_at_path
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
from prefect_aether.settings import current_settings
from prefect_aether.validation._effects import write_conflicts
from prefect_aether.validation._hints import plan_candidates, producer_candidates
from prefect_aether.validation._issues import (
    IssueKind,
    ValidationIssue,
    ValidationResult,
    looks_like_secret,
    make_result,
    secret_slot,
)
from prefect_aether.validation._levels import order_levels
from prefect_aether.validation._outputs import output_problem

_UNCHECKED: Any = object()
# Step ids become flow run names, tags and graph labels: identifiers only.
_STEP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_IDS = {USER_NAMESPACE, SECRET_NAMESPACE}
# Prefect's rule for block document names.
_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


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


class Validator:
    """One validation run; holds the indices so each check is a dict lookup."""

    def __init__(
        self,
        plan: CandidatePlan,
        catalog: ActionCatalog,
        user_inputs: Mapping[str, Any],
        flow_ids: Iterable[str] | None,
        allow_manual: bool = True,
        allow_overwrite: bool = False,
    ) -> None:
        self.plan = plan
        self.allow_manual = allow_manual
        self.allow_overwrite = allow_overwrite
        self.catalog = catalog
        self.user_inputs = user_inputs
        self.allowed = (
            None if flow_ids is None else {s.name for s in catalog.list_actions(flow_ids=flow_ids)}
        )
        settings = current_settings()
        self.max_depth = settings.max_input_depth
        self.settings = settings
        # Secrets are granted, not found: the blocks plans may read, and per action the
        # inputs beyond those that say they take a secret.
        self.secret_blocks = set(settings.secret_blocks)
        self.secret_inputs = {k: set(v) for k, v in settings.secret_inputs.items()}
        self.issues: list[ValidationIssue] = []
        self.missing: dict[str, list[str]] = {}
        self.order: dict[str, int] = {}
        self.specs: dict[str, _Action | None] = {}
        self.graph: dict[str, list[str]] = {}
        self.producers: dict[int, list[dict[str, Any]]] = {}
        self.resolved: dict[str, _Action | None] = {}
        # Memos keyed by identity/value: plans repeat the same wiring and literals.
        self.compatible: dict[tuple[int, int], tuple[str | None, Any, Any]] = {}
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
        levels = self._levels()
        if levels and not self.allow_overwrite:
            self._check_writes(unique)
        return make_result(self.issues, self.missing, levels)

    def _check_writes(self, steps: list[PlanStep]) -> None:
        specs = {sid: action.spec if action else None for sid, action in self.specs.items()}
        for write, other, why in write_conflicts(steps, specs, self.user_inputs, self.graph):
            self.issue(
                "write_conflict",
                f"{write.step_id}.{write.field} writes {write.shown!r}, which "
                f"{other.step_id}.{other.field} {'also writes' if other.writes else 'reads'}: "
                f"{why}. Write somewhere else, order the steps, or allow overwriting "
                "(allow_overwrite=True, --allow-overwrite).",
                self.plan.steps[self.order[write.step_id]],
                field=write.field,
                location=write.shown,
                other_step=other.step_id,
                other_field=other.field,
            )

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
        for key, expected in policy_problems(step.extras, self.settings):
            self.issue(
                "invalid_policy",
                f"extras.{key} must be {expected}, got {step.extras[key]!r}.",
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
                    self._check_secret(step, spec, slot, field, binding)
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
        if user_key is None and isinstance(value, str) and value and secret_slot(slot):
            self.issue(
                "secret_binding",
                f"A literal for {spec.name}.{field}, which takes a secret, would be stored "
                "with the plan and shown in the UI; save it in a Prefect Secret block and "
                "bind '${secret.<block-name>}' instead.",
                step,
                field=field,
            )
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
                self._check_secret(step, spec, slot, where, binding)
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
        if looks_like_secret(key) or (slot is not None and secret_slot(slot)):
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

    def takes_secret(self, spec: ActionSpec | None, slot: IOSlot | None) -> bool:
        """Whether a secret may go into `slot`: it says it takes one (its name or a
        `SecretStr` type), or the operator allowed it (the `secret_inputs` setting)."""
        if spec is None or slot is None:
            return False
        return secret_slot(slot) or slot.name in self.secret_inputs.get(spec.name, ())

    def _check_secret(
        self,
        step: PlanStep,
        spec: ActionSpec | None,
        slot: IOSlot | None,
        where: str,
        binding: Binding,
    ) -> None:
        """`${secret.<block>}`: a Prefect Secret block the operator granted to plans, read
        when the step runs, into an input that takes a secret, only where its value stays
        in this process (a task-mode step)."""
        name = binding.key or ""
        problem = None
        if _BLOCK_NAME.fullmatch(name) is None:
            problem = "block names are lowercase letters, digits and '-'"
        elif name not in self.secret_blocks:
            granted = ", ".join(sorted(self.secret_blocks)) or "none"
            self.issue(
                "secret_not_granted",
                f"{binding.raw} names a Secret block the operator has not granted to plans "
                f"(the secret_blocks setting grants: {granted}).",
                step,
                field=where,
            )
            return
        elif slot is not None and spec is not None and not self.takes_secret(spec, slot):
            self.issue(
                "secret_not_granted",
                f"{binding.raw} goes into {spec.name}.{slot.name}, which does not take a "
                "secret (its name and type do not say so, and the secret_inputs setting does "
                "not allow it).",
                step,
                field=where,
            )
            return
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
        found = output_problem(binding, source.spec, source.outputs, where, target, self._mismatch)
        if found is not None:
            kind, message, details = found
            self.issue(kind, message, step, field=where, **details)

    def _mismatch(self, produced: dict[str, Any], target: dict[str, Any]) -> str | None:
        key = (id(produced), id(target))
        known = self.compatible.get(key)
        if known is None:
            # Holding both schemas keeps their ids from being reused by other objects.
            known = self.compatible[key] = (mismatch(produced, target), produced, target)
        return known[0]

    def _missing_input(self, step: PlanStep, spec: ActionSpec, slot: IOSlot) -> None:
        producers = self.producers.get(id(slot))
        if producers is None:
            producers = self.producers[id(slot)] = producer_candidates(
                self.catalog, slot, self.allowed
            )
        specs = {sid: a.spec for sid, a in self.specs.items() if a is not None and sid != step.id}
        hint = ""
        if producers:
            hint = (
                " Actions that can produce it: "
                + ", ".join(
                    f"{p['action']}.{p['output']}"
                    if p["output"] is not None
                    else f"{p['action']} (its whole return value)"
                    for p in producers
                )
                + "."
            )
        self.issue(
            "missing_input",
            f"Required input {slot.name!r} of action {spec.name!r} is not given.{hint}",
            step,
            field=slot.name,
            candidates=producers,
            plan_bindings=plan_candidates(specs, slot),
            expected=slot.json_schema,
        )

    # -- graph -------------------------------------------------------------------------

    def _levels(self) -> list[list[str]]:
        levels, cycle = order_levels(self.graph, self.order)
        if cycle:
            self.issue(
                "cycle",
                f"The steps depend on each other in a cycle: {' -> '.join(cycle)}.",
                self.plan.steps[self.order[cycle[0]]],
                cycle=cycle,
            )
        return levels


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
