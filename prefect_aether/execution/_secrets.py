"""`${secret.<block-name>}` values: read from Prefect `Secret` blocks only when a step
starts, and kept out of everything that is stored or shown (private to the executor).

Until then a secret input is a `SecretRef`: what the result key hashes, what previews
and errors could ever show, is its name, never its value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from prefect_aether._internal.canonical import canonical_json
from prefect_aether.exceptions import ExecutionError

MASK = "****"


class SecretRef(str):
    """A secret input not yet read: a string naming the block (so it hashes and prints
    as its name, and can never be mistaken for the value)."""

    __slots__ = ()

    @classmethod
    def of(cls, name: str) -> SecretRef:
        return cls(f"<secret {name}>")

    @property
    def block(self) -> str:
        return self[len("<secret ") : -1]


async def reveal(inputs: dict[str, Any], found: dict[str, str]) -> dict[str, Any]:
    """A copy of `inputs` with every `SecretRef` replaced by its Secret block's value;
    each value read is added to `found` (block name -> text to scrub).

    Raises:
        ExecutionError: A block is missing or cannot be read (the value never shows).
    """
    from prefect.blocks.system import Secret

    cache: dict[str, Any] = {}

    async def value_of(ref: SecretRef) -> Any:
        name = ref.block
        if name not in cache:
            try:
                block: Secret[Any] = await Secret.aload(name)  # type: ignore[assignment]
            except Exception as exc:
                raise ExecutionError(
                    f"cannot read Secret block {name!r} for ${{secret.{name}}}: "
                    f"{type(exc).__name__}"
                ) from None
            cache[name] = block.get()
            found.update(masked_forms(name, cache[name]))
        return cache[name]

    async def walk(item: Any) -> Any:
        if isinstance(item, SecretRef):
            return await value_of(item)
        if isinstance(item, dict):
            return {k: await walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [await walk(v) for v in item]
        return item

    return dict(await walk(inputs))


#: Shorter string fields of a JSON secret are not masked on their own (a port, a flag):
#: masking every "5432" or "true" would garble what is shown and hide nothing.
_SHORTEST_FIELD = 4


def masked_forms(name: str, value: Any) -> dict[str, str]:
    """Every text a secret's value can show up as, keyed `name`, `name#1`, ...: the value,
    each string field of a JSON secret (`creds['password']`), and of each its JSON-escaped
    and repr-escaped forms (a `"` or `\\` in a secret is written `\\"` or `\\\\` in
    an error or a JSON preview).

    Examples:
        >>> forms = masked_forms("db", {"user": "ada", "password": 'p@ss"w0rd'})
        >>> scrub(repr({"password": 'p@ss"w0rd'}), forms.values())
        "{'password': '****'}"
        >>> scrub('{"password":"p@ss\\\\"w0rd"}', forms.values())
        '{"password":"****"}'
    """
    texts = {str(value)}
    if not isinstance(value, str):
        texts.add(canonical_json(value))
        texts.add(json.dumps(value, default=str))
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and len(item) >= _SHORTEST_FIELD:
            texts.add(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    forms = set()
    for text in texts:
        forms |= {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
        forms.add(repr(text)[1:-1])
    ordered = sorted((f for f in forms if f), key=len, reverse=True)
    return {(name if i == 0 else f"{name}#{i}"): form for i, form in enumerate(ordered)}


def reveals(value: Any, values: Iterable[str]) -> bool:
    """Whether `value` (a step's output) holds a secret's value in any form: then it is as
    secret as the secret (masked where shown; its consumers run in this process)."""
    secrets = [v for v in values if v]
    if not secrets:
        return False
    try:
        text = canonical_json(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return any(secret in text for secret in secrets)


def scrub(text: str, values: Iterable[str]) -> str:
    """`text` with every secret value in it masked (longest first)."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
