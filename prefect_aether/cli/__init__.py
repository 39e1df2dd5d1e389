"""The `prefect-aether` command (typer + rich): inspect a catalog, plan, validate and run.

`app` holds the commands; private modules hold what they share (`_common`), the live
progress of `run` (`_progress`), `history`/`show` (`_history`) and `blocks apply`
(`_blocks`). The console entry point is `prefect_aether.cli:main`.
"""

from __future__ import annotations

from prefect_aether.cli.app import app, main

__all__ = ["app", "main"]
