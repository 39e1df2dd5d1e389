"""Deployments on the Prefect API as action specs (private to `registry`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prefect_aether.catalog import _introspect
from prefect_aether.catalog.specs import ActionSpec, IOSlot
from prefect_aether.exceptions import CatalogError


async def deployment_specs(
    names: Iterable[str] | None,
    tags: Iterable[str] | None,
    flow_id: str | None,
    extra_tags: Mapping[str, list[str]],
) -> list[ActionSpec]:
    """One spec per deployment named or tagged (see `ActionCatalog.register_deployments`).

    Raises:
        CatalogError: A named deployment does not exist, or nothing matched.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
    from prefect.exceptions import ObjectNotFound

    wanted = list(names or [])
    tag_list = list(tags or [])
    async with get_client() as client:
        deployments = []
        for name in wanted:
            try:
                deployments.append(await client.read_deployment_by_name(name))
            except ObjectNotFound:
                raise CatalogError(
                    f"deployment {name!r} does not exist on the Prefect API "
                    "(names are 'flow name/deployment name')"
                ) from None
        if tag_list or not wanted:
            deployments.extend(
                await client.read_deployments(
                    deployment_filter=DeploymentFilter(
                        tags=DeploymentFilterTags(any_=tag_list) if tag_list else None
                    )
                )
            )
        flow_names = {
            flow_uuid: (await client.read_flow(flow_uuid)).name
            for flow_uuid in {d.flow_id for d in deployments}
        }
    if not deployments:
        raise CatalogError(
            f"no deployment on the Prefect API matches names={wanted} tags={tag_list}"
        )
    specs: dict[str, ActionSpec] = {}
    for deployment in deployments:
        full_name = f"{flow_names[deployment.flow_id]}/{deployment.name}"
        if full_name in specs:
            continue
        doc = _introspect.parse_docstring(deployment.description)
        spec = ActionSpec(
            name=full_name,
            ref=f"deployment:{full_name}",
            kind="deployment",
            version=deployment.version,
            description=doc.summary,
            tags=sorted({*deployment.tags, *extra_tags.get(full_name, ())}),
            flow_id=flow_id,
            inputs=_deployment_inputs(deployment.parameter_openapi_schema, deployment.parameters),
            outputs=[
                IOSlot(
                    name="result",
                    type=None,
                    json_schema={},
                    description=doc.returns or "The deployment's return value.",
                    required=True,
                )
            ],
            entrypoint=deployment.entrypoint,
        )
        specs[full_name] = spec
    return list(specs.values())


def _deployment_inputs(
    schema: dict[str, Any] | None, defaults: dict[str, Any] | None
) -> list[IOSlot]:
    """Input slots of a deployment: its parameter schema, with its own parameter values
    as defaults (Prefect merges them into every run)."""
    slots = []
    for slot in _introspect.slots_from_parameter_schema(schema or {}):
        if defaults and slot["name"] in defaults:
            slot.update(required=False, default=defaults[slot["name"]])
        slots.append(IOSlot(**slot))
    return slots
