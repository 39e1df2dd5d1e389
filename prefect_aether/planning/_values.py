"""Bare values in a goal: the names it gives without quotes ("check **boiler** status",
"promote **parcels-v2** to production"), codes written in capitals ("reprice in
**GBP**", "**FR** shipments"), and separators said in words ("pipe-delimited")
(private to `_wiring`).

A word of a clause is a bare value when the catalog never uses it (it is not in any
action's name or docs), it is not an everyday English word, and nothing else in the
plan took it. Such a word names a thing of the user's world (a service, a model
version, a table), so it goes to a text input nobody else gives a value to, instead of
asking the user again for what the goal already says.
"""

from __future__ import annotations

import itertools
import mimetypes
import re
from collections.abc import Collection, Iterable

from prefect_aether.catalog.words import STOPWORDS, stem, tokenize
from prefect_aether.planning._goal import Clause

__all__ = [
    "asks_for",
    "bare_values",
    "code_value",
    "is_name_like",
    "named_separator",
    "named_value",
]

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
    """A token written as an identifier: letters with `-` or `_` and more ("parcels-v2",
    "parcels_raw"), or letters with digits ("p95" is not: it is too short)."""
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
    parcels_raw", "with seed 7" is a number and left to numbers): the word after it,
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


_CODE = re.compile(r"(?<![\w\-.])[A-Z]{2,6}(?![\w\-.])")
# Capitals that name a format, a protocol or a kind of thing, never a value.
_NOT_CODES = frozenset(
    """API APIS CLI CPU GPU DB SQL ETL FTP SFTP SSH HTTP HTTPS URL URI ID IDS UI UX OK ML AI
    LLM KPI KPIS PR CI CD QA ASAP FYI ETA TODO PDF CSV TSV JSON XML YAML HTML""".split()
)


def _codes(text: str) -> list[str]:
    """Codes written in capitals (a currency, a region, a country), formats aside."""
    return [
        c
        for c in _CODE.findall(text)
        if c not in _NOT_CODES and mimetypes.guess_type(f"x.{c.lower()}", strict=False)[0] is None
    ]


def code_value(
    slot_name: str, description: str | None, clause: Clause, taken: Iterable[str] = ()
) -> str | None:
    """A code the clause writes in capitals ("in GBP", "FR shipments") for a text input
    that takes one: its docs give a code as an example ("a region code such as
    ``FR``"), or say the clause's own words ("Currency to price in" for "reprice the
    shipments in GBP")."""
    used = set(taken)
    found = [c for c in _codes(clause.text) if c not in used]
    if not found:
        return None
    if _codes(description or ""):
        return found[0]
    said = set(clause.tokens) - {stem(c.lower()) for c in found}
    return found[0] if said & set(tokenize(f"{slot_name} {description or ''}")) else None


_SEPARATORS = {
    "comma": ",",
    "semicolon": ";",
    "tab": "\t",
    "pipe": "|",
    "colon": ":",
    "space": " ",
    "whitespace": " ",
}
_SAID_SEPARATOR = re.compile(
    r"\b(?P<a>comma|semicolon|tab|pipe|colon|space|whitespace)s?[\s-]*"
    r"(?:separated|delimited|separator|delimiter)\b|"
    r"\b(?:separated|delimited)\s+(?:by|with)\s+(?:an?\s+|the\s+)?"
    r"(?P<b>comma|semicolon|tab|pipe|colon|space|whitespace)s?\b",
    re.I,
)
_SEPARATOR_INPUT = frozenset(stem(w) for w in ("delimiter", "separator", "sep", "delim"))


def named_separator(slot_name: str, description: str | None, goal_text: str) -> str | None:
    """The field separator the goal names in words ("pipe-delimited", "separated by
    tabs") for an input that takes one (its name or docs say delimiter or separator)."""
    if not set(tokenize(f"{slot_name} {description or ''}")) & _SEPARATOR_INPUT:
        return None
    match = _SAID_SEPARATOR.search(goal_text)
    return None if match is None else _SEPARATORS[(match["a"] or match["b"]).lower()]


# Words before a thing the user means but does not name ("the shipments of a single country").
_UNNAMED = frozenset("a an one single specific particular given certain chosen".split())


def asks_for(slot_name: str, clause: Clause) -> bool:
    """Whether the clause asks for a value of this input without giving it: it says the
    input's name after "a", "one", "a single", "a given"... ("filter the orders down to
    a single country" asks which country)."""
    name = [stem(w) for w in re.split(r"[_\-\s]+", slot_name.lower()) if w]
    spoken = clause.said.lower().split()  # values included: "a 99.9% SLO" gives the SLO
    said = [stem(w.strip(",.;:!?")) for w in spoken]
    for at in range(1, len(said) - len(name) + 1):
        if said[at : at + len(name)] == name and set(spoken[max(0, at - 2) : at]) & _UNNAMED:
            return True
    return False


_NAMING = frozenset({"as", "named", "called"})


def given_names(clause: Clause) -> list[str]:
    """Names the clause gives something, written as identifiers right after "as",
    "named" or "called" ("archive it as delay-q3")."""
    tokens = _TOKEN.findall(clause.text)
    return [
        token
        for before, token in itertools.pairwise(tokens)
        if before.lower() in _NAMING and is_name_like(token)
    ]
