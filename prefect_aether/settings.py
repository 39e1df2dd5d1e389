"""Settings for prefect-aether, read through Prefect's settings machinery.

Each field is an environment variable `PREFECT_INTEGRATIONS_AETHER_<FIELD>`,
a `[integrations.aether]` table in `prefect.toml`, or
`[tool.prefect.integrations.aether]` in `pyproject.toml`.

Example:
    >>> from prefect_aether.settings import AetherSettings
    >>> AetherSettings().max_steps >= 1
    True
"""

from __future__ import annotations

from prefect.settings.base import PrefectBaseSettings, build_settings_config
from pydantic import Field

__all__ = ["AetherSettings"]


class AetherSettings(PrefectBaseSettings):
    """Limits and defaults of prefect-aether (`PREFECT_INTEGRATIONS_AETHER_*`).

    Example:
        >>> import os
        >>> os.environ["PREFECT_INTEGRATIONS_AETHER_MAX_STEPS"] = "50"
        >>> AetherSettings().max_steps
        50
        >>> del os.environ["PREFECT_INTEGRATIONS_AETHER_MAX_STEPS"]
    """

    model_config = build_settings_config(("integrations", "aether"))

    max_steps: int = Field(
        default=10_000,
        ge=1,
        description="Largest number of steps a plan may have before validation rejects it.",
    )
