"""Turn a Prefect flow into action slots: parameter schema, return type, docstring (private)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import typing
from typing import Any, NamedTuple

import griffe
from prefect import Flow
from pydantic import BaseModel

from prefect_aether.catalog.schemas import coarse_type, inline_refs, type_adapter
from prefect_aether.catalog.specs import RETURN_SLOT

_NO_RETURN = object()


class DocParts(NamedTuple):
    """The parts of a docstring (Google, NumPy or Sphinx style) that the catalog uses."""

    summary: str
    returns: str | None
    named_returns: dict[str, str]
    attributes: dict[str, str]
    params: dict[str, str]


# Teams write all three styles; griffe tells them apart. Nothing is logged for a
# docstring that documents a parameter the signature lacks, or leaves out types.
_STYLE_OPTIONS: dict[str, dict[str, Any]] = {
    "google": {"warnings": False, "warn_unknown_params": False, "warn_missing_types": False},
    "numpy": {"warnings": False, "warn_unknown_params": False},
    "sphinx": {"warnings": False, "warn_unknown_params": False},
}


@functools.lru_cache(maxsize=4096)
def parse_docstring(text: str | None) -> DocParts:
    """Split a docstring with griffe, whichever of the Google, NumPy and Sphinx styles it
    is written in: summary text, parameters, Returns and Attributes sections.

    Cached by text: large catalogs repeat docstrings (and a structured return type
    without its own docstring inherits `dict`'s or `tuple`'s)."""
    if not text or not text.strip() or text.strip() == "None":
        return DocParts("", None, {}, {}, {})
    sections = griffe.Docstring(inspect.cleandoc(text)).parse(
        "auto", default="google", per_style_options=_STYLE_OPTIONS
    )
    summary: list[str] = []
    returns: list[str] = []
    named: dict[str, str] = {}
    attributes: dict[str, str] = {}
    params: dict[str, str] = {}
    for section in sections:
        kind = section.kind.value
        if kind == "text" and not returns and not attributes:
            summary.append(str(section.value).strip())
        elif kind == "returns":
            for item in section.value:
                if item.name:
                    named[item.name] = item.description
                    returns.append(f"{item.name}: {item.description}")
                else:
                    returns.append(item.description)
        elif kind == "attributes":
            attributes.update({item.name: item.description for item in section.value})
        elif kind == "parameters":
            params.update({item.name: item.description for item in section.value})
    return DocParts(
        "\n\n".join(s for s in summary if s),
        "\n".join(returns) or None,
        named,
        attributes,
        params,
    )


def flow_docstring(flow: Flow[..., Any]) -> str | None:
    """The flow's description: the decorator's `description=`, else the function docstring."""
    return flow.description or inspect.getdoc(flow.fn)


def type_hints(flow: Flow[..., Any]) -> dict[str, Any]:
    """Resolved annotations of the flow function; unresolvable ones are dropped (any)."""
    try:
        return typing.get_type_hints(flow.fn, include_extras=True)
    except Exception:
        hints: dict[str, Any] = {}
        for name, param in inspect.signature(flow.fn).parameters.items():
            if not isinstance(param.annotation, str) and param.annotation is not param.empty:
                hints[name] = param.annotation
        return hints


def input_slots(flow: Flow[..., Any]) -> list[dict[str, Any]]:
    """One slot per parameter, from Prefect's own parameter schema; a description
    Prefect did not read (it reads Google-style `Args:` only) comes from the function's
    docstring in any style."""
    slots = slots_from_parameter_schema(flow.parameters.model_dump(mode="json"))
    documented = parse_docstring(inspect.getdoc(flow.fn)).params
    for slot in slots:
        text = documented.get(slot["name"])
        if text and not slot["description"]:
            slot["description"] = text
            slot["json_schema"] = {**slot["json_schema"], "description": text}
    return slots


def slots_from_parameter_schema(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One slot per property of a Prefect parameter schema (a flow's or a deployment's)."""
    definitions: dict[str, Any] = schema.get("definitions") or {}
    required = set(schema.get("required") or [])
    slots = []
    for name, prop in (schema.get("properties") or {}).items():
        slot_schema = inline_refs(prop, definitions)
        slot_schema.pop("title", None)
        description = slot_schema.get("description")
        slots.append(
            {
                "name": name,
                "type": coarse_type(slot_schema),
                "json_schema": slot_schema,
                "description": description,
                "required": name in required,
                "default": slot_schema.get("default"),
            }
        )
    return slots


