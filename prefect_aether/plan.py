"""Plans: steps that call catalog actions, wired together by bindings.

A step's input value is a literal, `"${user.<key>}"` (a value the user gives),
`"${<step_id>}"` (another step's whole return value) or `"${<step_id>.<output>}"`
(one output field of it), optionally followed by a dotted path into that value
(`"${load.result.rows.0}"`). Bindings may sit
anywhere inside lists and dicts. A binding must be the whole string; write
`"$${...}"` for a literal that starts with `${`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefect_aether._internal.canonical import canonical_json
from prefect_aether.exceptions import BindingError, PlanDecodingError

__all__ = [
    "Binding",
    "CandidatePlan",
    "PlanStep",
    "canonical_json",
    "iter_bindings",
    "iter_strings",
    "map_bindings",
    "nesting_depth",
    "parse_binding",
    "step_dependencies",
]

USER_NAMESPACE = "user"
SECRET_NAMESPACE = "secret"
_BINDING = re.compile(r"\$\{([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_-]+)((?:\.[A-Za-z0-9_-]+)*))?\}")

PathItem = str | int


class _Resolver(Protocol):
    """What `CandidatePlan.resolve_actions` needs of a catalog: a lookup by name or ref."""

    def get(self, name_or_ref: str) -> Any: ...


class Binding(NamedTuple):
    """A parsed input value: a literal, an external (user) value or a step output.

    A named tuple rather than a pydantic model: the validator builds one per
    binding on its hot path.

    Attributes:
        kind: `"literal"`, `"external"` (`${user.key}`), `"secret"` (`${secret.block}`,
            a Prefect `Secret` block read at execution time) or `"step_output"`.
        raw: The original value.
        value: The literal value (only for `kind="literal"`).
        key: The user input key (`kind="external"`) or the Secret block's name
            (`kind="secret"`).
        step_id: The producing step (only for `kind="step_output"`).
        output: The producing step's output field; None for its whole return value
            (`${step}`). Only for `kind="step_output"`.
        path: Items of the dotted path into the value (digits become list indices).

    Examples:
        >>> b = parse_binding("${load.result.rows}")
        >>> (b.kind, b.step_id, b.output, b.path)
        ('step_output', 'load', 'result', ('rows',))
    """

    kind: Literal["literal", "external", "secret", "step_output"]
    raw: Any
    value: Any = None
    key: str | None = None
    step_id: str | None = None
    output: str | None = None
    path: tuple[PathItem, ...] = ()

    @property
    def reference(self) -> str:
        """The binding written back as `step.output.path` (`step` for a whole return value),
        `user.key.path` or `secret.name`."""
        namespace = {"external": USER_NAMESPACE, "secret": SECRET_NAMESPACE}.get(self.kind)
        head = [namespace, self.key] if namespace else [self.step_id, self.output]
        return ".".join(str(p) for p in [*head, *self.path] if p is not None)


_new_binding = tuple.__new__


def _literal(value: Any, raw: Any = None) -> Binding:
    return Binding("literal", value if raw is None else raw, value)


def parse_binding(raw: Any) -> Binding:
    """Parse one input value into a `Binding`.

    Args:
        raw: Any JSON value. Only a string that is wholly `${...}` is a binding.

    Returns:
        The parsed binding; anything that is not a binding is a literal.

    Raises:
        BindingError: The string looks like a binding but is malformed, or a
            binding is embedded inside a longer string.

    Examples:
        >>> parse_binding("${user.path}").key
        'path'
        >>> parse_binding("plain text").kind
        'literal'
        >>> parse_binding("$${HOME}").value
        '${HOME}'
        >>> parse_binding("${load}").output is None  # the step's whole return value
        True
    """
    if not isinstance(raw, str) or "${" not in raw:
        return _literal(raw)
    match = _BINDING.fullmatch(raw)
    if match is None:
        if raw.startswith("$${"):
            return _literal(raw[1:], raw)
        if not (raw.startswith("${") and raw.endswith("}")) or raw.count("${") != 1:
            raise BindingError(
                f"binding {raw!r} must be the whole string, e.g. '${{step.output}}'; "
                "embedding bindings in text is not supported (write '$${' for a literal '${')"
            )
        raise BindingError(
            f"malformed binding {raw!r}: expected '${{user.<key>}}', '${{secret.<block-name>}}', "
            "'${<step_id>}' or '${<step_id>.<output>}' with an optional dotted path of names "
            "and indices"
        )
    head, name, rest = match.groups()
    if name is None:
        if head in (USER_NAMESPACE, SECRET_NAMESPACE):
            raise BindingError(
                f"malformed binding {raw!r}: '${{{head}.<name>}}' needs the name after '{head}.'"
            )
        return _new_binding(Binding, ("step_output", raw, None, None, head, None, ()))
    path = tuple(int(p) if p.isdigit() else p for p in rest[1:].split(".")) if rest else ()
    # tuple.__new__ skips NamedTuple's Python-level __new__: this is the validator's hot path.
    if head == USER_NAMESPACE:
        return _new_binding(Binding, ("external", raw, None, name, None, None, path))
    if head == SECRET_NAMESPACE:
        if path:
            raise BindingError(
                f"malformed binding {raw!r}: '${{secret.<block-name>}}' takes no path"
            )
        return _new_binding(Binding, ("secret", raw, None, name, None, None, ()))
    return _new_binding(Binding, ("step_output", raw, None, None, head, name, path))


def iter_strings(value: Any) -> Iterator[tuple[tuple[PathItem, ...], str]]:
    """Yield `(location, text)` for every string inside nested lists and dicts.

    Uses an explicit stack, so nesting depth is not limited by Python's
    recursion limit.

    Examples:
        >>> list(iter_strings({"a": ["x", 3, {"b": "y"}]}))
        [(('a', 0), 'x'), (('a', 2, 'b'), 'y')]
    """
    stack: list[tuple[tuple[PathItem, ...], Any]] = [((), value)]
    while stack:
        location, item = stack.pop()
        if isinstance(item, str):
            yield location, item
        elif isinstance(item, dict):
            stack.extend(((*location, k), v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend(((*location, i), v) for i, v in reversed(list(enumerate(item))))


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in `value`, counted up to `limit + 1` at most.

    Iterative, so a value nested 100,000 deep is measured without recursion.

    Examples:
        >>> nesting_depth({"a": [1, [2]]}, 10), nesting_depth("x", 10)
        (3, 0)
    """
    deepest = 0
    stack: list[tuple[int, Any]] = [(0, value)]
    while stack:
        depth, item = stack.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            stack.extend((depth, v) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def non_finite(value: Any) -> bool:
    """Whether `value` is, or holds in its lists and dicts, a float NaN or infinity (JSON
    has no such numbers; a flow given one computes garbage without failing). Iterative.

    Examples:
        >>> non_finite({"a": [1.0, float("nan")]}), non_finite({"a": "NaN"})
        (True, False)
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def iter_bindings(value: Any) -> Iterator[tuple[tuple[PathItem, ...], Binding]]:
    """Yield `(location, binding)` for every non-literal binding inside `value`.

    Malformed bindings raise `BindingError` when reached.

    Examples:
        >>> [(loc, b.reference) for loc, b in iter_bindings({"a": ["${x.y}", 3]})]
        [(('a', 0), 'x.y')]
    """
    for location, text in iter_strings(value):
        binding = parse_binding(text)
        if binding.kind != "literal":
            yield location, binding


def step_dependencies(plan: CandidatePlan) -> dict[str, list[str]]:
    """Each step's upstream steps: those whose outputs it reads, in first-use order,
    then those it runs `after` (order-only edges).

    Examples:
        >>> plan = CandidatePlan.from_dict({"steps": [
        ...     {"id": "a", "action": "x"},
        ...     {"id": "b", "action": "y", "inputs": {"v": ["${a.r}", "${a.s}"]}},
        ...     {"id": "c", "action": "z", "after": ["b"]}]})
        >>> step_dependencies(plan)
        {'a': [], 'b': ['a'], 'c': ['b']}
    """
    return {
        s.id: list(
            dict.fromkeys([*(b.step_id for _, b in iter_bindings(s.inputs) if b.step_id), *s.after])
        )
        for s in plan.steps
    }


def map_bindings(value: Any, resolve: Callable[[Binding], Any]) -> Any:
    """Return a copy of `value` with every binding replaced by `resolve(binding)`.

    Literal strings lose their `$$` escape. Iterative, like `iter_bindings`.

    Examples:
        >>> map_bindings({"n": ["${user.n}", 2]}, lambda b: 1)
        {'n': [1, 2]}
    """
    root: list[Any] = [None]
    # (container, slot, source value) triples still to fill in.
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        container, slot, item = stack.pop()
        if isinstance(item, dict):
            copy_d: dict[Any, Any] = {}
            container[slot] = copy_d
            stack.extend((copy_d, k, v) for k, v in item.items())
        elif isinstance(item, list):
            copy_l: list[Any] = [None] * len(item)
            container[slot] = copy_l
            stack.extend((copy_l, i, v) for i, v in enumerate(item))
        else:
            binding = parse_binding(item)
            container[slot] = binding.value if binding.kind == "literal" else resolve(binding)
    return root[0]


class PlanStep(BaseModel):
    """One step of a plan: call `action` with `inputs`.

    Examples:
        >>> PlanStep(id="load", action="load_csv", inputs={"path": "${user.path}"}).id
        'load'
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Unique id of the step within its plan; names its run.")
    action: str = Field(default="", description="Name of the catalog action to run.")
    action_ref: str | None = Field(
        default=None, description="Canonical action ref (`flow:<name>@<version>`), if resolved."
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Input name to literal or binding."
    )
    after: list[str] = Field(
        default_factory=list,
        description="Steps that must finish first without passing data (order-only edges).",
    )
    extras: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Per-step policy (retries, retry_delay_seconds, timeout_seconds, run_as) and "
            "notes such as the planner's `reason`."
        ),
    )


