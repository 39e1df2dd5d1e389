"""JSON-schema helpers shared by the catalog, the validator and the planners (inside the
package; not part of the public API): type adapters, the schemas of slots, and whether
one schema can feed another (`mismatch`, `compatible`)."""

from __future__ import annotations

import functools
from typing import Any, Final

from pydantic import ConfigDict, TypeAdapter
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

COARSE_TYPES: Final = frozenset({"string", "integer", "number", "boolean", "array", "object"})
_JSON_KINDS: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


_ARBITRARY = ConfigDict(arbitrary_types_allowed=True)


def type_adapter(annotation: Any) -> TypeAdapter[Any]:
    """A pydantic adapter for any parameter type Prefect accepts.

    Models, dataclasses and TypedDicts carry their own config (pydantic refuses another
    one for them); other types get `arbitrary_types_allowed`, as Prefect's own
    parameter validation does, only when they need it. Cached by type.

    >>> import datetime as dt
    >>> type_adapter(list[dt.date]).validate_python(["2026-11-02"])
    [datetime.date(2026, 11, 2)]
    """
    try:
        return _cached_adapter(annotation)
    except TypeError:  # an unhashable annotation (Annotated with a dict...): not cached
        return _build_adapter(annotation)


def _build_adapter(annotation: Any) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(annotation)
    except (PydanticSchemaGenerationError, PydanticUserError):
        return TypeAdapter(annotation, config=_ARBITRARY)


_cached_adapter = functools.lru_cache(maxsize=4096)(_build_adapter)


