"""Which actions an LLM planner is shown for a goal (private to `llm_planner`).

An action left out can never be planned, and real requests name what they want
in other words and leave intermediate steps unsaid. So the set is built from
several sources, each cheap:

1. actions the goal names, and the actions of the heuristic planner's draft;
2. the best BM25 matches of the whole goal and of each of its clauses (the same
   word matching as the heuristic planner and `ActionCatalog.search`: Snowball
   stems, synonyms, derivations);
3. the type graph, both ways and two hops out: for what was found, the producers
   of its required inputs and the consumers of its outputs (same name, compatible
   schema), the ones the goal speaks of most first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prefect_aether.catalog.registry import ActionCatalog, ActionSpec, IOSlot
from prefect_aether.catalog.schemas import compatible
from prefect_aether.planning._goal import read_goal

__all__ = ["Retriever"]

_PER_CLAUSE = 3
_PER_SLOT = 2
_HOPS = 2


@dataclass(frozen=True)
class _Graph:
    """Who makes and who takes each slot name, built once per catalog version."""

    makers: dict[str, list[tuple[ActionSpec, IOSlot]]]
    takers: dict[str, list[tuple[ActionSpec, IOSlot]]]


class Retriever:
    """`select(goal, ...)`: the actions to show for a goal over one catalog."""

    def __init__(self, catalog: ActionCatalog) -> None:
        self.catalog = catalog
        self._graph: tuple[str, _Graph] | None = None

    def graph(self) -> _Graph:
        key = self.catalog.fingerprint
        if self._graph is None or self._graph[0] != key:
            makers: dict[str, list[tuple[ActionSpec, IOSlot]]] = {}
            takers: dict[str, list[tuple[ActionSpec, IOSlot]]] = {}
            for spec in self.catalog:
                for out in spec.outputs:
                    makers.setdefault(out.name, []).append((spec, out))
                for slot in spec.inputs:
                    if slot.required:
                        takers.setdefault(slot.name, []).append((spec, slot))
            self._graph = (key, _Graph(makers, takers))
        return self._graph[1]

    def select(
        self,
        goal: str,
        *,
        top_k: int,
        allowed: Iterable[ActionSpec],
        given: Iterable[str] = (),
        must: Sequence[str] = (),
    ) -> list[ActionSpec]:
        """The actions to show, in the order they were found.

        Args:
            goal: The request.
            top_k: How many best matches of the whole goal to keep.
            allowed: The actions the caller may use (nothing else is returned).
            given: User input names (their producers are not needed).
            must: Action names always included (the draft's), when allowed.
        """
        pool = {spec.name: spec for spec in allowed}
        index = self.catalog.search_index()
        relevance = {
            index.specs[p].name: score
            for p, score in index.scores(index.weights(goal)).items()
            if index.specs[p].name in pool
        }
        chosen: dict[str, ActionSpec] = {}

        def add(names: Iterable[str]) -> list[ActionSpec]:
            added = []
            for name in names:
                if name in pool and name not in chosen:
                    chosen[name] = pool[name]
                    added.append(pool[name])
            return added

        add(must)
        add(name for name in pool if _names(name, goal))
        add(sorted(relevance, key=lambda n: (-relevance[n], n))[:top_k])
        for clause in read_goal(goal).clauses:
            if clause.context or not clause.tokens:
                continue
            scores = index.scores(index.weights(clause.tokens))
            ranked = sorted(
                (-score, index.specs[p].name)
                for p, score in scores.items()
                if index.specs[p].name in pool
            )
            add(name for _, name in ranked[:_PER_CLAUSE])
        self._expand(list(chosen.values()), chosen, pool, relevance, set(given))
        return list(chosen.values())

    def _expand(
        self,
        frontier: list[ActionSpec],
        chosen: dict[str, ActionSpec],
        pool: dict[str, ActionSpec],
        relevance: dict[str, float],
        given: set[str],
    ) -> None:
        graph = self.graph()

        def best(pairs: list[tuple[ActionSpec, IOSlot]], slot: IOSlot, out: bool) -> list[str]:
            fit = [
                spec.name
                for spec, other in pairs
                if spec.name in pool
                and spec.name not in chosen
                and (
                    compatible(slot.json_schema, other.json_schema)
                    if out
                    else compatible(other.json_schema, slot.json_schema)
                )
            ]
            return sorted(set(fit), key=lambda n: (-relevance.get(n, 0.0), n))[:_PER_SLOT]

        for _ in range(_HOPS):
            added: list[ActionSpec] = []
            for spec in frontier:
                for slot in spec.inputs:
                    if slot.required and slot.name not in given:
                        for name in best(graph.makers.get(slot.name, []), slot, out=False):
                            chosen[name] = pool[name]
                            added.append(pool[name])
                for out in spec.outputs:
                    for name in best(graph.takers.get(out.name, []), out, out=True):
                        chosen[name] = pool[name]
                        added.append(pool[name])
            frontier = added


def _names(action: str, goal: str) -> bool:
    """Whether the goal names the action (`load_sales` or "load sales", any case)."""
    text = goal.lower()
    return action.lower() in text or action.lower().replace("_", " ").replace("-", " ") in text
