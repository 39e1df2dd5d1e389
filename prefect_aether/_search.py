"""BM25 ranking over action specs (private).

Each action is one document with weighted fields: name tokens count three
times, tags twice, the description and slot names once, slot descriptions
(parameter and return docs) half; a bonus is added for covering the action's
name. Words are matched by `_words` (Snowball stems folded into synonym
groups); a query word also meets a document word it is a derivation of
("class" and "classification") at a lower weight.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prefect_aether._words import prefix_match, tokenize

if TYPE_CHECKING:
    from prefect_aether.catalog import ActionSpec

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
        self._docs = [_document(s) for s in self._specs]
        self._names = [frozenset(tokenize(s.name)) for s in self._specs]
        self._lengths = [sum(d.values()) for d in self._docs]
        self._avg_length = (sum(self._lengths) / len(self._lengths)) if self._docs else 0.0
        frequency: Counter[str] = Counter()
        for doc in self._docs:
            frequency.update(doc.keys())
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in frequency.items()}
        self._vocabulary = sorted(self._idf)
        self._by_prefix: dict[str, list[str]] = {}
        for term in self._vocabulary:
            self._by_prefix.setdefault(term[:4], []).append(term)
        self._expansions: dict[str, list[tuple[str, float]]] = {}
        self._postings: dict[str, list[int]] = {}
        for position, doc in enumerate(self._docs):
            for term in doc:
                self._postings.setdefault(term, []).append(position)

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

    def score(self, position: int, terms: dict[str, float]) -> float:
        """BM25 of the spec at `position` for weighted `terms` (from `weights`)."""
        doc, length = self._docs[position], self._lengths[position]
        name = self._names[position]
        score = (
            _NAME_COVERAGE_BONUS * sum(w for t, w in terms.items() if t in name) / len(name)
            if name
            else 0.0
        )
        norm = _K1 * (1 - _B + _B * length / self._avg_length) if self._avg_length else _K1
        for term, weight in terms.items():
            tf = doc.get(term)
            if tf:
                score += weight * self._idf[term] * tf * (_K1 + 1) / (tf + norm)
        return score

    def scores(self, terms: dict[str, float]) -> dict[int, float]:
        """Positive scores by spec position, touching only specs that hold a term."""
        candidates = sorted({p for term in terms for p in self._postings.get(term, ())})
        found = {p: round(self.score(p, terms), 9) for p in candidates}
        return {p: s for p, s in found.items() if s > 0}

    def rank(
        self, query: str | Iterable[str], k: int, allowed: Iterable[str] | None = None
    ) -> list[tuple[ActionSpec, float]]:
        """The best `k` specs with a positive score, best first; ties by name."""
        terms = self.weights(query)
        allowed_names = set(allowed) if allowed is not None else None
        scored = []
        for position, score in self.scores(terms).items():
            spec = self._specs[position]
            if allowed_names is None or spec.name in allowed_names:
                scored.append((spec, score))
        scored.sort(key=lambda pair: (-pair[1], pair[0].name))
        return scored[:k]