class _Missing:
    """Marks a path that a schema says cannot exist."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def inline_refs(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Return `schema` with `$ref`s to `definitions` inlined.

    A recursive model cannot be inlined; its definitions are kept under the
    result's own `$defs` so the schema stays self-contained.
    """
    kept: dict[str, Any] = {}

    def walk(node: Any, active: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(item, active) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(("#/definitions/", "#/$defs/")):
            name = ref.rsplit("/", 1)[1]
            target = definitions.get(name)
            if target is None:
                return {k: walk(v, active) for k, v in node.items()}
            siblings = {
                k: walk(v, active) for k, v in node.items() if k not in ("$ref", "position")
            }
            if name in active:
                if name not in kept:
                    kept[name] = {}  # reserve before walking: breaks the recursion
                    kept[name] = walk(target, (name,))
                return {"$ref": f"#/$defs/{name}", **siblings}
            return {**walk(target, (*active, name)), **siblings}
        return {
            k: walk(v, active)
            for k, v in node.items()
            if k not in ("definitions", "$defs", "position")
        }

    result = walk(schema, ())
    if kept:
        result["$defs"] = kept
    return dict(result)


def main_variant(schema: dict[str, Any]) -> dict[str, Any]:
    """The single non-null branch of an Optional (`anyOf: [X, null]`), else the schema."""
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            non_null = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            if len(non_null) == 1:
                return non_null[0]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return all_of[0]
    return schema


def json_kind(value: Any) -> str | None:
    """Coarse JSON type of a Python value (None for null and non-JSON values)."""
    for py_type, name in _JSON_KINDS:
        if isinstance(value, py_type):
            return name
    return None


def coarse_type(schema: dict[str, Any] | None) -> str | None:
    """Coarse JSON type of a schema, or None when it admits several (any).

    >>> coarse_type({"anyOf": [{"type": "integer"}, {"type": "null"}]})
    'integer'
    """
    if not schema:
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if len(non_null) == 1 else None
    if isinstance(kind, str):
        return kind if kind in COARSE_TYPES else None
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            kinds = {
                coarse_type(o) for o in options if isinstance(o, dict) and o.get("type") != "null"
            }
            if kinds == {"integer", "number"}:
                return "number"
            return kinds.pop() if len(kinds) == 1 else None
    main = main_variant(schema)
    if main is not schema:
        return coarse_type(main)
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        kinds = {json_kind(v) for v in values}
        return kinds.pop() if len(kinds) == 1 else None
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def compatible(source: dict[str, Any] | None, target: dict[str, Any] | None) -> bool:
    """Whether a value of schema `source` can feed an input of schema `target`, by
    structure (see `mismatch`).

    >>> model = {"type": "object", "required": ["id", "total"],
    ...          "properties": {"id": {"type": "string"}, "total": {"type": "number"}}}
    >>> compatible({"type": "object", "additionalProperties": {"type": "number"}}, model)
    False
    >>> compatible({"type": "array", "items": model}, {"type": "array", "items": model})
    True
    """
    return mismatch(source, target) is None


def mismatch(source: dict[str, Any] | None, target: dict[str, Any] | None) -> str | None:
    """Why a value of schema `source` cannot feed an input of schema `target`; None when
    it can.

    Unknown schemas are wildcards and integer may feed number. Optional and unions:
    some branch of the source must fit some branch of the target. Objects: every field
    the target requires is in the source (a map's values must fit each of them) and
    the fields both name fit; maps value by value; arrays and tuples element by
    element; enums and Literals as sets of values (every value the source may give
    must be allowed). `$ref`s into a schema's own `$defs` (recursive types) are
    followed, each pair of types checked once.

    >>> mismatch({"type": "array", "items": {"enum": ["a", "b"]}},
    ...          {"type": "array", "items": {"enum": ["a"]}})
    "[*]: 'b' is not one of 'a'"
    """
    return _Compat(source or {}, target or {}).why(source or {}, target or {}, "")


class _Compat:
    """One structural comparison: the two roots' `$defs`, and the pairs of recursive
    types already met."""

    __slots__ = ("defs", "known")

    def __init__(self, source: dict[str, Any], target: dict[str, Any]) -> None:
        self.defs = (source.get("$defs") or {}, target.get("$defs") or {})
        self.known: dict[tuple[str, str], str | None] = {}

    def resolve(self, schema: Any, side: int) -> tuple[dict[str, Any], str | None]:
        """The schema with its `$ref` followed, and the name it referred to."""
        name = None
        for _ in range(32):  # refs to refs end; a broken chain is a wildcard
            if not isinstance(schema, dict):
                return {}, name
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith(("#/$defs/", "#/definitions/")):
                return schema, name
            name = ref.rsplit("/", 1)[1]
            found = self.defs[side].get(name)
            schema = {**(found or {}), **{k: v for k, v in schema.items() if k != "$ref"}}
        return {}, name

    def why(self, source: Any, target: Any, at: str) -> str | None:
        src, src_name = self.resolve(source, 0)
        dst, dst_name = self.resolve(target, 1)
        if src_name is None or dst_name is None:
            return self.why_resolved(src, dst, at)
        # Only recursive types keep `$ref`s (the catalog inlines the rest): a pair met
        # again inside itself is assumed to fit, which its first check decides.
        key = (src_name, dst_name)
        if key not in self.known:
            self.known[key] = None
            self.known[key] = self.why_resolved(src, dst, at)
        return self.known[key]

    def why_resolved(self, src: dict[str, Any], dst: dict[str, Any], at: str) -> str | None:
        src_options, dst_options = _branches(src), _branches(dst)
        if src_options is not None:
            reasons = [self.why(o, dst, at) for o in src_options]
            return None if not reasons or None in reasons else reasons[0]
        if dst_options is not None:
            reasons = [self.why(src, o, at) for o in dst_options]
            return None if not reasons or None in reasons else reasons[0]
        return self.why_one(src, dst, at)

    def why_one(self, src: dict[str, Any], dst: dict[str, Any], at: str) -> str | None:
        src_kind, dst_kind = coarse_type(src), coarse_type(dst)
        problem = _values_problem(src, dst, dst_kind)
        if problem is not None:
            return f"{at or 'the value'}: {problem}"
        if src_kind is None or dst_kind is None:
            return None
        if src_kind != dst_kind and not (src_kind == "integer" and dst_kind == "number"):
            return f"{at or 'the value'}: {_name(src, src_kind)} is not {_name(dst, dst_kind)}"
        if src_kind == "array":
            return self.arrays(src, dst, at)
        if src_kind == "object":
            return self.objects(src, dst, at)
        return None

    def arrays(self, src: dict[str, Any], dst: dict[str, Any], at: str) -> str | None:
        src_prefix, dst_prefix = src.get("prefixItems"), dst.get("prefixItems")
        src_items, dst_items = src.get("items"), dst.get("items")
        pairs: list[tuple[Any, Any, str]] = []
        if isinstance(src_prefix, list) and isinstance(dst_prefix, list):
            if len(src_prefix) < len(dst_prefix) and not isinstance(src_items, dict):
                return f"{at or 'the value'}: {len(src_prefix)} items, {len(dst_prefix)} needed"
            pairs = [
                (s, d, f"{at}[{i}]")
                for i, (s, d) in enumerate(zip(src_prefix, dst_prefix, strict=False))
            ]
        elif isinstance(src_prefix, list) and isinstance(dst_items, dict):
            pairs = [(s, dst_items, f"{at}[{i}]") for i, s in enumerate(src_prefix)]
        elif isinstance(src_items, dict) and isinstance(dst_prefix, list):
            pairs = [(src_items, d, f"{at}[{i}]") for i, d in enumerate(dst_prefix)]
        elif isinstance(src_items, dict) and isinstance(dst_items, dict):
            pairs = [(src_items, dst_items, f"{at}[*]")]
        for s, d, where in pairs:
            problem = self.why(s, d, where)
            if problem is not None:
                return problem
        return None

    def objects(self, src: dict[str, Any], dst: dict[str, Any], at: str) -> str | None:
        src_props: dict[str, Any] = src.get("properties") or {}
        dst_props: dict[str, Any] = dst.get("properties") or {}
        src_extra, dst_extra = src.get("additionalProperties"), dst.get("additionalProperties")
        for name in dst.get("required") or []:
            if not isinstance(name, str) or name in src_props:
                continue
            where = f"{at}.{name}" if at else name
            if isinstance(src_extra, dict) and not src_props:
                # A map may hold the field: its values must fit it.
                problem = self.why(src_extra, dst_props.get(name, {}), where)
                if problem is not None:
                    return problem
            elif src_props or src_extra is False:
                return f"{where}: required, and the value has no such field"
        for name, schema in src_props.items():
            where = f"{at}.{name}" if at else name
            if name in dst_props:
                problem = self.why(schema, dst_props[name], where)
            elif isinstance(dst_extra, dict):
                problem = self.why(schema, dst_extra, where)
            elif dst_extra is False and dst_props:
                problem = f"{where}: a field the input does not allow"
            else:
                problem = None
            if problem is not None:
                return problem
        if isinstance(src_extra, dict) and isinstance(dst_extra, dict) and not dst_props:
            return self.why(src_extra, dst_extra, f"{at}[*]")
        return None


def _branches(schema: dict[str, Any]) -> list[Any] | None:
    """The branches of a union (`anyOf`/`oneOf`, a list of types, a lone `allOf`), nulls
    left out; None for a schema that is not a union."""
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            rest = {k: v for k, v in schema.items() if k not in (key, "default", "title")}
            return [
                {**rest, **o} if isinstance(o, dict) else o
                for o in options
                if not (isinstance(o, dict) and o.get("type") == "null")
            ]
    kinds = schema.get("type")
    if isinstance(kinds, list):
        return [{**schema, "type": k} for k in kinds if k != "null"]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return [{**rest, **all_of[0]}]
    return None


def _values_problem(src: dict[str, Any], dst: dict[str, Any], dst_kind: str | None) -> str | None:
    """Enums, Literals and consts as sets: each value the source may give must be one the
    target allows (or at least of the target's type)."""
    given, allowed = _values(src), _values(dst)
    if given is None:
        return None
    for value in given:
        if allowed is not None and not any(_same(value, a) for a in allowed):
            listed = ", ".join(repr(a) for a in allowed[:8])
            return f"{value!r} is not one of {listed}"
        kind = json_kind(value)
        if (
            allowed is None
            and dst_kind is not None
            and kind is not None
            and kind != dst_kind
            and not (kind == "integer" and dst_kind == "number")
        ):
            return f"{value!r} is not {dst_kind}"
    return None


def _values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return enum if isinstance(enum, list) else None


def _same(value: Any, allowed: Any) -> bool:
    if isinstance(value, bool) or isinstance(allowed, bool):
        return value is allowed
    return bool(value == allowed)


def _name(schema: dict[str, Any], kind: str) -> str:
    title = schema.get("title")
    return f"{kind} ({title})" if isinstance(title, str) and title else kind


def is_structured(schema: dict[str, Any] | None) -> bool:
    """Whether a schema names fields: an object with properties, or an array (or map)
    of such objects. Its shape alone says what the value is.

    >>> is_structured({"type": "array", "items": {"type": "object", "properties": {"a": {}}}})
    True
    >>> is_structured({"type": "array", "items": {"type": "string"}})
    False
    """
    main = main_variant(schema or {})
    if main.get("properties"):
        return True
    for key in ("items", "additionalProperties"):
        inner = main.get(key)
        if isinstance(inner, dict) and is_structured(inner):
            return True
    return bool(main.get("$ref"))


def schema_at_path(schema: dict[str, Any] | None, path: tuple[str | int, ...]) -> Any:
    """Schema of the value at `path` inside a value of `schema`.

    Returns `{}` when nothing is known, or `MISSING` when the schema rules the
    path out (a field a closed object does not have, an index into a string).
    """
    current: dict[str, Any] = schema or {}
    for item in path:
        main = main_variant(current)
        kind = coarse_type(main)
        if kind is None:
            return {}
        if kind == "object":
            props = main.get("properties") or {}
            extra = main.get("additionalProperties")
            if isinstance(item, str) and item in props:
                current = props[item]
            elif isinstance(extra, dict):
                current = extra
            elif extra is True or not props:
                return {}
            else:
                return MISSING
        elif kind == "array" and isinstance(item, int):
            prefix = main.get("prefixItems")
            if isinstance(prefix, list):
                if item >= len(prefix):
                    return MISSING
                current = prefix[item]
            else:
                items = main.get("items")
                current = items if isinstance(items, dict) else {}
        else:
            return MISSING
    return current
