"""The action catalog: Prefect flows, introspected into typed actions.

Examples:
    >>> from prefect import flow
    >>> from prefect_aether import ActionCatalog
    >>> @flow(name="add", version="1")
    ... def add(a: int, b: int = 1) -> int:
    ...     '''Add two numbers.
    ...
    ...     Args:
    ...         a: The first number.
    ...         b: The second number.
    ...     '''
    ...     return a + b
    >>> catalog = ActionCatalog()
    >>> spec = catalog.register(add)
    >>> spec.ref, [(s.name, s.type, s.required) for s in spec.inputs]
    ('flow:add@1', [('a', 'integer', True), ('b', 'integer', False)])
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

from prefect_aether._internal.canonical import canonical_json
from prefect_aether.catalog import _introspect, policy
from prefect_aether.catalog._checkers import make_checker
from prefect_aether.catalog._search import SearchIndex
from prefect_aether.catalog.roles import with_roles
from prefect_aether.catalog.specs import (
    ActionSpec,
    IOSlot,
    feed_tier,
    render_spec,
    same_structure,
)
from prefect_aether.exceptions import CatalogError
from prefect_aether.settings import current_settings

__all__ = ["ActionCatalog", "ActionSpec", "IOSlot"]


@dataclass
class _Entry:
    spec: ActionSpec
    flow: Flow[..., Any] | None
    hints: dict[str, Any]
    checkers: dict[str, Any] = field(default_factory=dict)


class ActionCatalog:
    """The actions a planner may use, built by introspecting Prefect flows.

    Examples:
        >>> catalog = ActionCatalog()
        >>> len(catalog), catalog.get("missing") is None
        (0, True)
    """

    def __init__(
        self,
        *,
        action_tags: dict[str, list[str]] | None = None,
        roles: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        # Tags by action name added to whatever registers under that name (policy): those
        # given here and the operator's (`action_tags` setting), which nothing removes.
        settings = current_settings()
        self._extra_tags: dict[str, list[str]] = {}
        for given in (action_tags or {}, settings.action_tags):
            for action, tags in given.items():
                self._extra_tags[action] = sorted({*self._extra_tags.get(action, ()), *tags})
        # Roles per action and input; the operator's (`action_roles` setting) win.
        self._roles: dict[str, dict[str, str]] = {}
        for given_roles in (roles or {}, settings.action_roles):
            for action, slots in given_roles.items():
                self._roles[action] = {**self._roles.get(action, {}), **slots}
        self._entries: dict[str, _Entry] = {}
        self._by_ref: dict[str, str] = {}
        self._index: SearchIndex | None = None
        self._fingerprint: str | None = None

    # -- registration -------------------------------------------------------------------

    def register(
        self,
        flow: Flow[..., Any],
        *,
        name: str | None = None,
        flow_id: str | None = None,
        tags: Iterable[str] | None = None,
        entrypoint: str | None = None,
        roles: Mapping[str, str] | None = None,
    ) -> ActionSpec:
        """Introspect a Prefect flow and add it as an action.

        Registering the same flow twice is a no-op; a different flow under a
        taken name raises `CatalogError`.

        Args:
            flow: A `prefect.Flow` (a function decorated with `@flow`).
            name: Action name; defaults to the flow name.
            flow_id: Group id for `list_actions(flow_ids=...)`; None is global.
            tags: Extra tags, for search and policy (`aether:approval`, `aether:manual`);
                added to those `policy.action_tags` attached to the flow.
            entrypoint: Where the flow comes from, recorded on the spec.
            roles: `"read"` or `"write"` per parameter name, over the roles the flow's
                annotations give or the catalog infers (see `prefect_aether.catalog.roles`).

        Returns:
            The action spec.

        Raises:
            CatalogError: `flow` is not a Prefect flow, the name is taken, or `roles`
                names a parameter the flow lacks or a role other than read and write.
        """
        if not isinstance(flow, Flow):
            raise CatalogError(
                f"cannot register {flow!r}: it is not a Prefect flow "
                "(decorate the function with @flow)"
            )
        hints = _introspect.type_hints(flow)
        doc = _introspect.parse_docstring(_introspect.flow_docstring(flow))
        action_name = name or flow.name
        version = str(flow.version) if flow.version is not None else None
        spec = ActionSpec(
            name=action_name,
            ref=f"flow:{action_name}@{version}" if version else f"flow:{action_name}",
            kind="flow",
            version=version,
            description=doc.summary,
            tags=sorted(
                {*(tags or ()), *policy.flow_tags(flow), *self._extra_tags.get(action_name, ())}
            ),
            flow_id=flow_id,
            inputs=with_roles(
                [IOSlot(**slot) for slot in _introspect.input_slots(flow)],
                action_name,
                doc.summary,
                {**self._roles.get(action_name, {}), **(roles or {})},
                hints,
            ),
            outputs=[IOSlot(**slot) for slot in _introspect.output_slots(flow, hints, doc)],
            returns=IOSlot(**whole) if (whole := _introspect.return_slot(hints, doc)) else None,
            entrypoint=entrypoint or _default_entrypoint(flow),
        )
        return self._add(_Entry(spec, flow, hints), describe=_describe_flow(flow))

    def register_module(
        self, module: ModuleType | str, *, flow_id: str | None = None
    ) -> list[ActionSpec]:
        """Register every flow defined in a module (not the ones it imports).

        Args:
            module: A module object, a dotted module name or a path to a `.py` file.
            flow_id: Group id given to every action.

        Raises:
            CatalogError: The module cannot be imported or defines no flow.
        """
        where = None
        if isinstance(module, str):
            try:
                if module.endswith(".py"):
                    from prefect.utilities.importtools import load_script_as_module

                    # Entrypoints name the file: the module's name depends on load order.
                    where = str(Path(module).resolve())
                    module = load_script_as_module(module)
                else:
                    module = importlib.import_module(module)
            except Exception as exc:
                raise CatalogError(f"cannot import module {module!r}: {exc}") from exc
        flows = [
            obj
            for _, obj in sorted(vars(module).items())
            if isinstance(obj, Flow) and getattr(obj.fn, "__module__", None) == module.__name__
        ]
        if not flows:
            raise CatalogError(f"module {module.__name__!r} defines no Prefect flow")
        where = where or _module_location(module)
        return [
            self.register(f, flow_id=flow_id, entrypoint=f"{where}:{f.fn.__name__}") for f in flows
        ]

    def register_entrypoint(self, entrypoint: str, *, flow_id: str | None = None) -> ActionSpec:
        """Register the flow at `"path/to/file.py:fn"` or `"package.module:fn"`.

        Raises:
            CatalogError: The entrypoint cannot be loaded or is not a flow.
        """
        try:
            flow: Flow[..., Any] = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        except Exception as exc:
            raise CatalogError(f"cannot load flow from entrypoint {entrypoint!r}: {exc}") from exc
        return self.register(flow, flow_id=flow_id, entrypoint=entrypoint)

    async def register_deployments(
        self,
        *,
        names: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        flow_id: str | None = None,
    ) -> list[ActionSpec]:
        """Turn deployments on the Prefect API into actions run with `run_deployment`.

        The action is named `"<flow name>/<deployment name>"` (what
        `run_deployment` takes); its inputs come from the deployment's parameter
        schema and its description from the deployment. A deployment does not
        publish its return type, so it has one output, `result`, of any type:
        bind into it with a path (`${step.result.field}`). Its flow must persist
        its result (`@flow(persist_result=True)`) in storage this process can
        read, or the step fails with a message saying so.

        Args:
            names: Keep these deployments (`"flow/deployment"`); each must exist.
            tags: Keep deployments carrying any of these tags.
            flow_id: Group id given to every action.

        Raises:
            CatalogError: A named deployment does not exist, or nothing matched.

        Examples:
            >>> import asyncio
            >>> asyncio.run(ActionCatalog().register_deployments(tags=["etl"]))  # doctest: +SKIP
        """
        from prefect_aether.catalog._deployments import deployment_specs

        specs = [
            spec.model_copy(
                update={
                    "inputs": with_roles(
                        spec.inputs, spec.name, spec.description, self._roles.get(spec.name, {})
                    )
                }
            )
            for spec in await deployment_specs(names, tags, flow_id, self._extra_tags)
        ]
        return [
            self._add(_Entry(spec, None, {}), describe=f"deployment {spec.name!r}")
            for spec in specs
        ]

    def _add(self, entry: _Entry, *, describe: str) -> ActionSpec:
        spec = entry.spec
        existing = self._entries.get(spec.name)
        if existing is not None:
            if existing.spec == spec or (entry.flow is not None and existing.flow is entry.flow):
                return existing.spec
            theirs = _describe_flow(existing.flow) if existing.flow else existing.spec.ref
            raise CatalogError(
                f"action name {spec.name!r} is already taken by {theirs}; "
                f"cannot register {describe} under it (pass name=... to register it apart)"
            )
        self._entries[spec.name] = entry
        self._by_ref[spec.ref] = spec.name
        self._index = None
        self._fingerprint = None
        return spec

    # -- lookup -----------------------------------------------------------------------

    def get(self, name_or_ref: str) -> ActionSpec | None:
        """The action with this name or ref (a ref without `@version` also matches)."""
        entry = self._entry(name_or_ref)
        return entry.spec if entry else None

    def get_flow(self, name_or_ref: str) -> Flow[..., Any] | None:
        """The Prefect flow behind an action (None for unknown or deployment actions)."""
        entry = self._entry(name_or_ref)
        return entry.flow if entry else None

    def _entry(self, name_or_ref: str) -> _Entry | None:
        entry = self._entries.get(name_or_ref)
        if entry is not None:
            return entry
        name = self._by_ref.get(name_or_ref)
        if name is None and name_or_ref.startswith("flow:"):
            name = name_or_ref[len("flow:") :].split("@", 1)[0]
        return self._entries.get(name) if name else None

    def list_actions(
        self,
        *,
        flow_ids: Iterable[str] | None = None,
        include_global: bool = True,
        plannable: bool = False,
    ) -> list[ActionSpec]:
        """Actions in registration order, optionally limited to some groups.

        Args:
            flow_ids: Keep actions whose `flow_id` is one of these (None keeps all).
            include_global: With `flow_ids`, also keep actions with no `flow_id`.
            plannable: Leave out the actions tagged `aether:manual` (those a planner
                must never choose).
        """
        specs = [e.spec for e in self._entries.values()]
        if plannable:
            specs = [s for s in specs if not policy.is_manual(s)]
        if flow_ids is None:
            return specs
        wanted = set(flow_ids)
        return [s for s in specs if s.flow_id in wanted or (include_global and s.flow_id is None)]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter([e.spec for e in self._entries.values()])

    def __contains__(self, name_or_ref: object) -> bool:
        return isinstance(name_or_ref, str) and self._entry(name_or_ref) is not None

    # -- search and rendering ---------------------------------------------------------

    def search_index(self) -> SearchIndex:
        """The BM25 index over the current actions (rebuilt after a change)."""
        if self._index is None:
            self._index = SearchIndex([e.spec for e in self._entries.values()])
        return self._index

    def search_scores(
        self, query: str, k: int = 10, *, flow_ids: Iterable[str] | None = None
    ) -> list[tuple[ActionSpec, float]]:
        """`search`, with each action's BM25 score."""
        allowed = (
            None if flow_ids is None else [s.name for s in self.list_actions(flow_ids=flow_ids)]
        )
        return self.search_index().rank(query, k, allowed)

    def search(
        self, query: str, k: int = 10, *, flow_ids: Iterable[str] | None = None
    ) -> list[ActionSpec]:
        """Up to `k` actions ranked by lexical relevance (BM25) to `query`; ties by name.

        Examples:
            >>> ActionCatalog().search("load csv")
            []
        """
        return [spec for spec, _ in self.search_scores(query, k, flow_ids=flow_ids)]

    def render(self, actions: Iterable[ActionSpec] | None = None) -> str:
        """Compact, LLM-facing text of the actions (all by default).

        Examples:
            >>> ActionCatalog().render()
            ''
        """
        return "\n".join(render_spec(s) for s in (self if actions is None else actions))

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of all specs; changes iff any spec changes."""
        if self._fingerprint is None:
            specs = sorted(
                (e.spec.model_dump(mode="json") for e in self._entries.values()),
                key=lambda d: d["name"],
            )
            self._fingerprint = hashlib.sha256(canonical_json(specs).encode()).hexdigest()
        return self._fingerprint

    def producers(
        self,
        slot: IOSlot,
        *,
        flow_ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        plannable: bool = False,
    ) -> list[tuple[ActionSpec, IOSlot]]:
        """Actions with an output that can feed `slot`, best first.

        An output qualifies when both types are known and compatible; outputs
        named like the slot come first, with whole return values of the structure
        the slot takes (`${step}`: the slot `returns`), then outputs sharing a word
        with it (`region_totals` and `totals`); ties keep catalog order.

        Examples:
            >>> ActionCatalog().producers(IOSlot(name="rows", type="array"))
            []
        """
        skip = set(exclude)
        tiers: tuple[list[tuple[ActionSpec, IOSlot]], ...] = ([], [])
        for spec in self.list_actions(flow_ids=flow_ids, plannable=plannable):
            if spec.name in skip:
                continue
            if spec.returns is not None and same_structure(spec.returns, slot):
                tiers[0].append((spec, spec.returns))
            for out in spec.outputs:
                tier = feed_tier(out, slot)
                if tier is not None:
                    tiers[tier].append((spec, out))
        return tiers[0] + tiers[1]

    # -- value checks -----------------------------------------------------------------

    def check_input(self, action: str, slot: str, value: Any) -> str | None:
        """Check a literal for an action input the way Prefect will at run time.

        Flow actions use a pydantic adapter over the parameter's annotation in
        lax mode, which accepts exactly the coercions of Prefect's own
        `Flow.validate_parameters` ("3" for an int). Other actions use the
        slot's JSON schema.

        Returns:
            None when the value is accepted, else a one-line reason.
        """
        entry = self._entry(action)
        spec_slot = entry.spec.input(slot) if entry else None
        if entry is None or spec_slot is None:
            return None
        checker = entry.checkers.get(slot)
        if checker is None:
            checker = entry.checkers[slot] = make_checker(entry.flow, entry.hints, spec_slot)
        return checker(value)  # type: ignore[no-any-return]


def _describe_flow(flow: Flow[..., Any]) -> str:
    fn = flow.fn
    return (
        f"flow {flow.name!r} ({getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')})"
    )


def _module_location(module: ModuleType) -> str:
    """How an entrypoint names a module: its dotted name, or its file when it was loaded
    from a path (Prefect names such modules after the file, or `__prefect_loader_<hash>__`
    when that name is taken, so the name would change from one load to the next)."""
    name = module.__name__
    path = getattr(module, "__file__", None)
    if path and (name == "__main__" or name.startswith("__prefect_loader_")):
        return str(Path(path).resolve())
    return name


def _default_entrypoint(flow: Flow[..., Any]) -> str | None:
    module = getattr(flow.fn, "__module__", None)
    qualname = getattr(flow.fn, "__qualname__", "")
    if not module or "<locals>" in qualname:
        return None
    if module == "__main__" or module.startswith("__prefect_loader_"):
        path = inspect.getsourcefile(flow.fn)
        return f"{Path(path).resolve()}:{qualname}" if path else None
    return f"{module}:{qualname}"
