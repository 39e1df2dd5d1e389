"""Read and write roles of action inputs: whether a slot names something the flow reads
(`"read"`) or writes, sends to or changes (`"write"`).

A role matters for inputs that name a *location*: a file or folder, a URL, a database
or table, a channel. Planners bind a file the goal reads only to a read slot and one
it writes only to a write slot, and the validator refuses a plan that writes where
another step reads (`write_conflict`).

Where a role comes from, strongest first:

1. the operator at registration: `ActionCatalog.register(flow, roles={"dest": "write"})`,
   `ActionCatalog(roles={"action": {"param": "write"}})`, `CatalogSource(roles=...)`;
2. the flow's author, in the signature: `dest: Annotated[Path, Writes]` (or `Reads`);
3. inference from the parameter's name (`output_path`, `dest`, `source`, `input_file`),
   its description ("File to write"), and the flow's verbs (its name's first word and
   the verbs of its summary: `save_report(report_path)` writes, `fetch_model(registry)`
   reads). A location slot of a flow that says nothing of writing is read.

Examples:
    >>> infer_role("output_path", {"type": "string"}, None, "export", "Save a summary.")
    'write'
    >>> infer_role("source", {"type": "string"}, None, "extract", "Read orders from a CSV.")
    'read'
    >>> infer_role("limit", {"type": "integer"}, None, "extract", "Read orders.") is None
    True
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

import snowballstemmer

from prefect_aether.exceptions import CatalogError

__all__ = [
    "READ",
    "ROLES",
    "WRITE",
    "Reads",
    "Role",
    "RoleMarker",
    "Writes",
    "action_verbs",
    "infer_role",
    "is_location",
    "is_verb",
    "marked_role",
    "says_write",
    "with_roles",
    "writes",
]

Role = Literal["read", "write"]
READ: Role = "read"
WRITE: Role = "write"
ROLES: frozenset[str] = frozenset({READ, WRITE})


@dataclass(frozen=True)
class RoleMarker:
    """Marks a parameter's role in its annotation: `Annotated[Path, Writes]`.

    Examples:
        >>> from pathlib import Path
        >>> from typing import Annotated
        >>> from prefect_aether import Reads, Writes
        >>> marked_role(Annotated[Path, Writes]), marked_role(Annotated[str, Reads] | None)
        ('write', 'read')
    """

    role: Role

    def __repr__(self) -> str:
        return "Writes" if self.role == WRITE else "Reads"


Reads = RoleMarker(READ)
"""`Annotated[str, Reads]`: the parameter names something the flow reads."""
Writes = RoleMarker(WRITE)
"""`Annotated[Path, Writes]`: the parameter names something the flow writes or changes."""

_STEMMER = snowballstemmer.stemmer("english")


def _stems(words: Iterable[str]) -> set[str]:
    return {_STEMMER.stemWord(w) for w in words}


# What names a location (files, folders, URLs, stores, channels).
_LOCATION = _stems(
    "path file filename dir directory folder url uri endpoint webhook db database table "
    "channel dest destination output out source src bucket sink location topic queue "
    "registry repo repository outbox inbox".split()
)
# Parameter name words that say which way the data goes.
_WRITE_NAMES = _stems("out output dest destination target sink save export".split())
_READ_NAMES = _stems("source src input in from".split())
# Verbs of flows that write, send to or change what a location names.
_WRITE_VERBS = _stems(
    "write save export store dump upload publish post send notify push persist append log "
    "register promote update replace insert upsert delete remove create open close move "
    "put emit record archive overwrite deploy submit commit truncate drop alert".split()
)
_READ_VERBS = _stems("read load extract fetch get import parse scan ingest download".split())
# A description that says the slot is written ("File to write", "where ... goes").
_WRITE_DOC = re.compile(
    r"\b(?:to write|written|write to|writes to|save to|saved to|destination|output|"
    r"where (?:the |it |they )?\w*\s*(?:goes|go|is written|are written|lands?))\b",
    re.I,
)
_READ_DOC = re.compile(r"\b(?:to read|read from|reads from|input|source)\b", re.I)
_WORD = re.compile(r"[A-Za-z]+")
_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")


def _name_words(name: str) -> set[str]:
    return _stems(w.lower() for w in _SPLIT.split(name) if w)


def says_write(words: Iterable[str]) -> bool:
    """Whether any of `words` is a verb of writing, sending or changing something
    ("save", "post", "register", "delete"...).

    >>> says_write(["save", "the", "summary"]), says_write(["summarize", "it"])
    (True, False)
    """
    return bool(_stems(w.lower() for w in words) & _WRITE_VERBS)


def is_verb(word: str) -> bool:
    """Whether `word` is one of the verbs of reading, writing or sending that roles know
    ("post" in `post_to_chat` is what it does, not data it takes)."""
    return _STEMMER.stemWord(word.lower()) in _WRITE_VERBS | _READ_VERBS


def writes(slots: Iterable[Any]) -> bool:
    """Whether any of an action's input slots has the write role."""
    return any(getattr(slot, "role", None) == WRITE for slot in slots)


