"""Bare values in a goal: the names it gives without quotes ("check **payments** health",
"promote **iris-clf-v1** to production") (private to `_wiring`).

A word of a clause is a bare value when the catalog never uses it (it is not in any
action's name or docs), it is not an everyday English word, and nothing else in the
plan took it. Such a word names a thing of the user's world (a service, a model
version, a table), so it goes to a text input nobody else gives a value to, instead of
asking the user again for what the goal already says.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from prefect_aether.catalog.words import STOPWORDS, stem
from prefect_aether.planning._goal import Clause

__all__ = ["bare_values", "is_name_like", "named_value"]

_TOKEN = re.compile(r"[A-Za-z0-9](?:[\w\-]*[A-Za-z0-9])?")
# Everyday words a goal uses around its values, never values themselves.
_COMMON = frozenset(
    """down up out off over under back again away single one two three both all each every
    current latest last next first second new old fresh recent whole full entire same
    other another most least top bottom best worst big small large left right today
    yesterday tomorrow now then data file files result results thing things something
    anything everything nothing way ways time times please thanks ok okay quickly soon
    later once twice just still even also only really actually maybe perhaps sure yes
    given folder folders directory dir path paths page pages list copy copies version
    versions report reports summary summaries table tables record records""".split()
)
# Words after which a value usually comes ("for payments", "of checkout").
_BEFORE_VALUE = frozenset({"for", "of", "on", "named", "called", "service", "model", "table"})


def is_name_like(token: str) -> bool:
    """A token written as an identifier: letters with `-` or `_` and more ("iris-clf-v1",
    "orders_raw"), or letters with digits ("p95" is not: it is too short)."""
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)+", token)) or bool(
        re.fullmatch(r"[A-Za-z]+[0-9][A-Za-z0-9]*", token) and len(token) > 4
    )


def bare_values(
    clause: Clause, vocabulary: Collection[str], taken: Iterable[str] = ()
) -> list[str]:
    """The clause's bare values, most likely first (one right after "for", "of"...)."""
    used = {t.lower() for t in taken}
    tokens = list(_TOKEN.findall(clause.text))  # the masked text: no quotes, files, channels
    found: list[tuple[int, int, str]] = []
    lead_seen = False
    for position, token in enumerate(tokens):
        word = token.lower().removesuffix("'s")
        if not lead_seen and word.isalpha() and word not in STOPWORDS:
            lead_seen = True  # the clause's verb ("restart", "check") is no value
            continue
        if (
            len(word) < 3
            or word in STOPWORDS
            or word in _COMMON
            or word.isdigit()
            or word in used
            or (not is_name_like(token) and stem(word) in vocabulary)
        ):
            continue
        after = tokens[position - 1].lower() in _BEFORE_VALUE if position else False
        found.append((0 if after else 1, position, token))
    return [token for _, _, token in sorted(found)]


def named_value(slot: str, clause: Clause, vocabulary: Collection[str]) -> str | None:
    """A value the clause gives right after the input's own name ("into the table
    orders_raw", "with seed 7" is a number and left to numbers): the word after it,
    when it is no everyday word and the catalog does not use it."""
    names = {w.lower() for w in re.split(r"[_\-\s]+", slot) if w}
    tokens = _TOKEN.findall(clause.text)
    for position, token in enumerate(tokens[:-1]):
        if token.lower() not in names:
            continue
        value: str = tokens[position + 1]
        word = value.lower()
        if (
            word in STOPWORDS
            or word in _COMMON
            or word.isdigit()
            or (not is_name_like(value) and stem(word) in vocabulary)
        ):
            continue
        return value
    return None
