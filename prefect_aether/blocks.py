"""Prefect Blocks of prefect-aether, stored on the Prefect server: the LLM
configuration (`LLMConfig`) and the plan store's connection (`StoreConnection`).

The repository's `blocks/` folder holds the documents a deployment needs as code;
`prefect-aether blocks apply blocks/` creates or updates them from environment
variables.

Register the block type with `prefect block register -m prefect_aether.blocks`
(the collection entry point registers it too), save one from the UI or from
code, and load it in flows:

Examples:
    >>> from prefect_aether.blocks import LLMConfig
    >>> LLMConfig(base_url="http://127.0.0.1:11434/v1", model="llama3.1").get_llm().model
    'llama3.1'
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from prefect_aether.planning.llm import OpenAICompatibleLLM

__all__ = ["LLMConfig", "StoreConnection"]

_LOGO = HttpUrl(
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/webhook.png"
)
_DOCS = HttpUrl("https://github.com/prefect-aether/prefect-aether/blob/main/docs/blocks.md")


class LLMConfig(Block):
    """An OpenAI-compatible chat-completions endpoint for the prefect-aether planner.

    Works with OpenAI, vLLM, Ollama, llama.cpp's server and any other server that
    speaks the chat-completions protocol. The API key is a secret: the UI and the
    API show it masked, and it never reaches prompts, logs or events.

    Examples:
        >>> config = LLMConfig(base_url="https://api.openai.com/v1", model="gpt-4o-mini",
        ...                    api_key="sk-...")
        >>> config.api_key
        SecretStr('**********')
    """

    _block_type_name = "Aether LLM"
    _block_type_slug = "aether-llm"
    _logo_url = _LOGO
    _documentation_url = _DOCS
    _description = "The OpenAI-compatible LLM endpoint the prefect-aether planner calls."
    _code_example = """
```python
from prefect_aether.blocks import LLMConfig

llm_config = LLMConfig.load("BLOCK_NAME")
llm = llm_config.get_llm()
```
"""
    base_url: str = Field(
        description="API root of the server, e.g. https://api.openai.com/v1.",
        pattern=r"^https?://",
    )
    model: str = Field(description="Model name the server knows, e.g. gpt-4o-mini.")
    api_key: SecretStr | None = Field(
        default=None, description="API key sent as a bearer token; leave empty for local servers."
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(
        default=3, ge=0, description="Retries on connect errors, timeouts, 429 and 5xx answers."
    )
    temperature: float | None = Field(
        default=0.0, ge=0, le=2, description="Sampling temperature; empty uses the server's."
    )

    def get_llm(self) -> OpenAICompatibleLLM:
        """A client for this endpoint.

        Examples:
            >>> LLMConfig(base_url="http://127.0.0.1:8000/v1", model="m").get_llm().base_url
            'http://127.0.0.1:8000/v1'
        """
        return OpenAICompatibleLLM(
            self.base_url,
            self.model,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
            temperature=self.temperature,
        )


class StoreConnection(Block):
    """Where the plan store lives: a SQLAlchemy async URL kept as a secret.

    Point the `PREFECT_INTEGRATIONS_AETHER_STORE_BLOCK` setting at a saved block, and
    every `PlanStore()` (the CLI, the deployable flows) uses it: the password lives
    on the Prefect server, masked, instead of in each worker's settings.

    Examples:
        >>> StoreConnection(url="postgresql+asyncpg://aether:pw@db/aether").url
        SecretStr('**********')
    """

    _block_type_name = "Aether Store"
    _block_type_slug = "aether-store"
    _logo_url = _LOGO
    _documentation_url = _DOCS
    _description = "The database of the prefect-aether plan store (plans, executions, audit)."
    _code_example = """
```python
from prefect_aether.blocks import StoreConnection
from prefect_aether.store import PlanStore

store_connection = StoreConnection.load("BLOCK_NAME")
store = PlanStore(store_connection.url.get_secret_value())
```
"""
    url: SecretStr = Field(
        description=(
            "SQLAlchemy async URL, e.g. postgresql+asyncpg://user:password@host/db or "
            "sqlite+aiosqlite:///path/aether.db."
        )
    )
