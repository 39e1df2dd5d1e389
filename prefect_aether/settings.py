"""Settings for prefect-aether, read through Prefect's settings machinery.

Each field is an environment variable `PREFECT_INTEGRATIONS_AETHER_<FIELD>`,
a `[integrations.aether]` table in `prefect.toml`, or
`[tool.prefect.integrations.aether]` in `pyproject.toml`.

Examples:
    >>> from prefect_aether.settings import AetherSettings
    >>> AetherSettings().max_steps >= 1
    True
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from prefect.settings.base import PrefectBaseSettings, build_settings_config
from pydantic import Field, SecretStr

__all__ = ["AetherSettings", "current_settings"]


class AetherSettings(PrefectBaseSettings):
    """Limits and defaults of prefect-aether (`PREFECT_INTEGRATIONS_AETHER_*`).

    Examples:
        >>> import os
        >>> os.environ["PREFECT_INTEGRATIONS_AETHER_MAX_STEPS"] = "50"
        >>> AetherSettings().max_steps
        50
        >>> del os.environ["PREFECT_INTEGRATIONS_AETHER_MAX_STEPS"]
    """

    model_config = build_settings_config(("integrations", "aether"))

    max_steps: int = Field(
        default=1_000,
        ge=1,
        description="Largest number of steps a plan may have before validation rejects it.",
    )
    max_plan_bytes: int = Field(
        default=1_000_000, ge=1, description="Largest plan text (an LLM answer, a plan file) read."
    )
    max_llm_response_bytes: int = Field(
        default=2_000_000, ge=1, description="Largest LLM HTTP response accepted."
    )
    max_planning_iterations: int = Field(
        default=10, ge=1, description="Most LLM rounds a planner may be configured with."
    )
    max_planning_tokens: int = Field(
        default=200_000,
        ge=1,
        description="Most LLM tokens (prompt + completion) spent on one plan.",
    )
    max_goal_chars: int = Field(
        default=20_000,
        ge=1,
        description="Longest goal accepted (characters); a longer one is refused before planning.",
    )
    max_concurrent_steps: int = Field(
        default=64, ge=1, description="Most steps of one plan running at once."
    )
    api_outage_timeout: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds the Prefect API may stay unreachable during a plan before the executor "
            "gives up (the execution can be resumed once it is back)."
        ),
    )
    max_input_depth: int = Field(
        default=100,
        ge=1,
        description="Deepest nesting of lists and objects accepted in a literal or user input.",
    )
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root (e.g. http://127.0.0.1:11434/v1); unset: no LLM.",
    )
    llm_model: str | None = Field(default=None, description="Model name for the LLM planner.")
    llm_api_key: SecretStr | None = Field(default=None, description="API key for the LLM.")
    llm_timeout: float = Field(default=60.0, gt=0, description="Seconds per LLM request.")
    llm_max_retries: int = Field(default=3, ge=0, description="Retries per LLM request.")
    budget_llm_calls: int = Field(
        default=20,
        ge=1,
        description=(
            "Most LLM calls one plan-and-execute may make: planning, repair rounds and "
            "replans together (`Budget.llm_calls` overrides it per call)."
        ),
    )
    budget_tokens: int = Field(
        default=200_000,
        ge=1,
        description=(
            "Most LLM tokens (prompt + completion) one plan-and-execute may spend, across "
            "planning, repair rounds and replans (`Budget.tokens`)."
        ),
    )
    budget_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Most seconds one plan-and-execute may take before it starts no further LLM "
            "call or step (`Budget.seconds`); a day by default, so long pipelines are "
            "not cut."
        ),
    )
    planning_timeout: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Seconds one LLM planning call may take in all: connects, slow answers, retries "
            "and repair rounds. Past it, planner='auto' uses the heuristic plan."
        ),
    )
    planner_max_iter: int = Field(default=3, ge=1, description="Most LLM planning rounds.")
    planner_retrieval_threshold: int = Field(
        default=40,
        ge=1,
        description="Catalogs larger than this show the LLM only the actions relevant to the goal.",
    )
    planner_examples: int = Field(
        default=2,
        ge=0,
        description="Most worked examples (plans that ran well for similar goals) in a prompt.",
    )
    planner_top_k: int = Field(default=15, ge=1, description="How many actions retrieval keeps.")
    planner_trust_draft: bool = Field(
        default=True,
        description=(
            "A heuristic draft that is valid, complete and serves every part of the goal is "
            "the LLM planner's plan without asking the model, and where the model is asked "
            "it may extend the draft, not leave its actions out nor make it worse (a small "
            "local model changes drafts for the worse: bench/llm.py). False: the model plans "
            "every goal its own way."
        ),
    )
    planner_catalog_tokens: int = Field(
        default=3000,
        ge=200,
        description=(
            "Most prompt tokens (bytes / 4) the actions shown to the LLM may take; a small "
            "model's context (4k tokens) holds them, the goal and the answer."
        ),
    )

    catalog_modules: list[str] = Field(
        default_factory=list,
        description=(
            "Modules (dotted names or .py paths) of the default catalog; the only modules the "
            "deployable flows' catalog parameter may name."
        ),
    )
    catalog_entrypoints: list[str] = Field(
        default_factory=list,
        description=(
            "Flows (`path.py:fn`, `pkg.mod:fn`) of the default catalog; the only entrypoints "
            "outside catalog_modules the deployable flows' catalog parameter may name."
        ),
    )
    catalog_deployments: list[str] = Field(
        default_factory=list,
        description=(
            "Deployments (`flow/deployment`) of the default catalog; the only ones the "
            "deployable flows' catalog parameter may name."
        ),
    )
    catalog_deployment_tags: list[str] = Field(
        default_factory=list,
        description=(
            "Deployments with any of these tags join the default catalog; the only tags the "
            "deployable flows' catalog parameter may name."
        ),
    )
    action_tags: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            'The operator\'s policy tags per action, e.g. `{"delete_backups": '
            '["aether:approval"]}`: added to every catalog built where this setting is '
            "read (the worker of a deployment); no run parameter removes them."
        ),
    )
    action_roles: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description=(
            'The operator\'s read/write roles per action and input, e.g. `{"export": '
            '{"dest": "write"}}`; over any other roles given for the same input.'
        ),
    )
    max_step_retries: int = Field(
        default=5, ge=0, description="Most retries a plan step may ask for (extras.retries)."
    )
    max_step_timeout_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description="Longest timeout a plan step may ask for (extras.timeout_seconds).",
    )
    deployment_poll_interval: float = Field(
        default=2.0, gt=0, description="Seconds between polls of a running deployment step."
    )

    pause_poll_interval: int = Field(
        default=5, ge=1, description="Seconds between checks of a paused run for its form."
    )

    store_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy async URL of the plan store; unset: sqlite+aiosqlite under PREFECT_HOME."
        ),
    )
    store_block: str | None = Field(
        default=None,
        description="Name of a saved 'Aether Store' block whose URL the plan store uses.",
    )
    store_enabled: bool = Field(
        default=True,
        description="Whether the CLI and the deployable flows use the plan store (cache, history).",
    )
    store_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a plan store lock or connection."
    )
    history_snippets: int = Field(
        default=3, ge=0, description="Past executions of a goal summarised for the planner."
    )

    secret_blocks: list[str] = Field(
        default_factory=list,
        description=(
            "Prefect Secret blocks a plan may read with `${secret.<name>}`; none by default. "
            "Any other `${secret.*}` is refused (secret_not_granted)."
        ),
    )
    secret_inputs: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Per action, inputs that may take a secret besides those whose name or type says "
            'so (`password`, `api_key`, `SecretStr`), e.g. `{"connect": ["dsn"]}`.'
        ),
    )
    mcp_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token every HTTP request to `prefect-aether mcp --transport http` must "
            "carry; the HTTP server does not start without it (stdio needs none)."
        ),
    )

    def llm_configured(self) -> bool:
        """Whether an LLM is configured (base URL and model)."""
        return bool(self.llm_base_url and self.llm_model)


def current_settings() -> AetherSettings:
    """`AetherSettings()` as the environment and the settings files are now, built once
    per distinct state of them: reading every source costs ~10 ms, and a plan reads its
    settings several times. Treat the result as read-only.

    Examples:
        >>> current_settings() is current_settings()
        True
    """
    from prefect.settings import get_current_settings

    files = (".env", "prefect.toml", "pyproject.toml", get_current_settings().profiles_path)
    stamps: list[tuple[str, int | None, int | None]] = []
    for name in files:
        try:
            stat = Path(name).stat()
            stamps.append((str(name), stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append((str(name), None, None))
    return _settings(frozenset(os.environ.items()), os.getcwd(), tuple(stamps))


@functools.lru_cache(maxsize=8)
def _settings(
    environ: frozenset[tuple[str, str]], cwd: str, files: tuple[object, ...]
) -> AetherSettings:
    return AetherSettings()