def _schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON schema of a type (a fresh copy); cached by type, since building a
    TypeAdapter costs most of an action's registration and catalogs repeat field types."""
    try:
        cached = _SCHEMAS.get(annotation)
    except TypeError:  # unhashable annotation: build it every time
        return _build_schema(annotation)
    if cached is None:
        cached = _SCHEMAS[annotation] = _build_schema(annotation)
    return copy.deepcopy(cached)


_SCHEMAS: dict[Any, dict[str, Any]] = {}


def _build_schema(annotation: Any) -> dict[str, Any]:
    try:
        raw = type_adapter(annotation).json_schema()
    except Exception:
        return {}
    schema = inline_refs(raw, raw.get("$defs") or {})
    schema.pop("title", None)
    return schema


def _structured_fields(tp: Any) -> list[tuple[str, Any, bool, str | None]] | None:
    """(name, annotation, required, description) per field of a structured type, else None."""
    if not isinstance(tp, type):
        return None
    if issubclass(tp, BaseModel):
        return [
            (name, field.annotation, field.is_required(), field.description)
            for name, field in tp.model_fields.items()
        ]
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return [
            (
                f.name,
                hints.get(f.name, Any),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                None,
            )
            for f in dataclasses.fields(tp)
        ]
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        required_keys = getattr(tp, "__required_keys__", frozenset(hints))
        return [(name, hint, name in required_keys, None) for name, hint in hints.items()]
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):
        hints = typing.get_type_hints(tp, include_extras=True)
        defaults = getattr(tp, "_field_defaults", {})
        return [(name, hints.get(name, Any), name not in defaults, None) for name in tp._fields]
    return None


def output_slots(
    flow: Flow[..., Any], hints: dict[str, Any], doc: DocParts
) -> list[dict[str, Any]]:
    """Output slots from the return annotation; see `ActionSpec.outputs`."""
    annotation = hints.get("return", _NO_RETURN)
    if annotation is None or annotation is type(None):
        return []
    if annotation is _NO_RETURN:
        return [_slot("result", {}, doc.returns, required=True)]
    fields = _structured_fields(annotation)
    if fields is None:
        return [_slot("result", _schema_of(annotation), doc.returns, required=True)]
    class_doc = parse_docstring(inspect.getdoc(annotation))
    slots = []
    for name, field_type, required, description in fields:
        text = description or doc.named_returns.get(name) or class_doc.attributes.get(name)
        slots.append(_slot(name, _schema_of(field_type), text, required=required))
    return slots


def return_slot(hints: dict[str, Any], doc: DocParts) -> dict[str, Any] | None:
    """The whole return value (`${step}`) with its full schema (the type's name as its
    title for a structured type); None when the flow returns nothing."""
    annotation = hints.get("return", _NO_RETURN)
    if annotation is None or annotation is type(None):
        return None
    if annotation is _NO_RETURN:
        return _slot(RETURN_SLOT, {}, doc.returns, required=True)
    schema = _schema_of(annotation)
    if _structured_fields(annotation) is not None:
        schema = {"title": annotation.__name__, **schema}
    return _slot(RETURN_SLOT, schema, doc.returns, required=True)


def _slot(
    name: str, schema: dict[str, Any], description: str | None, *, required: bool
) -> dict[str, Any]:
    if description and "description" not in schema:
        schema = {**schema, "description": description}
    return {
        "name": name,
        "type": coarse_type(schema),
        "json_schema": schema,
        "description": description or schema.get("description"),
        "required": required,
        "default": None,
    }
