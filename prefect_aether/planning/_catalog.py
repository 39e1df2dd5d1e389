"""What the heuristic planner derives once per catalog version (private to `heuristic`):
the words that name data several actions take or give, each action's data words in
and out, the values a user must give it, whether it has effects, and its own verbs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from prefect_aether.catalog.registry import ActionCatalog, ActionSpec
from prefect_aether.catalog.roles import action_verbs, is_verb, writes
from prefect_aether.catalog.words import stem, tokenize
from prefect_aether.planning._fits import STRUCTURED

__all__ = ["Derived", "derive"]

_NAME_DIRECTION = re.compile(r"(?P<source>[a-z0-9]+)[_\- ]*(?:to|2)[_\- ]*(?P<target>[a-z0-9]+)")


@dataclass
class Derived:
    """What the planner derives once per catalog version."""

    specs: list[ActionSpec]
    kinds: frozenset[str]
    inputs: list[frozenset[str]]
    outputs: list[frozenset[str]]
    needs: list[frozenset[str]]
    effects: list[bool]
    verbs: list[frozenset[str]]


def derive(catalog: ActionCatalog) -> Derived:
    """Derive what the planner needs of `catalog` (the caller caches it by fingerprint)."""
    specs = catalog.search_index().specs
    slot_words: Counter[str] = Counter()
    per_action = []
    needs = []
    named: set[str] = set()
    for spec in specs:
        ins = {t for s in spec.inputs if s.required for t in tokenize(s.name)}
        outs = {t for s in spec.outputs for t in tokenize(s.name)}
        # `text_to_audio`, `csv2json`: the name says what goes in and what comes out.
        direction = _NAME_DIRECTION.fullmatch(spec.name.lower())
        # `post_to_chat`, `copy_to_archive`: a verb and a place, not data.
        if direction and not is_verb(direction["source"]):
            source, target = tokenize(direction["source"]), tokenize(direction["target"])
            ins.update(source)
            outs.update(target)
            named.update(source + target)
        per_action.append((frozenset(ins), frozenset(outs)))
        # Values a user gives (not structured data, which a producer step makes).
        needs.append(
            frozenset(
                t
                for s in spec.inputs
                if s.required and s.type not in STRUCTURED
                for t in tokenize(s.name)
            )
        )
        slot_words.update(ins | outs)
    # Words that name data several actions take or give ("image", "records"): they
    # say what a clause is about, not what it asks to do.
    kinds = frozenset(w for w, n in slot_words.items() if n >= 2) | named
    return Derived(
        specs=specs,
        kinds=kinds,
        inputs=[ins & kinds for ins, _ in per_action],
        outputs=[outs & kinds for _, outs in per_action],
        needs=[n & kinds for n in needs],
        effects=[writes(spec.inputs) for spec in specs],
        verbs=[
            frozenset(stem(v) for v in action_verbs(spec.name, spec.description)) for spec in specs
        ],
    )