class CandidatePlan(BaseModel):
    """A plan: steps in any order, wired by bindings into an acyclic graph.

    Examples:
        >>> plan = CandidatePlan.from_dict(
        ...     {"steps": [{"id": "a", "action": "load_csv", "inputs": {"path": "x.csv"}}]}
        ... )
        >>> len(plan.steps), len(plan.plan_id)
        (1, 16)
    """

    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep] = Field(description="The steps; list order does not matter.")
    extras: dict[str, Any] = Field(
        default_factory=dict, description="Free-form plan metadata (planner, goal, notes)."
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidatePlan:
        """Build a plan from its dict form, naming the first bad field on error.

        Raises:
            PlanDecodingError: `data` does not have the shape of a plan.

        Examples:
            >>> CandidatePlan.from_dict({"steps": []}).steps
            []
        """
        if not isinstance(data, Mapping):
            raise PlanDecodingError(
                f"a plan must be a JSON object with 'steps', got {type(data).__name__}",
                raw=canonical_json(data),
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'plan'}: {err['msg']}"
                for err in exc.errors()[:10]
            )
            raise PlanDecodingError(
                f"not a valid plan: {problems}", raw=canonical_json(data)
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as plain JSON-able data (inverse of `from_dict`).

        Examples:
            >>> CandidatePlan(steps=[PlanStep(id="a", action="x")]).to_dict()["steps"][0]["id"]
            'a'
        """
        return self.model_dump(mode="json")

    @property
    def plan_id(self) -> str:
        """Stable content hash of the steps (16 hex digits).

        It depends on step ids, actions, inputs, `after` edges and extras; not on
        the order of the steps or of dict keys, nor on resolved `action_ref`s.
        """
        content = sorted(
            canonical_json(
                {"id": s.id, "action": s.action, "inputs": s.inputs, "extras": s.extras}
                | ({"after": sorted(s.after)} if s.after else {})
            )
            for s in self.steps
        )
        return hashlib.sha256("\n".join(content).encode()).hexdigest()[:16]

    def resolve_actions(self, catalog: _Resolver) -> CandidatePlan:
        """Return a copy whose steps have both `action` and `action_ref` filled.

        Steps whose action the catalog does not know are left as they are, for
        the validator to report.

        Examples:
            >>> from prefect import flow
            >>> from prefect_aether import ActionCatalog
            >>> @flow(name="hello", version="1")
            ... def hello() -> str:
            ...     return "hi"
            >>> catalog = ActionCatalog()
            >>> _ = catalog.register(hello)
            >>> plan = CandidatePlan(steps=[PlanStep(id="a", action="hello")])
            >>> plan.resolve_actions(catalog).steps[0].action_ref
            'flow:hello@1'
        """
        steps = []
        for step in self.steps:
            spec = catalog.get(step.action) if step.action else None
            if spec is None and step.action_ref:
                spec = catalog.get(step.action_ref)
            if spec is None:
                steps.append(step.model_copy())
            else:
                steps.append(step.model_copy(update={"action": spec.name, "action_ref": spec.ref}))
        return self.model_copy(update={"steps": steps})

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON schema of a plan, for LLM structured output.

        Examples:
            >>> CandidatePlan.json_schema()["required"]
            ['steps']
        """
        step = {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "Unique step id, e.g. 'load'."},
                "action": {"type": "string", "description": "Name of a catalog action."},
                "inputs": {
                    "type": "object",
                    "description": (
                        "Input name to value: a JSON literal, '${user.<key>}', "
                        "'${<step_id>}' (its whole return value) or '${<step_id>.<field>}' "
                        "(optionally a '.<field>' path)."
                    ),
                },
                "after": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": (
                        "Ids of steps that must finish before this one although it reads "
                        "none of their outputs (order only); omit when inputs already say it."
                    ),
                },
            },
            "required": ["id", "action", "inputs"],
        }
        unserved = {
            "type": "array",
            "items": {"type": "string"},
            "description": (
                "Parts of the goal, in the user's words, that no listed action does; "
                "empty when the steps do all of it."
            ),
        }
        return {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": step}, "unserved": unserved},
            "required": ["steps"],
        }
