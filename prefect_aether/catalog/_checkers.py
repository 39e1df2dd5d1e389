"""Checks of literal values against an action's inputs (private to `registry`)."""

from __future__ import annotations

import reprlib
from typing import Any

from jsonschema import Draft202012Validator
from prefect import Flow
from pydantic import ValidationError

from prefect_aether.catalog.schemas import json_kind, type_adapter
from prefect_aether.catalog.specs import IOSlot
from prefect_aether.plan import non_finite


def make_checker(flow: Flow[..., Any] | None, hints: dict[str, Any], slot: IOSlot) -> Any:
    """A function that checks a value for `slot`: None when accepted, else a reason."""
    annotation = hints.get(slot.name)
    adapter = None
    if flow is not None and annotation is not None:
        try:
            adapter = type_adapter(annotation)
        except Exception:  # pydantic cannot build it: the slot's JSON schema checks instead
            adapter = None
    if adapter is not None:
        checked = adapter

        def check_python(value: Any) -> str | None:
            try:
                result = checked.validate_python(value)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                return f"{err['msg']}{f' at {where}' if where else ''} (got {_preview(value)})"
            try:
                # What the flow would get: "NaN" as a float is NaN too.
                plain = checked.dump_python(result)
            except Exception:
                plain = value
            if non_finite(value) or non_finite(plain):
                return f"NaN and infinities are not accepted (got {_preview(value)})"
            return None

        return check_python
    validator = Draft202012Validator(slot.json_schema)

    def check_schema(value: Any) -> str | None:
        if non_finite(value):
            return f"NaN and infinities are not accepted (got {_preview(value)})"
        error = next(iter(validator.iter_errors(value)), None)
        return None if error is None else f"{error.message} (got {json_kind(value) or 'null'})"

    return check_schema


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _preview(value: Any, limit: int = 60) -> str:
    # reprlib bounds depth and length: a value nested 100,000 deep has no full repr.
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
