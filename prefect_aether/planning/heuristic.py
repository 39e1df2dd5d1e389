"""A deterministic, offline planner: no LLM, no network.

The goal is read into the resources it supplies (file names, URLs, quoted
text, numbers) and its clauses in order (`_goal`). Each clause that asks for
something picks the action it matches best: BM25 over the action's name,
description, parameter and return docs, with stemmed, synonym-folded words
(`catalog.words`); the whole goal breaks near-ties; the direction of data words
("into text", "from the image") tells `a_to_b` from `b_to_a`; actions whose
inputs the goal or earlier steps can feed are preferred. Inputs are then wired
from the user's values, the goal's resources and earlier steps' outputs
(outputs nobody has used yet first). A producer step is inserted (backward
chaining, bounded depth) only for an input nobody can give: structured data,
or a value the goal never mentions. Anything left becomes a `${user.<name>}`
binding, making a partial plan. Each step says why it is there in
`extras.reason`.

Examples:
    >>> from prefect import flow
    >>> from prefect_aether import ActionCatalog
    >>> @flow(name="load_rows", version="1")
    ... def load_rows(path: str) -> list[int]:
    ...     '''Load rows from a file.'''
    ...     return [1]
    >>> catalog = ActionCatalog()
    >>> _ = catalog.register(load_rows)
    >>> plan = HeuristicPlanner(catalog).build(PlanningContext(goal="load the rows"))
    >>> [(s.id, s.inputs) for s in plan.steps]
    [('load_rows', {'path': '${user.path}'})]
    >>> plan = HeuristicPlanner(catalog).build(PlanningContext(goal="load rows from 'a.csv'"))
    >>> [(s.id, s.inputs) for s in plan.steps]
    [('load_rows', {'path': 'a.csv'})]
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from prefect_aether.catalog.registry import ActionCatalog, ActionSpec
from prefect_aether.catalog.roles import action_verbs, is_verb, says_write, writes
from prefect_aether.catalog.words import STOPWORDS, stem, tokenize
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning._clues import INDEPENDENT, cues, has_effect, takes_whole
from prefect_aether.planning._fits import PLACES, STRUCTURED, resource_fits
from prefect_aether.planning._goal import Clause, Goal, read_goal
from prefect_aether.planning._leftovers import write_leftovers
from prefect_aether.planning._served import lead_word, served
from prefect_aether.planning._wiring import Setting, Wiring
from prefect_aether.planning.base import (
    EventLog,
    PlanningCallback,
    PlanningContext,
    PlanningEvent,
    PlanResult,
    checked,
)

__all__ = ["HeuristicPlanner"]

_CONTEXT_WEIGHT = 0.5
_DIRECTION_BONUS = 1.5
_COVERAGE_BONUS = 0.75
_UNAVAILABLE_FACTOR = 0.6
_UNASKED_EFFECT_FACTOR = 0.5
_FEED_BONUS = 2.0
_PLACE_BONUS = 2.5
_CANNOT_WRITE_THERE = 0.6
# A clause is served by one of its best matches: the first few, at least this close to
# the best, that do what it asks (`_served`).
_SERVING_POOL = 5
_SERVING_RATIO = 0.5
_NEXT_BEST_RATIO = 0.8
_NAME_DIRECTION = re.compile(r"(?P<source>[a-z0-9]+)[_\- ]*(?:to|2)[_\- ]*(?P<target>[a-z0-9]+)")


@dataclass
class _Catalog:
    """What the planner derives once per catalog version."""

    specs: list[ActionSpec]
    kinds: frozenset[str]
    inputs: list[frozenset[str]]
    outputs: list[frozenset[str]]
    needs: list[frozenset[str]]
    effects: list[bool]
    verbs: list[frozenset[str]]


@dataclass
class _Choice:
    spec: ActionSpec
    clause: Clause
    matched: list[str]
    score: float
    terms: frozenset[str] = frozenset()
    step_id: str = ""
    reason: str = ""


class HeuristicPlanner:
    """Plans without an LLM; the same input always gives the same plan, in any process.

    Args:
        catalog: The actions to plan with.
        threshold: Least match score for a clause to select an action.
        max_depth: Most producer steps inserted in a row by backward chaining.

    Examples:
        >>> from prefect_aether import ActionCatalog
        >>> HeuristicPlanner(ActionCatalog()).max_depth
        4
    """

    name = "heuristic"

    def __init__(
        self, catalog: ActionCatalog, *, threshold: float = 1.0, max_depth: int = 4
    ) -> None:
        self.catalog = catalog
        self.threshold = threshold
        self.max_depth = max_depth
        self._derived: tuple[str, _Catalog] | None = None

    # -- selection ------------------------------------------------------------------------

    def _catalog(self) -> _Catalog:
        key = self.catalog.fingerprint
        if self._derived is None or self._derived[0] != key:
            specs = self.catalog.search_index().specs
            slot_words: Counter[str] = Counter()
            per_action = []
            needs = []
            named: set[str] = set()
            for spec in specs:
                ins = {t for s in spec.inputs if s.required for t in tokenize(s.name)}
                outs = {t for s in spec.outputs for t in tokenize(s.name)}
                # `text_to_audio`, `csv2json`: the name says what goes in and what comes out.
                direction = _NAME_DIRECTION.fullmatch(spec.name.lower())
                # `post_to_slack`, `load_to_warehouse`: a verb and a place, not data.
                if direction and not is_verb(direction["source"]):
                    source, target = tokenize(direction["source"]), tokenize(direction["target"])
                    ins.update(source)
                    outs.update(target)
                    named.update(source + target)
                per_action.append((frozenset(ins), frozenset(outs)))
                # Values a user gives (not structured data, which a producer step makes).
                needs.append(
                    frozenset(
                        t
                        for s in spec.inputs
                        if s.required and s.type not in STRUCTURED
                        for t in tokenize(s.name)
                    )
                )
                slot_words.update(ins | outs)
            # Words that name data several actions take or give ("image", "records"): they
            # say what a clause is about, not what it asks to do.
            kinds = frozenset(w for w, n in slot_words.items() if n >= 2) | named
            derived = _Catalog(
                specs=specs,
                kinds=kinds,
                inputs=[ins & kinds for ins, _ in per_action],
                outputs=[outs & kinds for _, outs in per_action],
                needs=[n & kinds for n in needs],
                effects=[writes(spec.inputs) for spec in specs],
                verbs=[
                    frozenset(stem(v) for v in action_verbs(spec.name, spec.description))
                    for spec in specs
                ],
            )
            self._derived = (key, derived)
        return self._derived[1]

    def _choices(self, ctx: PlanningContext, goal: Goal) -> tuple[list[_Choice], list[str]]:
        """The action each clause asks for, in goal order, and the clauses (in the goal's
        words) that no action serves."""
        derived = self._catalog()
        index = self.catalog.search_index()
        # Planners never choose `aether:manual` actions.
        allowed = {s.name for s in self.catalog.list_actions(flow_ids=ctx.flow_ids, plannable=True)}
        overall = index.scores(index.weights(goal.tokens))
        available = self._available(ctx, goal, derived)
        chosen: list[_Choice] = []
        unserved: list[str] = []
        for clause in goal.clauses:
            if clause.context or not clause.tokens:
                continue
            ranked = self._rank(clause, goal, overall, available, allowed, [c.spec for c in chosen])
            # Of the actions that fit the clause well enough, those that do what it asks.
            close = [r for r in ranked[:_SERVING_POOL] if r[0] >= _SERVING_RATIO * ranked[0][0]]
            options = {r[1]: self._choice(r, clause) for r in close}
            serving = [
                r
                for r in close
                if served(
                    clause,
                    options[r[1]].terms,
                    options[r[1]].matched,
                    writes=derived.effects[r[2]],
                    verbs=derived.verbs[r[2]],
                )
            ]
            pick = self._pick(serving, chosen, clause, goal, derived) if serving else None
            if pick is None:
                # No action does what the clause asks ("call the CTO"); a fragment ("top 5")
                # only qualifies another clause.
                asks = ranked or (lead_word(clause) is not None and len(clause.tokens) > 1)
                # A place the clause writes to gets a writer later (`write_leftovers`).
                writes_place = any(goal.resources[i].direction == "write" for i in clause.resources)
                if not serving and asks and not writes_place:
                    unserved.append(clause.said or clause.text)
                continue
            chosen.append(options[pick[1]])
            available |= derived.outputs[pick[2]]
        if not chosen and not unserved and goal.clauses:
            # No clause asks for anything on its own: read the goal as one request.
            whole = Clause(
                text=goal.text,
                tokens=goal.tokens,
                words=[w for c in goal.clauses for w in c.words],
                resources=list(range(len(goal.resources))),
            )
            ranked = self._rank(whole, goal, overall, available, allowed)
            if ranked:
                chosen.append(self._choice(ranked[0], whole))
            else:
                unserved.append(goal.text)
        return chosen, unserved

    def _rank(
        self,
        clause: Clause,
        goal: Goal,
        overall: dict[int, float],
        available: set[str],
        allowed: set[str] | None,
        made: Sequence[ActionSpec] = (),
    ) -> list[tuple[float, str, int]]:
        """Actions that fit `clause` above the threshold, best first: `(score, name, pos)`.
        An action that takes, whole, what an earlier clause's action returns (`made`)
        fits better: its data is at hand."""
        derived = self._catalog()
        index = self.catalog.search_index()
        to_kinds, from_kinds = cues(clause, derived.kinds)
        said = set(clause.tokens) & derived.kinds
        places = []
        for i in clause.resources:
            resource = goal.resources[i]
            if resource.kind in PLACES:
                places.append(resource)
            else:
                said |= resource.words & derived.kinds
        asks_effect = says_write(clause.words) or any(p.direction == "write" for p in places)
        terms = index.weights(clause.tokens)
        # What the clause asks to do: its words that are not data kinds, and its lead verb
        # even when actions also name data after it ("train a model" / a `train` input).
        lead = lead_word(clause)
        verb = stem(lead) if lead else None
        acts = index.scores({t: w for t, w in terms.items() if t not in derived.kinds or t == verb})
        ranked: list[tuple[float, str, int]] = []
        for position, base in index.scores(terms).items():
            spec = derived.specs[position]
            if allowed is not None and spec.name not in allowed:
                continue
            ins, outs = derived.inputs[position], derived.outputs[position]
            # A file or URL speaks for an action only where it fits the way the goal
            # moves it: a file the goal reads, for one that reads such a file.
            heard = said | {
                w
                for r in places
                if any(resource_fits(r, s) for s in spec.inputs)
                for w in r.words & derived.kinds
            }
            shape = _DIRECTION_BONUS * (
                len(to_kinds & (outs - ins))
                - len(to_kinds & (ins - outs))
                + len(from_kinds & (ins - outs))
                - len(from_kinds & (outs - ins))
            )
            # An action that takes or gives the data the clause speaks of fits it better
            # than one that only shares its verb.
            shape += _COVERAGE_BONUS * (len(heard & (ins | outs)) - len(heard - (ins | outs)))
            score = base + _CONTEXT_WEIGHT * overall.get(position, 0) + shape
            if made and takes_whole(spec, made):
                score += _FEED_BONUS
            # A place the clause names, taken the way the goal moves it ("from x.csv" by
            # an input it reads, "to https://..." by one it writes to).
            takes = [any(s.role and resource_fits(r, s) for s in spec.inputs) for r in places]
            score += _PLACE_BONUS * sum(takes)
            if any(
                r.direction == "write" and not took for r, took in zip(places, takes, strict=True)
            ):
                # Asked to write somewhere it cannot write to ("POST ... to https://...").
                score *= _CANNOT_WRITE_THERE
            if not derived.needs[position] <= available:
                score *= _UNAVAILABLE_FACTOR
            if derived.effects[position] and not asks_effect:
                # Writing, sending or changing something only where the goal asks for it.
                score *= _UNASKED_EFFECT_FACTOR
            # What the clause asks to do must match, or the data it names must fit well.
            asked = acts.get(position, 0.0) >= self.threshold * 0.5 or shape >= _DIRECTION_BONUS
            if asked and score >= self.threshold:
                ranked.append((round(score, 9), spec.name, position))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        return ranked

    def _choice(self, pick: tuple[float, str, int], clause: Clause) -> _Choice:
        index = self.catalog.search_index()
        spec = index.specs[pick[2]]
        doc_terms = set(index.weights(tokenize(_describe(spec))))
        matched = sorted(w for w in clause.words if w not in STOPWORDS and stem(w) in doc_terms)
        return _Choice(spec, clause, matched, pick[0], frozenset(doc_terms))

    def _available(self, ctx: PlanningContext, goal: Goal, derived: _Catalog) -> set[str]:
        """Data words the user supplies: input keys, resources, context clauses."""
        available: set[str] = {k for key in ctx.user_inputs for k in tokenize(key)}
        for resource in goal.resources:
            available |= resource.words
        for clause in goal.clauses:
            if clause.context:
                available |= set(clause.tokens) & derived.kinds
        return available

    def relevance(self, goal: Goal) -> dict[str, float]:
        """Each action's BM25 score for the whole goal, by action name."""
        index = self.catalog.search_index()
        return {
            index.specs[p].name: score
            for p, score in index.scores(index.weights(goal.tokens)).items()
        }

    def _pick(
        self,
        ranked: list[tuple[float, str, int]],
        chosen: list[_Choice],
        clause: Clause,
        goal: Goal,
        derived: _Catalog,
    ) -> tuple[float, str, int] | None:
        """The clause's best action; if an earlier clause chose it already, a new step of
        it only when the clause brings data of its own, else the runner-up when close."""
        best = ranked[0]
        taken = {c.spec.name for c in chosen}
        if best[1] not in taken:
            return best
        spec = derived.specs[best[2]]
        own = [goal.resources[i] for i in clause.resources]
        if any(resource_fits(r, slot) for r in own for slot in spec.inputs):
            return best
        for candidate in ranked[1:]:
            if candidate[0] < _NEXT_BEST_RATIO * best[0]:
                break
            if candidate[1] not in taken:
                return candidate
        return None

    def select(self, ctx: PlanningContext) -> list[ActionSpec]:
        """The actions the goal's clauses ask for, in goal order (an action may repeat).

        Examples:
            >>> from prefect_aether import ActionCatalog
            >>> HeuristicPlanner(ActionCatalog()).select(PlanningContext(goal="anything"))
            []
        """
        return [c.spec for c in self._choices(ctx, read_goal(ctx.goal))[0]]

    # -- building -------------------------------------------------------------------------

    def build(self, ctx: PlanningContext) -> CandidatePlan:
        """The plan for `ctx.goal` (possibly partial; possibly empty when nothing matches)."""
        goal = read_goal(ctx.goal)
        choices, unserved = self._choices(ctx, goal)
        derived = self._catalog()
        setting = Setting(
            catalog=self.catalog,
            goal=goal,
            user_inputs=ctx.user_inputs,
            flow_ids=ctx.flow_ids,
            max_depth=self.max_depth,
            needs={spec.name: derived.needs[i] for i, spec in enumerate(derived.specs)},
            asked=frozenset(c.spec.name for c in choices),
            relevance=self.relevance(goal),
            available=frozenset(self._available(ctx, goal, derived)),
            vocabulary=frozenset(self.catalog.search_index().vocabulary),
        )
        builder = Wiring(setting)
        for choice in choices:
            why = f"asked for by {_quote(choice.clause.text)}"
            if choice.matched:
                why += f" (matched {', '.join(dict.fromkeys(choice.matched))})"
            choice.step_id = builder.add(choice.spec, choice.clause, depth=0, reason=why)
        writers = self.catalog.list_actions(flow_ids=ctx.flow_ids, plannable=True)
        unserved += write_leftovers(builder, goal, writers, unserved)
        builder.feed_unused_outputs()
        # "then", "after that": order-only edges where no data already orders the two.
        for previous, choice in itertools.pairwise(choices):
            if choice.clause.follows and choice.clause is not previous.clause:
                builder.order_after(choice.step_id, previous.step_id)
        # Effects (writing, sending, changing something) happen in the order the goal
        # lists them, unless it says they are independent; computations stay concurrent.
        if not INDEPENDENT.search(ctx.goal):
            effects = [c for c in choices if has_effect(c.spec)]
            for previous, choice in itertools.pairwise(effects):
                builder.order_after(choice.step_id, previous.step_id)
        extras: dict[str, object] = {"goal": ctx.goal, "planner": self.name}
        if unserved:
            extras["unserved"] = unserved
        return CandidatePlan(steps=builder.state.steps, extras=extras)

    async def plan(
        self, ctx: PlanningContext, *, on_event: PlanningCallback | None = None
    ) -> PlanResult:
        """Build, validate and report the plan with the same events as `ActionPlanner`."""
        emit = EventLog(on_event)
        events = emit.events

        await emit(PlanningEvent(phase="start", iteration=0, message=f"planning: {ctx.goal}"))
        plan = self.build(ctx)
        validation = await checked(plan, self.catalog, ctx, emit, 1)
        unserved = list(plan.extras.get("unserved") or [])
        accepted = validation.ok or (ctx.allow_partial_plans and validation.is_partial_ok())
        if not accepted:
            if unserved and not plan.steps:
                why = "no action can: " + "; ".join(unserved)
            elif not plan.steps:
                why = "no action matches the goal"
            else:
                why = "the plan is not acceptable"
            await emit(
                PlanningEvent(phase="failure", iteration=1, message=why, validation=validation)
            )
            return PlanResult(
                plan=None,
                validation=validation,
                events=events,
                planner=self.name,
                unserved=unserved,
            )
        await emit(
            PlanningEvent(
                phase="success",
                iteration=1,
                message="plan accepted"
                + ("" if validation.ok else " (partial)")
                + (f"; no action can: {'; '.join(unserved)}" if unserved else ""),
                plan_dict=plan.to_dict(),
                validation=validation,
            )
        )
        return PlanResult(
            plan=plan, validation=validation, events=events, planner=self.name, unserved=unserved
        )


def _describe(spec: ActionSpec) -> str:
    slots = " ".join(f"{s.name} {s.description or ''}" for s in (*spec.inputs, *spec.outputs))
    return f"{spec.name} {spec.description or ''} {slots}"


def _quote(text: str, limit: int = 60) -> str:
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"'{short}'"
