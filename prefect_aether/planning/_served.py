"""Whether an action serves a clause of the goal, or the clause asks for something no
action does ("I can't" is an answer) (private to `heuristic`).

An order to change or send something ("Email the landlord the invoice", "delete the lost
orders", "assign it to Omar"), or to infer what the data does not hold yet ("forecast
next month's prices"), is served only by an action that says it does that: the
verb, or a synonym, is in the action's name or docs ("reload" counts as "load"); a
verb of writing a file ("save", "write", "export") by any action that writes to a
place the goal names. Any other clause (a question, "show me...", "translate the
caption", "understand the emotion in it") is served by an action that said its verb
or matched another of its words: catalogs often describe what an action is ("Token
classification is...") rather than what it does.
"""

from __future__ import annotations

from collections.abc import Iterable

import snowballstemmer

from prefect_aether.catalog.words import STOPWORDS, stem
from prefect_aether.planning._goal import Clause

__all__ = ["FILE_WRITE", "lead_word", "served"]

# Words that start a question: what it asks is said by the rest of the clause.
_QUESTION = frozenset(
    "what whats what's which how who whom whose when where why does do did is are was "
    "were has have had will shall am".split()
)
# Politeness and sequencing before the verb ("please just load...", "can you load").
_FILLER = frozenset(
    "please kindly just also now then and so first finally next i we you let lets let's "
    "us me want wants need needs would like to can could should must go ahead try".split()
)
# Verbs too general to say what is wanted: the rest of the clause does.
_GENERAL = frozenset(
    stem(w)
    for w in "give get show find make do run use using take put tell list see bring "
    "provide return produce prepare build".split()
)
_STEMMER = snowballstemmer.stemmer("english")
# Orders that change or send something outside the plan: only an action that says it
# does that serves them (a near match would do something else to the world).
_EFFECTS = frozenset(
    _STEMMER.stemWord(w)
    for w in "delete erase purge wipe truncate email mail call phone text sms message tweet "
    "send upload publish post notify page assign reassign invite share deploy rollback roll "
    "revert undo restart reboot shutdown cancel approve reject pay charge refund buy order "
    "book schedule print fax register promote open close create update insert move rename "
    "grant revoke ban block unblock merge archive".split()
)
# Inferences about what is not in the data yet: only an action that says it does that
# serves them (a summary of past prices is no forecast of next month's).
_INFERENCES = frozenset(
    stem(w) for w in "forecast predict extrapolate simulate optimize optimise".split()
)
# Verbs of writing a file: any action that writes to a place serves them.
FILE_WRITE = frozenset(stem(w) for w in "write save export store dump output persist".split())


def lead_word(clause: Clause) -> str | None:
    """The word that says what the clause asks to do (its verb, for an order); None for
    a question or a clause led by a general verb."""
    for word in clause.words:
        if word in _FILLER:
            continue
        if word in _QUESTION or stem(word) in _GENERAL:
            return None
        if word in STOPWORDS or not word.isalpha():
            continue
        return word
    return None


def served(
    clause: Clause,
    doc_terms: Iterable[str],
    matched: Iterable[str],
    *,
    writes: bool,
    verbs: Iterable[str] = (),
) -> bool:
    """Whether an action does what the clause asks: its doc terms, the clause's words it
    matched, whether it writes to a place, and its own verbs (`roles.action_verbs`,
    stemmed). An order to change or send something must be one of the action's own
    verbs; mentioned elsewhere in its docs ("also drop lost parcels") is not
    enough."""
    found = list(matched)
    lead = lead_word(clause)
    if lead is None:
        return bool(found)
    verb = stem(lead)
    again = stem(lead[2:]) if lead.startswith("re") and len(lead) > 4 else None
    if _STEMMER.stemWord(lead) in _EFFECTS:
        own = set(verbs)
        return verb in own or again in own or (verb in FILE_WRITE and writes)
    terms = set(doc_terms)
    if verb in terms or again in terms:  # "reload", "recompute": the action does it again
        return True
    if verb in _INFERENCES:
        return verb in set(verbs)
    if verb in FILE_WRITE:
        return writes
    return any(w != lead for w in found)
