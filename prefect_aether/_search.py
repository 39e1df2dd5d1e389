"""BM25 ranking over action specs (private).

Each action is one document with weighted fields: name tokens count three
times, tags twice, the description and slot names once, slot descriptions
half; a bonus is added for covering the action's name. Tokens split
snake_case, kebab-case and camelCase, are lower-cased and lightly stemmed so
"loads", "loading" and "load" meet.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect_aether.catalog import ActionSpec

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    """a an and are as at be by for from in into is it its of on or that the then this
    to with using use via my our your all each""".split()
)
_K1 = 1.2
_B = 0.75
_NAME_WEIGHT = 3.0
_TAG_WEIGHT = 2.0
_SLOT_DESCRIPTION_WEIGHT = 0.5
# Added to the BM25 score in proportion to how much of the action's name the query
# covers: "revenue by region" should pick revenue_by_region over an action whose
# description merely mentions revenue, however long that description is.
_NAME_COVERAGE_BONUS = 2.0


def stem(word: str) -> str:
    """A light suffix stripper; the same on queries and documents, so it need not be linguistic."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed word tokens of `text`, without stop words.

    >>> tokenize("loadCSVFile and clean_rows-now")
    ['load', 'csv', 'file', 'clean', 'row', 'now']
    """
    spaced = _CAMEL.sub(" ", text)
    return [stem(w) for w in _WORD.findall(spaced.lower()) if w not in _STOPWORDS]


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

    def rank(
        self, query: str, k: int, allowed: Iterable[str] | None = None
    ) -> list[tuple[ActionSpec, float]]:
        """The best `k` specs with a positive score, best first; ties by name."""
        terms = set(tokenize(query))
        allowed_names = set(allowed) if allowed is not None else None
        scored = []
        rows = zip(self._specs, self._docs, self._lengths, self._names, strict=True)
        for spec, doc, length, name in rows:
            if allowed_names is not None and spec.name not in allowed_names:
                continue
            score = _NAME_COVERAGE_BONUS * len(terms & name) / len(name) if name else 0.0
            norm = _K1 * (1 - _B + _B * length / self._avg_length) if self._avg_length else _K1
            for term in terms & doc.keys():
                tf = doc[term]
                score += self._idf[term] * tf * (_K1 + 1) / (tf + norm)
            if score > 0:
                scored.append((spec, score))
        scored.sort(key=lambda pair: (-pair[1], pair[0].name))
        return scored[:k]