def is_location(name: str, schema: dict[str, Any]) -> bool:
    """Whether an input names a location: a path or URL by type, or by its name."""
    if schema.get("format") in ("path", "file-path", "directory-path", "uri", "url"):
        return True
    kinds = _kinds(schema)
    if kinds and not kinds <= {"string", "null"}:
        return False
    return bool(_name_words(name) & _LOCATION)


def _kinds(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    found: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            if isinstance(option, dict):
                if option.get("format") in ("path", "uri"):
                    found.add("string")
                found |= _kinds(option)
    return found


def action_verbs(name: str, summary: str | None) -> list[str]:
    """What an action says it does: its name's first word, and the first word of each
    sentence and clause of its summary ("Classify every row ... and write the rows").

    >>> action_verbs("bulk_classify", "Classify every row and write the rows.")
    ['bulk', 'classify', 'write']
    """
    found = [w.lower() for w in _SPLIT.split(name) if w][:1]
    text = (summary or "").split("\n\n")[0]
    for part in re.split(r"[.;:]\s+|,\s*|\band\b|\bthen\b", text):
        words = _WORD.findall(part)
        if words and words[0].lower() not in found:
            found.append(words[0].lower())
    return found


def _verbs(text: str) -> set[str]:
    return _stems(action_verbs("", text))


def _name_verb(name: str) -> set[str]:
    return _stems(action_verbs(name, None))


def infer_role(
    name: str,
    schema: dict[str, Any],
    description: str | None,
    flow_name: str,
    flow_summary: str | None,
) -> Role | None:
    """The role of an input that names a location, from its name, its description and
    the flow's verbs (its summary's, else its name's first word); None for an input
    that names no location."""
    if not is_location(name, schema):
        return None
    words = _name_words(name)
    if words & _WRITE_NAMES:
        return WRITE
    if words & _READ_NAMES:
        return READ
    text = description or ""
    if _WRITE_DOC.search(text):
        return WRITE
    if _READ_DOC.search(text):
        return READ
    for verbs in (
        _verbs(flow_summary.split("\n\n")[0]) if flow_summary else set(),
        _name_verb(flow_name),
    ):
        reads = verbs & (_READ_VERBS - _WRITE_VERBS)
        if verbs & _WRITE_VERBS and not reads:
            return WRITE
        if reads:
            return READ
    return READ


def marked_role(annotation: Any) -> Role | None:
    """The role an `Annotated[..., Reads | Writes]` annotation carries, also inside
    `Optional[...]`; None when it carries none."""
    stack = [annotation]
    while stack:
        current = stack.pop()
        if get_origin(current) is Annotated:
            for meta in current.__metadata__:
                if isinstance(meta, RoleMarker):
                    return meta.role
            stack.append(get_args(current)[0])
        elif get_origin(current) in (typing.Union, types.UnionType):
            stack.extend(get_args(current))
    return None


def with_roles(
    slots: list[Any],
    action: str,
    summary: str | None,
    given: Mapping[str, str],
    hints: Mapping[str, Any] | None = None,
) -> list[Any]:
    """`slots` (input `IOSlot`s) with their roles: the operator's (`given`), else the
    annotation's marker, else inferred.

    Raises:
        CatalogError: `given` names a parameter `action` lacks, or a role other than
            read and write.
    """
    names = {slot.name for slot in slots}
    for param, said in given.items():
        if param not in names:
            raise CatalogError(
                f"roles for {action!r} name {param!r}, which is not one of its parameters "
                f"({', '.join(sorted(names)) or 'none'})"
            )
        if said not in ROLES:
            raise CatalogError(
                f"roles for {action!r}: {param!r} is {said!r}; a role is 'read' or 'write'"
            )
    out = []
    for slot in slots:
        role: str | None = given.get(slot.name) or marked_role((hints or {}).get(slot.name))
        if role is None:
            role = infer_role(slot.name, slot.json_schema, slot.description, action, summary)
        out.append(slot.model_copy(update={"role": role}) if role != slot.role else slot)
    return out
