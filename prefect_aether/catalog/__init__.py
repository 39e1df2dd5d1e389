"""The action catalog: the Prefect flows a team already has, as typed actions.

Owns what an action is (`ActionSpec` with its `IOSlot` inputs and outputs), how a
flow, an entrypoint or a deployment becomes one (introspection of Prefect's
parameter schema, the return annotation and the docstring), how actions are found
(`ActionCatalog.search`) and shown to an LLM (`ActionCatalog.render`), and who may
run them (`policy`: the `aether:approval` and `aether:manual` tags, and the catalog
sources the settings allow).

Offers `ActionCatalog`, `ActionSpec`, `IOSlot`, `CatalogSource`, `action_tags` and the
role markers `Reads` and `Writes`.
Modules: `registry` (the catalog), `sources` (`CatalogSource`), `specs` (the data),
`roles` (read and write roles of inputs), `policy`, `schemas` (JSON-schema
helpers the validator and planners share), `words` (word matching search and the
heuristic planner share); private: introspection, deployments, search, literal checkers.

Examples:
    >>> from prefect import flow
    >>> from prefect_aether.catalog import ActionCatalog
    >>> @flow
    ... def load(path: str) -> list[dict]:
    ...     '''Load rows from a CSV file.'''
    ...     return []
    >>> catalog = ActionCatalog()
    >>> catalog.register(load).inputs[0].name
    'path'
"""

from __future__ import annotations

from prefect_aether.catalog.policy import action_tags
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.roles import Reads, Writes
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.catalog.specs import ActionSpec, IOSlot

__all__ = [
    "ActionCatalog",
    "ActionSpec",
    "CatalogSource",
    "IOSlot",
    "Reads",
    "Writes",
    "action_tags",
]
