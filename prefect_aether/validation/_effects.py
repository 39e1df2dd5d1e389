"""Write conflicts: a plan that would overwrite what it reads, or write one location from
two unordered steps (private to `_checker`).

Locations are the values a plan gives inputs with a role (`IOSlot.role`): a literal or
a user value (known or not: `${user.k}` bound to a read and a write slot is one
location). A default the step leaves in place is the flow author's choice of a
shared resource (a registry, a database the flows are written to share) and is not
checked; nor is a folder (an input named like one, or a value ending in `/`), which
steps write by adding files. Paths are compared normalised (`./a/../b`
is `b`; a URL without its trailing `/`). A write is fine when every read of its
location comes after it (the file passes data from one step to the next); it is a
conflict when a read may come first or run alongside (the plan would destroy its own
input), or when two writes have no order between them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prefect_aether.catalog.specs import ActionSpec
from prefect_aether.exceptions import BindingError
from prefect_aether.plan import PlanStep, parse_binding

__all__ = ["Access", "write_conflicts"]


@dataclass(frozen=True)
class Access:
    """One step reading or writing one location through one input."""

    step_id: str
    field: str
    location: str
    shown: str
    writes: bool


def _location(value: Any, user_inputs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(normalised location, how to show it) of an input value; None when it is not
    known before the plan runs (another step's output) or names nothing."""
    if isinstance(value, str) and value.startswith("${"):
        try:
            binding = parse_binding(value)
        except BindingError:
            return None
        if binding.kind != "external" or binding.path:
            return None
        key = binding.key or ""
        if key in user_inputs:
            return _location(user_inputs[key], {})
        return f"user:{key}", f"${{user.{key}}}"
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if "://" in text:
        return text.rstrip("/"), text
    normal = posixpath.normpath(text.replace("\\", "/"))
    return normal, text


_FOLDER = re.compile(r"(?:^|[_\-\s])(?:dir|directory|folder|outdir)(?:$|[_\-\s])", re.I)


def _is_folder(name: str, value: str) -> bool:
    """A folder is written by adding files to it, which overwrites nothing by itself:
    steps writing into one folder (a log folder, an output folder) do not conflict."""
    return bool(_FOLDER.search(name)) or value.endswith(("/", "\\"))


def accesses(
    steps: Iterable[PlanStep],
    specs: Mapping[str, ActionSpec | None],
    user_inputs: Mapping[str, Any],
) -> list[Access]:
    """Every read and write of a known location, in plan order."""
    found = []
    for step in steps:
        spec = specs.get(step.id)
        if spec is None:
            continue
        for slot in spec.inputs:
            if slot.role is None or slot.name not in step.inputs:
                continue
            value = step.inputs[slot.name]
            where = _location(value, user_inputs)
            if where is not None and not _is_folder(slot.name, where[1]):
                found.append(Access(step.id, slot.name, where[0], where[1], slot.role == "write"))
    return found


def write_conflicts(
    steps: Iterable[PlanStep],
    specs: Mapping[str, ActionSpec | None],
    user_inputs: Mapping[str, Any],
    upstream: Mapping[str, list[str]],
) -> list[tuple[Access, Access, str]]:
    """(the write, the other access, why) for each conflicting pair of accesses."""
    by_location: dict[str, list[Access]] = {}
    for access in accesses(steps, specs, user_inputs):
        by_location.setdefault(access.location, []).append(access)
    conflicts = []
    before = _Ancestry(upstream)
    for found in by_location.values():
        writes = [a for a in found if a.writes]
        for write in writes:
            for other in found:
                if other is write or (other.writes and found.index(other) < found.index(write)):
                    continue
                if other.writes:
                    if other.step_id != write.step_id and not (
                        before.reaches(other.step_id, write.step_id)
                        or before.reaches(write.step_id, other.step_id)
                    ):
                        conflicts.append((write, other, "two steps write it with no order"))
                elif other.step_id == write.step_id:
                    conflicts.append((write, other, "the same step reads it"))
                elif before.reaches(write.step_id, other.step_id):
                    conflicts.append((write, other, "the plan would overwrite what it read"))
                elif not before.reaches(other.step_id, write.step_id):
                    conflicts.append((write, other, "it may be read before it is written"))
    return conflicts


class _Ancestry:
    """Whether one step waits for another, directly or through others (memoised)."""

    def __init__(self, upstream: Mapping[str, list[str]]) -> None:
        self.upstream = upstream
        self.known: dict[str, set[str]] = {}

    def reaches(self, step: str, ancestor: str) -> bool:
        """Whether `step` runs after `ancestor` finished."""
        return ancestor in self.ancestors(step)

    def ancestors(self, step: str) -> set[str]:
        found = self.known.get(step)
        if found is not None:
            return found
        seen: set[str] = set()
        stack = list(self.upstream.get(step, ()))
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            stack.extend(self.upstream.get(current, ()))
        self.known[step] = seen
        return seen
