"""Canonical JSON: the one text form used for hashes, fingerprints and previews (private;
`prefect_aether.plan.canonical_json` is its public name)."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python


def canonical_json(value: Any) -> str:
    """Serialize `value` to canonical JSON: sorted keys, no spaces, UTF-8 kept.

    Models, dataclasses, dates, Decimals, enums, UUIDs and paths are written as pydantic
    writes them in JSON mode (their fields, ISO dates, strings); anything else as `str()`.

    Examples:
        >>> canonical_json({"b": 1, "a": [1, 2]})
        '{"a":[1,2],"b":1}'
        >>> import datetime, decimal
        >>> canonical_json([datetime.date(2026, 11, 2), decimal.Decimal("2.50")])
        '["2026-11-02","2.50"]'
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable
    )


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value, fallback=str)
