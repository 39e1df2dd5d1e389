"""Where a catalog comes from, as data: `CatalogSource`, the `catalog` parameter of the
deployable flows (modules, entrypoints, deployments, and the operator's policy)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.exceptions import CatalogError
from prefect_aether.settings import current_settings

__all__ = ["CatalogSource"]


class CatalogSource(BaseModel):
    """Where a catalog's actions come from; a parameter of the deployable flows.

    Examples:
        >>> source = CatalogSource(modules=["flows/pipeline.py"])
        >>> len(source.build_local())  # doctest: +SKIP
        7
    """

    modules: list[str] = Field(
        default_factory=list, description="Dotted module names or `.py` paths; all their flows."
    )
    entrypoints: list[str] = Field(
        default_factory=list, description="Single flows: `path/to/file.py:fn` or `pkg.mod:fn`."
    )
    deployments: list[str] = Field(
        default_factory=list, description="Deployments by name: `flow name/deployment name`."
    )
    deployment_tags: list[str] = Field(
        default_factory=list, description="Every deployment carrying one of these tags."
    )
    action_tags: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            'Extra tags per action name, e.g. `{"charge_card": ["aether:approval"]}`: '
            "policy for flows that cannot be decorated."
        ),
    )

    roles: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description=(
            'Read and write roles per action and parameter, e.g. `{"export": {"dest": '
            '"write"}}`: for flows whose roles the catalog cannot infer.'
        ),
    )

    def under(self, operator: CatalogSource) -> CatalogSource:
        """This source (a run parameter) under the operator's policy (`operator`, the
        deployment's own `catalog` default): the operator's action tags are added to
        this source's (which may only add more), and only the operator's roles count.

        Examples:
            >>> asked = CatalogSource(modules=["m"], roles={"x": {"dest": "read"}})
            >>> mine = CatalogSource(modules=["m"], action_tags={"x": ["aether:approval"]})
            >>> under = asked.under(mine)
            >>> under.action_tags, under.roles
            ({'x': ['aether:approval']}, {})
        """
        tags = {
            action: sorted(
                {*self.action_tags.get(action, ()), *operator.action_tags.get(action, ())}
            )
            for action in {*self.action_tags, *operator.action_tags}
        }
        return self.model_copy(update={"action_tags": tags, "roles": dict(operator.roles)})

    @classmethod
    def from_settings(cls) -> CatalogSource:
        """Everything the `catalog_*` settings list (the deployable flows' default)."""
        settings = current_settings()
        return cls(
            modules=settings.catalog_modules,
            entrypoints=settings.catalog_entrypoints,
            deployments=settings.catalog_deployments,
            deployment_tags=settings.catalog_deployment_tags,
        )

    def build_local(self) -> ActionCatalog:
        """The catalog of the modules and entrypoints (no API call).

        Raises:
            CatalogError: A module or entrypoint cannot be loaded.
        """
        catalog = ActionCatalog(action_tags=self.action_tags, roles=self.roles)
        for module in self.modules:
            catalog.register_module(module)
        for entrypoint in self.entrypoints:
            catalog.register_entrypoint(entrypoint)
        return catalog

    async def build(self) -> ActionCatalog:
        """The whole catalog, deployments read from the Prefect API included.

        Raises:
            CatalogError: Something cannot be loaded, or the source names nothing.
        """
        if not (self.modules or self.entrypoints or self.deployments or self.deployment_tags):
            raise CatalogError(
                "the catalog source names no module, entrypoint, deployment or deployment tag"
            )
        catalog = self.build_local()
        if self.deployments or self.deployment_tags:
            await catalog.register_deployments(
                names=self.deployments or None, tags=self.deployment_tags or None
            )
        return catalog
