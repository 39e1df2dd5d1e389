"""JSON-schema helpers shared by the catalog, the validator and the planners
(inside the package; not part of the public API)."""

from __future__ import annotations

from typing import Any, Final

COARSE_TYPES: Final = frozenset({"string", "integer", "number", "boolean", "array", "object"})
_JSON_KINDS: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


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
    """Whether a value of schema `source` can feed an input of schema `target`.

    Coarse types must match (integer may feed number); unknown types are
    wildcards; array item types are compared when both are known.
    """
    src_kind, dst_kind = coarse_type(source), coarse_type(target)
    if src_kind is None or dst_kind is None:
        return True
    if src_kind != dst_kind and not (src_kind == "integer" and dst_kind == "number"):
        return False
    if src_kind == "array" and source is not None and target is not None:
        src_items = main_variant(source).get("items")
        dst_items = main_variant(target).get("items")
        if isinstance(src_items, dict) and isinstance(dst_items, dict):
            return compatible(src_items, dst_items)
    return True


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
