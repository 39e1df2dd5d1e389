"""Wiring a heuristic plan's steps (private to `heuristic`).

`Wiring.add` appends a step for an action and binds each input, in this order:
the user's value of that name; a value the step's own clause gives; an output
of an earlier step nobody has used yet (unless a used one fits clearly better);
a value elsewhere in the goal; any earlier output or goal value; a producer step
inserted before it (backward chaining) when nobody can give the input; else a
`${user.<name>}` binding.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect_aether.catalog.registry import ActionCatalog, ActionSpec, IOSlot
from prefect_aether.catalog.schemas import compatible
from prefect_aether.catalog.specs import RETURN_SLOT, feed_tier, same_structure
from prefect_aether.catalog.words import tokenize
from prefect_aether.plan import PlanStep, iter_bindings
from prefect_aether.planning._fits import (
    STRUCTURED,
    fit,
    is_fraction,
    named_choice,
    number,
    options,
    passable,
    ref,
    resource_fits,
    split_share,
    words_of,
)
from prefect_aether.planning._goal import Clause, Goal, read_goal
from prefect_aether.planning._inline import inline_object
from prefect_aether.planning._values import (
    asks_for,
    bare_values,
    code_value,
    is_name_like,
    named_separator,
    named_value,
)

__all__ = ["Setting", "Wiring"]

# Most words a clause that only labels a value has ("late share 0.3").
_LABEL_WORDS = 2


@dataclass(frozen=True)
class Setting:
    """What wiring needs to know of the planner, the catalog and the goal.

    Attributes:
        needs: Per action, the data words of the values a user gives it.
        asked: Actions the goal's clauses ask for (they get steps of their own).
        relevance: Per action, its match score for the whole goal.
        available: Data words the user supplies (inputs, goal resources, context).
        vocabulary: Every word stem the catalog's names and docs use (a word of the goal
            outside it may be a bare value: `_values`).
        excluded: Actions that failed in this execution (a replan uses them no more).
    """

    catalog: ActionCatalog
    goal: Goal
    user_inputs: Mapping[str, Any]
    flow_ids: Iterable[str] | None
    max_depth: int
    needs: Mapping[str, frozenset[str]]
    asked: frozenset[str]
    relevance: Mapping[str, float]
    available: frozenset[str]
    vocabulary: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()


@dataclass
class _State:
    """Everything one `build` accumulates."""

    goal: Goal
    steps: list[PlanStep] = field(default_factory=list)
    specs: dict[str, ActionSpec] = field(default_factory=dict)
    used_outputs: Counter[tuple[str, str]] = field(default_factory=Counter)
    used_resources: Counter[int] = field(default_factory=Counter)
    given: set[str] = field(default_factory=set)
    inlined: set[int] = field(default_factory=set)


class Wiring:
    """Adds steps in dependency order while wiring their inputs."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.state = _State(setting.goal)
        self.goal_words = set(setting.goal.tokens)
        named = {
            i.name
            for a in setting.catalog.list_actions(flow_ids=setting.flow_ids)
            for i in a.inputs
        }
        # The user's values under names no input has: each may be meant for one input.
        self.free_keys = [k for k in setting.user_inputs if k not in named]

    def add(
        self,
        spec: ActionSpec,
        clause: Clause,
        *,
        depth: int,
        reason: str,
        chain: tuple[str, ...] = (),
    ) -> str:
        sid = self._step_id(spec.name)
        self.state.specs[sid] = spec  # reserve the id while its producers are added
        inputs: dict[str, Any] = {}
        for slot in spec.inputs:
            value = self.wire(sid, spec, slot, clause, inputs, depth=depth, chain=(*chain, sid))
            if value is not None:
                inputs[slot.name] = value
        step = PlanStep(
            id=sid,
            action=spec.name,
            action_ref=spec.ref,
            inputs=inputs,
            extras={"reason": reason},
        )
        self.state.steps.append(step)
        return sid

    def wire(
        self,
        sid: str,
        spec: ActionSpec,
        slot: IOSlot,
        clause: Clause,
        taken: dict[str, Any],
        *,
        depth: int,
        chain: tuple[str, ...],
    ) -> Any:
        if slot.name in self.setting.user_inputs:
            return f"${{user.{slot.name}}}"
        given = self._given_as(spec, slot)
        if given is not None:
            return f"${{user.{given}}}"
        resources = self.state.goal.resources
        local = [i for i in clause.resources if resource_fits(resources[i], slot)]
        fresh_local = [i for i in local if not self.state.used_resources[i]]
        if fresh_local:
            return self._use_resource(fresh_local[0], slot)
        said = named_choice(slot, clause)
        if said is None and slot.type == "string":
            named = named_value(slot.name, clause, self.setting.vocabulary)
            # Only a value the input takes as it is ("June" is no date).
            if (
                named is not None
                and self.setting.catalog.check_input(spec.name, slot.name, named) is None
            ):
                said = named
        if said is None and slot.type in ("string", None) and slot.role is None:
            said = self._said_in_words(spec, slot, clause, taken)
        if said is not None:
            return said
        if not slot.required:
            return f"${{user.{slot.name}}}" if depth == 0 and asks_for(slot.name, clause) else None
        if depth == 0 and slot.type in ("string", None):
            # "book a taxi to 'the airport'": the clause's own value that fits no other input
            # of the action it asked for goes to its free text input.
            # A file of a known media type only goes where it fits (never a jpg to audio).
            loose = [
                i
                for i in clause.resources
                if resources[i].kind in ("text", "file")
                and resources[i].direction != "write"
                and resources[i].media is None
                and not self.state.used_resources[i]
                and not any(resource_fits(resources[i], other) for other in spec.inputs)
            ]
            if loose:
                return self._use_resource(loose[0])
        bound = {v for v in taken.values() if isinstance(v, str)}
        for fresh in (True, False):
            found = self.from_steps(slot, fresh=fresh, exclude=bound)
            if found is not None:
                return found
            anywhere = [
                i
                for i, r in enumerate(resources)
                if resource_fits(r, slot) and (not fresh or not self.state.used_resources[i])
            ]
            anywhere = [i for i in anywhere if resources[i].value not in bound]
            if anywhere:
                return self._use_resource(anywhere[0], slot)
        mentioned = self.from_mentioned(slot, clause, exclude=bound)
        if mentioned is not None:
            return mentioned
        bare = self._bare_value(slot, clause, taken)
        if bare is not None:
            return bare
        if depth == 0 and slot.type == "object":
            written = inline_object(
                slot,
                self.state.goal,
                lambda i: not self.state.used_resources[i],
                self.setting.vocabulary,
            )
            if written is not None:
                self.state.used_resources.update(written[1])
                self.state.inlined.update(written[1])
                return written[0]
        if depth < self.setting.max_depth and self._needs_producer(slot):
            producer = self.producer(slot, chain, clause)
            if producer is not None:
                spec_out, output = producer
                what = "its result" if output == RETURN_SLOT else repr(output)
                why = f"produces {what} for {spec.name}.{slot.name}"
                made = self.add(spec_out, clause, depth=depth + 1, reason=why, chain=chain)
                self.state.used_outputs[(made, output)] += 1
                return ref(made, output)
        return f"${{user.{slot.name}}}"

    def only_labels(self, clause: Clause) -> bool:
        """Whether a clause only labels values an object the goal wrote out took ("macro
        share 0.3" after "escalate the delay: delay is 42 min"): a step for it would compute
        what the user already said."""
        return (
            bool(clause.resources)
            and set(clause.resources) <= self.state.inlined
            and len(clause.tokens) <= _LABEL_WORDS
        )

    def _given_as(self, spec: ActionSpec, slot: IOSlot) -> str | None:
        """The user's value given under another name ("label" for `run_label`, "data":
        "parcels.csv" for a `path` that reads a file): a key no input of the catalog has,
        not bound yet, whose value the input takes as it is, and whose words the input's
        name says (or, for a required input, its docs), or whose value is a file or URL
        the input takes."""
        if not self.free_keys:
            return None
        bound = {
            b.key
            for s in self.state.steps
            for _, b in iter_bindings(s.inputs)
            if b.kind == "external"
        }
        name = set(tokenize(slot.name))
        about = name | set(tokenize(slot.description or "")) if slot.required else name
        for key in self.free_keys:
            if key in bound or key in self.state.given:
                continue
            value = self.setting.user_inputs[key]
            if self.setting.catalog.check_input(spec.name, slot.name, value) is not None:
                continue
            places = read_goal(value).resources if isinstance(value, str) and slot.required else []
            if set(tokenize(key)) & about or any(
                r.kind in ("file", "url") and r.value == value.strip() and resource_fits(r, slot)
                for r in places
            ):
                self.state.given.add(key)
                return key
        return None

    def _said_in_words(
        self, spec: ActionSpec, slot: IOSlot, clause: Clause, taken: dict[str, Any]
    ) -> str | None:
        """A separator the goal names in words, or a code the clause writes in capitals,
        for a text input that offers no choice; only a value the input takes as it is."""
        if options(slot):
            return None
        used = {v for s in self.state.steps for v in s.inputs.values() if isinstance(v, str)}
        used |= {v for v in taken.values() if isinstance(v, str)}
        found = named_separator(slot.name, slot.description, self.state.goal.text)
        if found is None:
            found = code_value(slot.name, slot.description, clause, used)
        if found is None or self.setting.catalog.check_input(spec.name, slot.name, found):
            return None
        return found

    def _bare_value(self, slot: IOSlot, clause: Clause, taken: dict[str, Any]) -> str | None:
        """A name the clause gives bare ("check boiler status") for a required text
        input that names no place and offers no choice."""
        if (
            not slot.required
            or slot.type not in ("string", None)
            or slot.role is not None
            or "enum" in slot.json_schema
        ):
            return None
        used = {v for s in self.state.steps for v in s.inputs.values() if isinstance(v, str)}
        used |= {v for v in taken.values() if isinstance(v, str)}
        found = bare_values(clause, self.setting.vocabulary, used)
        return found[0] if found else None

    def _use_resource(self, index: int, slot: IOSlot | None = None) -> Any:
        self.state.used_resources[index] += 1
        resource = self.state.goal.resources[index]
        if resource.kind == "number":
            value = number(resource.value)
            if slot is not None and resource.value.endswith("%") and is_fraction(slot):
                return round(float(value) / 100, 12)
            return value
        if resource.kind == "json":
            return json.loads(resource.value)
        if resource.kind == "split" and slot is not None:
            return split_share(resource.value, slot)
        return "$" + resource.value if resource.value.startswith("${") else resource.value

    def _needs_producer(self, slot: IOSlot) -> bool:
        """Structured data comes from a step; a place (a file, a URL, a table) from the
        user; other text from a step only when one says it makes it (`producer`)."""
        return slot.type in STRUCTURED or slot.role is None

    def from_steps(self, slot: IOSlot, *, fresh: bool, exclude: set[str]) -> str | None:
        """An earlier step's output for `slot` (same name first, then a shared word);
        with `fresh`, one no step has used yet, unless a used one fits clearly better.
        The fit is how much of the input's description the output's description and
        action say ("clean sales records" is `clean_sales.records`, not
        `detect_anomalies.records`); ties go to the latest step."""
        built = {s.id for s in self.state.steps}  # not the steps still being wired
        wanted_words = set(tokenize(slot.description or ""))
        for wanted in (0, 1, 2):
            found: list[tuple[int, int, str, str]] = []
            for position, sid in enumerate(self.state.specs):
                if sid not in built:
                    continue
                spec = self.state.specs[sid]
                for out in passable(spec):
                    if ref(sid, out.name) in exclude or fit(spec, out, slot) != wanted:
                        continue
                    said = set(tokenize(f"{out.description or ''} {spec.name}"))
                    found.append((len(wanted_words & said), position, sid, out.name))
            unused = [f for f in found if not self.state.used_outputs[(f[2], f[3])]]
            pool = unused if fresh else found
            if not pool:
                continue
            best = max(pool)
            # A used output that the input's docs describe better wins over a fresh one,
            # unless both are whole values of the input's type: then the latest result
            # ("convert it, then load it") is the one meant.
            if fresh and max(found)[0] > best[0] and best[3] != RETURN_SLOT:
                best = max(found)
            self.state.used_outputs[(best[2], best[3])] += 1
            return ref(best[2], best[3])
        return None

    def from_mentioned(self, slot: IOSlot, clause: Clause, *, exclude: set[str]) -> str | None:
        """The result of the latest earlier step the clause speaks of ("post *the
        summary*" is what `summarize_tickets` made) for a required text input."""
        if not slot.required or slot.type not in ("string", None) or slot.role is not None:
            return None
        said = set(clause.tokens)
        built = {s.id for s in self.state.steps}
        for sid in reversed(list(self.state.specs)):
            spec = self.state.specs[sid]
            whole = spec.returns
            if sid not in built or whole is None or whole.type not in ("string", None):
                continue
            if not set(tokenize(spec.name)) & said or not compatible(
                whole.json_schema, slot.json_schema
            ):
                continue
            output = spec.outputs[0].name if len(spec.outputs) == 1 else RETURN_SLOT
            binding = ref(sid, output)
            if binding not in exclude:
                self.state.used_outputs[(sid, output)] += 1
                return binding
        return None

    def _text_producers(
        self, slot: IOSlot, chain: tuple[str, ...]
    ) -> list[tuple[ActionSpec, IOSlot]]:
        """Actions that make the text an input names ("summary" from `summarize_tickets`)
        and change nothing to make it."""
        on_chain = {self.state.specs[sid].name for sid in chain if sid in self.state.specs}
        wanted = set(tokenize(slot.name))
        found = []
        for spec in self.setting.catalog.list_actions(
            flow_ids=self.setting.flow_ids, plannable=True
        ):
            whole = spec.returns
            if (
                spec.name in on_chain
                or spec.name in self.setting.excluded
                or whole is None
                or whole.type != slot.type
                or any(i.role == "write" for i in spec.inputs)
                or not wanted & set(tokenize(spec.name))
                or not compatible(whole.json_schema, slot.json_schema)
            ):
                continue
            out = spec.outputs[0] if len(spec.outputs) == 1 else whole
            found.append((spec, out))
        return found

    def producer(
        self, slot: IOSlot, chain: tuple[str, ...], clause: Clause | None = None
    ) -> tuple[ActionSpec, str] | None:
        """An action (not already on this chain) whose output can feed `slot`: first one
        whose inputs the user or the plan can give, then one that takes a name the clause
        gives bare ("the production model parcels-v2": the model is fetched by that
        name, not trained anew), then by name match, then by how well it fits the goal,
        then by name."""
        on_chain = {self.state.specs[sid].name for sid in chain if sid in self.state.specs}
        setting = self.setting
        found = setting.catalog.producers(
            slot, flow_ids=setting.flow_ids, exclude=on_chain | setting.excluded, plannable=True
        )
        ins = setting.needs
        if slot.type not in STRUCTURED:
            # A plain value (a name, a number) comes from a step only when that step says
            # it makes exactly that, and changes nothing to make it.
            found = [
                (spec, out)
                for spec, out in found
                if out.name == slot.name and not any(i.role == "write" for i in spec.inputs)
            ] + self._text_producers(slot, chain)
        # A producer that needs the very thing it would give (`records` in, `records` out,
        # or a list of orders in and out) only moves the gap.
        found = [
            (spec, out)
            for spec, out in found
            if not any(
                i.required
                and (
                    i.name == out.name
                    or words_of(i.name) == words_of(out.name)
                    or (out.name == RETURN_SLOT and same_structure(i, out))
                )
                for i in spec.inputs
            )
        ]
        if not found:
            return None
        asked = setting.asked
        have = set(setting.available)
        for sid in self.state.specs:
            have |= {t for out in self.state.specs[sid].outputs for t in tokenize(out.name)}

        named = clause is not None and any(
            is_name_like(v) for v in bare_values(clause, setting.vocabulary)
        )

        def rank(pair: tuple[ActionSpec, IOSlot]) -> tuple[int, int, int, int, float, str]:
            spec, out = pair
            takes_name = any(
                i.required and i.type == "string" and i.role is None and "enum" not in i.json_schema
                for i in spec.inputs
            )
            return (
                # An action a clause asks for gets its own step; another one feeds this input.
                1 if spec.name in asked else 0,
                0 if named and takes_name else 1,
                0 if ins.get(spec.name, frozenset()) <= have else 1,
                feed_tier(out, slot) or 0,
                -setting.relevance.get(spec.name, 0.0),
                spec.name,
            )

        spec, out = min(found, key=rank)
        return spec, out.name

    def _step_id(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "step"
        if base[0].isdigit():
            base = f"step_{base}"
        if base == "user":
            base = "user_step"
        sid, n = base, 2
        while sid in self.state.specs:
            sid, n = f"{base}_{n}", n + 1
        return sid
