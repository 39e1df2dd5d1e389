"""BM25 ranking over action specs (private).

Each action is one document with weighted fields: name tokens count three
times, tags twice, the description and slot names once, slot descriptions
(parameter and return docs) half; a bonus is added for covering the action's
name. Words are matched by `words` (Snowball stems folded into synonym
groups); a query word also meets a document word it is a derivation of
("class" and "classification") at a lower weight.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prefect_aether.catalog.words import prefix_match, tokenize

if TYPE_CHECKING:
    from prefect_aether.catalog.specs import ActionSpec

__all__ = ["SearchIndex", "tokenize"]

_K1 = 1.2
_B = 0.75
_NAME_WEIGHT = 3.0
_TAG_WEIGHT = 2.0
_SLOT_DESCRIPTION_WEIGHT = 0.5
_DERIVATION_WEIGHT = 0.6
# Added to the BM25 score in proportion to how much of the action's name the query
# covers: "revenue by region" should pick revenue_by_region over an action whose
# description merely mentions revenue, however long that description is.
_NAME_COVERAGE_BONUS = 2.0


def _document(spec: ActionSpec) -> Counter[str]:
    terms: Counter[str] = Counter()

    def add(text: str | None, weight: float) -> None:
        for token in tokenize(text or ""):
            terms[token] += weight  # type: ignore[assignment]

    add(spec.name, _NAME_WEIGHT)
    for tag in spec.tags:
        add(tag, _TAG_WEIGHT)
    add(spec.description, 1.0)
    for slot in (*spec.inputs, *spec.outputs):
        add(slot.name, 1.0)
        add(slot.description, _SLOT_DESCRIPTION_WEIGHT)
    return terms


class SearchIndex:
    """An immutable BM25 index over a sequence of specs."""

    def __init__(self, specs: Sequence[ActionSpec]) -> None:
        self._specs = list(specs)
        docs = [_document(s) for s in self._specs]
        self._names = [frozenset(tokenize(s.name)) for s in self._specs]
        lengths = [sum(d.values()) for d in docs]
        avg_length = (sum(lengths) / len(lengths)) if docs else 0.0
        frequency: Counter[str] = Counter()
        for doc in docs:
            frequency.update(doc.keys())
        n = len(docs)
        self._idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in frequency.items()}
        self._vocabulary = sorted(self._idf)
        self._by_prefix: dict[str, list[str]] = {}
        for term in self._vocabulary:
            self._by_prefix.setdefault(term[:4], []).append(term)
        self._expansions: dict[str, list[tuple[str, float]]] = {}
        # Each spec's place in name order: ties in `rank` go by name.
        by_name = sorted(range(len(self._specs)), key=lambda p: self._specs[p].name)
        self._name_order = [0] * len(self._specs)
        for place, position in enumerate(by_name):
            self._name_order[position] = place
        norms = [
            _K1 * (1 - _B + _B * length / avg_length) if avg_length else _K1 for length in lengths
        ]
        # Term -> (position, BM25 weight of the term in that spec) of each spec that holds
        # it: a query touches only the specs of its terms, a term at a time.
        self._postings: dict[str, list[tuple[int, float]]] = {}
        # Term -> positions of the specs whose name holds it (the name coverage bonus).
        self._in_names: dict[str, list[int]] = {}
        for position, doc in enumerate(docs):
            for term, tf in doc.items():
                weight = self._idf[term] * tf * (_K1 + 1) / (tf + norms[position])
                self._postings.setdefault(term, []).append((position, weight))
            for term in self._names[position]:
                self._in_names.setdefault(term, []).append(position)

    @property
    def vocabulary(self) -> list[str]:
        """Every term of the index (word stems of the actions' names and docs), sorted."""
        return self._vocabulary

    @property
    def specs(self) -> list[ActionSpec]:
        """The indexed specs; positions in `scores` refer to this list."""
        return self._specs

    def _expand(self, term: str) -> list[tuple[str, float]]:
        """The index terms `term` meets, with their weights (itself at 1)."""
        known = self._expansions.get(term)
        if known is None:
            known = [(term, 1.0)] if term in self._idf else []
            known += [
                (other, _DERIVATION_WEIGHT)
                for other in self._by_prefix.get(term[:4], ())
                if prefix_match(term, other)
            ]
            self._expansions[term] = known
        return known

    def weights(self, query: str | Iterable[str]) -> dict[str, float]:
        """Index terms of a query (text or tokens) with their weights, in sorted order."""
        tokens = tokenize(query) if isinstance(query, str) else list(query)
        found: dict[str, float] = {}
        for token in sorted(set(tokens)):
            for term, weight in self._expand(token):
                found[term] = max(found.get(term, 0.0), weight)
        return dict(sorted(found.items()))

    def scores(self, terms: dict[str, float]) -> dict[int, float]:
        """Positive BM25 scores (plus the name coverage bonus) by spec position, ascending,
        summed a term at a time over the specs that hold a term."""
        covered: dict[int, float] = {}
        for term, weight in terms.items():
            for position in self._in_names.get(term, ()):
                covered[position] = covered.get(position, 0.0) + weight
        names = self._names
        found = {
            position: _NAME_COVERAGE_BONUS * total / len(names[position])
            for position, total in covered.items()
        }
        for term, weight in terms.items():
            for position, value in self._postings.get(term, ()):
                found[position] = found.get(position, 0.0) + weight * value
        return {p: s for p in sorted(found) if (s := round(found[p], 9)) > 0}

    def rank(
        self, query: str | Iterable[str], k: int, allowed: Iterable[str] | None = None
    ) -> list[tuple[ActionSpec, float]]:
        """The best `k` specs with a positive score, best first; ties by name."""
        terms = self.weights(query)
        allowed_names = set(allowed) if allowed is not None else None
        specs, order = self._specs, self._name_order
        scored = [
            (-score, order[position], position)
            for position, score in self.scores(terms).items()
            if allowed_names is None or specs[position].name in allowed_names
        ]
        return [
            (specs[position], -negative) for negative, _, position in heapq.nsmallest(k, scored)
        ]
