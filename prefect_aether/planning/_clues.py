"""What a goal's words say beyond matching an action (private to `heuristic`): data
words said as a result ("into text") or a source ("from the image"), whether the goal
wants its effects in order or independent, what an action does to the world, and
whether it takes, whole, what an earlier step returns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from prefect_aether.catalog.registry import ActionSpec
from prefect_aether.catalog.roles import writes
from prefect_aether.catalog.specs import same_structure
from prefect_aether.catalog.words import STOPWORDS, stem
from prefect_aether.planning._fits import STRUCTURED
from prefect_aether.planning._goal import Clause

__all__ = ["INDEPENDENT", "cues", "has_effect", "takes_whole"]

_TO = frozenset({"to", "into", "as", "in to"})
_FROM = frozenset({"from", "in", "on", "within", "inside", "about", "based"})
_SKIP = frozenset(
    {"a", "an", "the", "this", "that", "my", "your", "our", "its", "their", "some", "new"}
    | {"another", "additional", "given", "provided", "following", "resulting", "generated"}
)
_MAKE = frozenset(stem(w) for w in ("generate", "draw", "render", "get", "output", "return"))


INDEPENDENT = re.compile(
    r"\b(?:in parallel|at the same time|simultaneously|concurrently|meanwhile|"
    r"separately|independently|in any order)\b",
    re.I,
)


def takes_whole(spec: ActionSpec, made: Sequence[ActionSpec]) -> bool:
    """Whether every structured input `spec` requires is what one of `made` returns."""
    data = [s for s in spec.inputs if s.required and s.type in STRUCTURED]
    returns = [m.returns for m in made if m.returns is not None]
    return bool(data) and all(any(same_structure(r, s) for r in returns) for s in data)


def has_effect(spec: ActionSpec) -> bool:
    """An action run for what it does to the world: it writes to a place, or returns
    nothing."""
    return writes(spec.inputs) or spec.returns is None


def cues(clause: Clause, kinds: frozenset[str]) -> tuple[set[str], set[str]]:
    """Data words of a clause said as a result ("into text", "generate an image") and as
    a source ("from the image", "in the audio")."""
    to_kinds: set[str] = set()
    from_kinds: set[str] = set()
    for i, word in enumerate(clause.words):
        kind = stem(word)
        if kind not in kinds or word in STOPWORDS:
            continue
        j, skipped = i - 1, 0
        while j >= 0 and clause.words[j] in _SKIP and skipped < 3:
            j, skipped = j - 1, skipped + 1
        before = clause.words[j] if j >= 0 else ""
        if before in _TO or stem(before) in _MAKE:
            to_kinds.add(kind)
        elif before in _FROM:
            from_kinds.add(kind)
    return to_kinds, from_kinds
