"""Which actions an LLM planner is shown for a goal (private to `llm_planner`).

An action left out can never be planned, and real requests name what they want
in other words and leave intermediate steps unsaid. So the set is built from
several sources, each cheap, in this order (a small budget keeps the first):

1. actions the goal names, and the actions of the heuristic planner's draft;
2. for each file the goal gives of a known media type (`talk.wav` is audio), the
   actions with a required input of that media (`audio`), best matches first;
3. the best BM25 matches of the whole goal (its own words and its files' names;
   quoted text is data) and of each of its clauses (the same word matching as the
   heuristic planner and `ActionCatalog.search`: Snowball stems, synonyms,
   derivations), fused by rank: those next to what 1 and 2 found in the type graph
   (a plan is one connected flow of data) before the others, and the producers of
   what the draft's steps take between the two;
4. the type graph, both ways and two hops out: for what was found, the producers
   of its required inputs and the consumers of its outputs (same name, compatible
   schema), the ones the goal speaks of most first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from prefect_aether.catalog.registry import ActionCatalog, ActionSpec, IOSlot
from prefect_aether.catalog.schemas import compatible
from prefect_aether.catalog.words import tokenize, words
from prefect_aether.planning._goal import Goal, read_goal

__all__ = ["Retriever"]

_PER_CLAUSE = 3
_PER_SLOT = 2
_PER_MEDIA = 3
_HOPS = 2
# Media of a goal's file (its MIME type's major part) that say which action reads it;
# "text" says too little (most actions take some text).
_READ_MEDIA = frozenset({"image", "audio", "video"})


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
        read = read_goal(goal)
        relevance = self._relevance(read, goal, pool)
        chosen: dict[str, ActionSpec] = {}

        def add(names: Iterable[str]) -> None:
            for name in names:
                if name in pool and name not in chosen:
                    chosen[name] = pool[name]

        def best(names: Iterable[str]) -> list[str]:
            return sorted(names, key=lambda n: (-relevance.get(n, 0.0), n))

        add(must)
        add(name for name in pool if _names(name, goal))
        for resource in read.resources:
            if resource.media in _READ_MEDIA and resource.direction != "write":
                media = resource.media
                add(
                    best(
                        name
                        for name, spec in pool.items()
                        if any(s.required and media in words(s.name) for s in spec.inputs)
                    )[:_PER_MEDIA]
                )
        fused = self._fused(read, relevance, pool, top_k)
        near = self._near(list(chosen.values()), pool)
        add(n for n in fused if n in near)
        drafted = [pool[n] for n in must if n in pool]
        self._expand(drafted, chosen, pool, relevance, set(given), hops=1, consumers=False)
        add(fused)
        self._expand(list(chosen.values()), chosen, pool, relevance, set(given))
        return list(chosen.values())

    def _relevance(self, read: Goal, goal: str, pool: dict[str, ActionSpec]) -> dict[str, float]:
        """BM25 scores of the actions for the goal's own words and its files' names
        ("invoices.csv" says invoices); quoted text is data, not what to do."""
        index = self.catalog.search_index()
        files = [
            token
            for r in read.resources
            if r.kind in ("file", "url")
            for token in tokenize(PurePosixPath(r.value).name)
        ]
        return {
            index.specs[p].name: score
            for p, score in index.scores(index.weights([*read.tokens, *files] or goal)).items()
            if index.specs[p].name in pool
        }

    def _fused(
        self, read: Goal, relevance: dict[str, float], pool: dict[str, ActionSpec], top_k: int
    ) -> list[str]:
        """The whole goal's `top_k` best matches and each clause's, fused by rank (the
        sum of 1 / rank): a clause's best match comes before the goal's tenth, since a
        clause says one thing to do."""
        index = self.catalog.search_index()
        rankings = [sorted(relevance, key=lambda n: (-relevance[n], n))[:top_k]]
        for clause in read.clauses:
            if clause.context or not clause.tokens:
                continue
            scores = index.scores(index.weights(clause.tokens))
            ranked = sorted(
                (-score, index.specs[p].name)
                for p, score in scores.items()
                if index.specs[p].name in pool
            )
            rankings.append([name for _, name in ranked[:_PER_CLAUSE]])
        fused: dict[str, float] = {}
        for ranking in rankings:
            for rank, name in enumerate(ranking, 1):
                fused[name] = fused.get(name, 0.0) + 1.0 / rank
        return sorted(fused, key=lambda n: (-fused[n], n))

    def _near(self, specs: list[ActionSpec], pool: dict[str, ActionSpec]) -> set[str]:
        """The actions that take what `specs` make or make what they take."""
        graph = self.graph()
        found: set[str] = set()
        for spec in specs:
            for slot in spec.inputs:
                found.update(s.name for s, _ in graph.makers.get(slot.name, []) if s.name in pool)
            for out in spec.outputs:
                found.update(s.name for s, _ in graph.takers.get(out.name, []) if s.name in pool)
        return found

    def _expand(
        self,
        frontier: list[ActionSpec],
        chosen: dict[str, ActionSpec],
        pool: dict[str, ActionSpec],
        relevance: dict[str, float],
        given: set[str],
        *,
        hops: int = _HOPS,
        consumers: bool = True,
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

        for _ in range(hops):
            added: list[ActionSpec] = []
            for spec in frontier:
                for slot in spec.inputs:
                    if slot.required and slot.name not in given:
                        for name in best(graph.makers.get(slot.name, []), slot, out=False):
                            chosen[name] = pool[name]
                            added.append(pool[name])
                for out in spec.outputs if consumers else ():
                    for name in best(graph.takers.get(out.name, []), out, out=True):
                        chosen[name] = pool[name]
                        added.append(pool[name])
            frontier = added


def _names(action: str, goal: str) -> bool:
    """Whether the goal names the action (`load_sales` or "load sales", any case)."""
    text = goal.lower()
    return action.lower() in text or action.lower().replace("_", " ").replace("-", " ") in text
