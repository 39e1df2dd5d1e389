"""`${secret.<block-name>}` values: read from Prefect `Secret` blocks only when a step
starts, and kept out of everything that is stored or shown (private to the executor).

Until then a secret input is a `SecretRef`: what the result key hashes, what previews
and errors could ever show, is its name, never its value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
            found[name] = str(cache[name])
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


def scrub(text: str, values: Iterable[str]) -> str:
    """`text` with every secret value in it masked (longest first)."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
