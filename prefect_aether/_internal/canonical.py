"""Canonical JSON: the one text form used for hashes, fingerprints and previews (private;
`prefect_aether.plan.canonical_json` is its public name)."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Serialize `value` to canonical JSON: sorted keys, no spaces, UTF-8 kept.

    Examples:
        >>> canonical_json({"b": 1, "a": [1, 2]})
        '{"a":[1,2],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
