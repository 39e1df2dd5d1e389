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

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from prefect_aether.catalog.registry import ActionCatalog, ActionSpec
from prefect_aether.catalog.roles import says_write
from prefect_aether.catalog.words import STOPWORDS, stem, tokenize
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning._catalog import Derived, derive
from prefect_aether.planning._clues import INDEPENDENT, cues, has_effect, takes_whole
from prefect_aether.planning._finishing import (
    feed_unused_outputs,
    name_given_names,
    order_after,
)
from prefect_aether.planning._fits import PLACES, resource_fits
from prefect_aether.planning._goal import Clause, Goal, read_goal
from prefect_aether.planning._leftovers import write_leftovers
from prefect_aether.planning._served import FILE_WRITE, lead_word, served
from prefect_aether.planning._wiring import Setting, Wiring
from prefect_aether.planning.base import (
    EventLog,
    PlanningCallback,
    PlanningContext,
    PlanningEvent,
    PlanResult,
    checked,
    joined,
    plannable,
)

__all__ = ["HeuristicPlanner"]

_CONTEXT_WEIGHT = 0.5
_DIRECTION_BONUS = 1.5
_COVERAGE_BONUS = 0.75
_UNAVAILABLE_FACTOR = 0.6
_UNASKED_EFFECT_FACTOR = 0.5
_FEED_BONUS = 2.0
_OWN_VERB_BONUS = 1.0
_PLACE_BONUS = 2.5
_CANNOT_WRITE_THERE = 0.6
# A clause is served by one of its best matches: the first few, at least this close to
# the best, that do what it asks (`_served`).
_SERVING_POOL = 5
_SERVING_RATIO = 0.5
_NEXT_BEST_RATIO = 0.8
# Words that point back at what the step before made ("save them", "post it").
_PRONOUNS = frozenset({"it", "them", "those", "these"})


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
        self._derived: tuple[str, Derived] | None = None

    # -- selection ------------------------------------------------------------------------

    def _catalog(self) -> Derived:
        key = self.catalog.fingerprint
        if self._derived is None or self._derived[0] != key:
            self._derived = (key, derive(self.catalog))
        return self._derived[1]

    def _choices(self, ctx: PlanningContext, goal: Goal) -> tuple[list[_Choice], list[str]]:
        """The action each clause asks for, in goal order, and the clauses (in the goal's
        words) that no action serves."""
        derived = self._catalog()
        index = self.catalog.search_index()
        # Planners never choose `aether:manual` actions.
        allowed = {s.name for s in plannable(self.catalog, ctx)}
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
            if pick is not None:
                pick = self._downstream(pick, serving, options)
            if pick is None:
                # No action does what the clause asks ("call the plumber"); a fragment ("top 5")
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
        found = index.scores(terms)
        # "save them to top.csv": "them" is what the step before returned; an action that
        # takes it whole and writes where the clause says fits, whatever its docs say.
        refers = bool(made) and bool(_PRONOUNS & set(clause.words))
        if refers and any(r.direction == "write" for r in places):
            for position, spec in enumerate(derived.specs):
                if position not in found and takes_whole(spec, made[-1:]):
                    found[position] = 0.0
        for position, base in found.items():
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
            if verb is not None and verb not in FILE_WRITE and verb in derived.verbs[position]:
                # "chart it": the action that charts, not the one that files a chart (where
                # to write is for the places the clause names to decide).
                score += _OWN_VERB_BONUS
            if made and takes_whole(spec, made):
                score += _FEED_BONUS
                if refers and takes_whole(spec, made[-1:]):
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
            # What the clause asks to do must match, or the data it names must fit well,
            # or it writes where the clause asks what the step before returns ("save
            # them to top.csv" after ranking countries).
            hands_off = bool(made) and takes_whole(spec, made[-1:])
            asked = (
                acts.get(position, 0.0) >= self.threshold * 0.5
                or shape >= _DIRECTION_BONUS
                or (
                    hands_off
                    and any(
                        r.direction == "write" and t for r, t in zip(places, takes, strict=True)
                    )
                )
            )
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

    def _available(self, ctx: PlanningContext, goal: Goal, derived: Derived) -> set[str]:
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
        derived: Derived,
    ) -> tuple[float, str, int] | None:
        """The clause's best action; if an earlier clause chose it already, a new step of
        it only when the clause brings data of its own for inputs the earlier clause
        gave too (else that data joins the earlier step: "top 5"), else the runner-up
        when close."""
        best = ranked[0]
        taken = {c.spec.name for c in chosen}
        if best[1] not in taken:
            return best
        spec = derived.specs[best[2]]
        own = [goal.resources[i] for i in clause.resources]
        fits = {s.name for r in own for s in spec.inputs if resource_fits(r, s)}
        if fits:
            earlier = [c for c in chosen if c.spec.name == best[1]][-1]
            given = {
                s.name
                for i in earlier.clause.resources
                for s in spec.inputs
                if resource_fits(goal.resources[i], s)
            }
            if fits & given:
                return best  # "translate 'a', then translate 'b'": a step each
            # "rank the customers ..., top 5": the clause only adds a value to that step.
            earlier.clause = dataclasses.replace(
                earlier.clause, resources=[*earlier.clause.resources, *clause.resources]
            )
            return None
        for candidate in ranked[1:]:
            if candidate[0] < _NEXT_BEST_RATIO * best[0]:
                break
            if candidate[1] not in taken:
                return candidate
        return None

    def _downstream(
        self,
        pick: tuple[float, str, int],
        serving: list[tuple[float, str, int]],
        options: dict[str, _Choice],
    ) -> tuple[float, str, int]:
        """A clause that names both ends of a hand-off ("load parcels.csv into the
        warehouse table") asks for the receiving end: a close runner-up that does what
        the clause asks, takes, whole, what the pick returns and matches clause words
        the pick does not. The pick then feeds it as its producer."""
        made = options[pick[1]]
        lead = lead_word(made.clause)
        for other in serving:
            if other[1] == pick[1] or other[0] < _NEXT_BEST_RATIO * pick[0]:
                continue
            choice = options[other[1]]
            more = {w for w in set(choice.matched) - set(made.matched) if len(w) > 2}
            # The receiving end does what the clause asks ("load"), besides naming more.
            does = lead is None or stem(lead) in choice.terms
            if more and does and takes_whole(choice.spec, [made.spec]):
                return other
        return pick

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
            excluded=frozenset(ctx.replan.excluded_actions if ctx.replan else ()),
        )
        builder = Wiring(setting)
        wired: list[_Choice] = []
        for choice in choices:
            if builder.only_labels(choice.clause):
                continue
            wired.append(choice)
            why = f"asked for by {_quote(choice.clause.text)}"
            if choice.matched:
                why += f" (matched {', '.join(dict.fromkeys(choice.matched))})"
            choice.step_id = builder.add(choice.spec, choice.clause, depth=0, reason=why)
        writers = plannable(self.catalog, ctx)
        unserved += write_leftovers(builder, goal, writers, unserved)
        feed_unused_outputs(builder)
        name_given_names(builder)
        # "then", "after that": order-only edges where no data already orders the two.
        for previous, choice in itertools.pairwise(wired):
            if choice.clause.follows and choice.clause is not previous.clause:
                order_after(builder, choice.step_id, previous.step_id)
        # Effects (writing, sending, changing something) happen in the order the goal
        # lists them, unless it says they are independent; computations stay concurrent.
        if not INDEPENDENT.search(ctx.goal):
            effects = [c for c in wired if has_effect(c.spec)]
            for previous, choice in itertools.pairwise(effects):
                order_after(builder, choice.step_id, previous.step_id)
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
        plan = joined(self.build(ctx), ctx)
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
