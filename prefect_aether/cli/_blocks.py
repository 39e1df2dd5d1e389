"""`prefect-aether blocks apply`: block documents as code (private to the CLI)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from prefect_aether.cli._common import clean_errors, console, fail

blocks_app = typer.Typer(help="Block documents as code (the repository's blocks/ folder).")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, where: str) -> Any:
    """`${VAR}` and `${VAR:-default}` in a block field, from the environment."""
    if not isinstance(value, str):
        return value

    def variable(match: re.Match[str]) -> str:  # noqa: RET503 (fail never returns)
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        fail(f"{where} needs the environment variable {name}")

    return _VARIABLE.sub(variable, value)


@blocks_app.command("apply")
def blocks_apply(
    folder: Annotated[Path, typer.Argument(help="Folder of block YAML files.")] = Path("blocks"),
) -> None:
    """Register prefect-aether's block types, then create or update each block document
    of FOLDER (`type`, `name`, `fields`) from the environment; secrets are never shown."""
    from prefect.blocks.core import Block

    from prefect_aether import blocks as block_module

    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not folder.is_dir() or not files:
        fail(f"no block files (*.yaml) in {str(folder)!r}")
    documents = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            fail(f"{path}: not a block file: {str(exc).splitlines()[0]}")
        if not isinstance(data, dict) or not {"type", "name", "fields"} <= set(data):
            fail(f"{path}: a block file has type, name and fields")
        fields = {key: _expand(value, f"{path}: {key}") for key, value in data["fields"].items()}
        documents.append((path, str(data["type"]), str(data["name"]), fields))

    kinds: dict[str, type[Block]] = {
        cls.get_block_type_slug(): cls
        for cls in (block_module.LLMConfig, block_module.StoreConnection)
    }
    # Every document is checked before any is saved: a bad one changes nothing.
    built: list[tuple[str, str, Block]] = []
    for path, kind, name, fields in documents:
        cls = kinds.get(kind)
        if cls is None:
            fail(f"{path}: unknown block type {kind!r} (known: {', '.join(sorted(kinds))})")
        try:
            built.append((kind, name, cls(**{k: v for k, v in fields.items() if v != ""})))
        except ValueError as exc:
            fail(f"{path}: {_first_error(exc)}")

    async def apply() -> list[str]:
        for known in kinds.values():
            await known.aregister_type_and_schema()
        lines = []
        for kind, name, block in built:
            try:
                old: Block | None = await type(block).aload(name)
            except ValueError:
                old = None
            if old is not None and _same_block(old, block):
                lines.append(f"{kind}/{name}: unchanged")
                continue
            await block.asave(name, overwrite=True)
            lines.append(f"{kind}/{name}: {'updated' if old is not None else 'created'}")
        return lines

    with clean_errors():
        for line in asyncio.run(apply()):
            console.print(line, highlight=False)


def _same_block(old: Any, new: Any) -> bool:
    """Equal field by field, secrets compared by value (never printed)."""
    from pydantic import SecretStr

    def plain(block: Any) -> dict[str, Any]:
        return {
            key: value.get_secret_value() if isinstance(value, SecretStr) else value
            for key, value in block.model_dump().items()
            if not key.startswith("_") and key != "block_type_slug"
        }

    return plain(old) == plain(new)


def _first_error(exc: ValueError) -> str:
    """A validation error's first problem, without the input (it may be a secret)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return type(exc).__name__
