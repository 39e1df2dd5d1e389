"""Flows with policy and secrets, for the guardrail tests."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import SecretStr

from prefect_aether import action_tags
from prefect_aether.catalog.policy import APPROVAL, MANUAL

# A careless module and flow print to standard output: over an MCP server's stdio, that
# is the protocol's wire, which must stay clean.
print("tests.guarded_flows imported")


@flow(name="login", version="1")
async def login(user: str, password: str, fail: bool = False) -> str:
    """Log a user in to the billing system.

    Args:
        user: The user name.
        password: The user's password.
        fail: Fail on purpose, with the password in the message (a careless flow).
    """
    if fail:
        raise ValueError(f"login failed for {user} with password {password}")
    return f"{user} logged in ({len(password)} characters)"


@flow(name="connect_db", version="1")
async def connect_db(dsn: str, db: SecretStr) -> str:
    """Connect to the database."""
    return f"connected to {dsn} ({len(db.get_secret_value())})"


@action_tags(APPROVAL)
@flow(name="charge_card", version="1")
async def charge_card(amount: float, log_dir: str) -> str:
    """Charge the customer's card."""
    (Path(log_dir) / f"charge-{amount}").write_text("charged")
    return "charged"


@action_tags(MANUAL)
@flow(name="purge_customers", version="1")
async def purge_customers(log_dir: str) -> int:
    """Purge (delete) every customer record."""
    (Path(log_dir) / "purged").write_text("purged")
    return 0


@flow(name="list_customers", version="1")
async def list_customers(log_dir: str) -> int:
    """List the customer records."""
    print("listing the customers")
    return 3


@flow(name="delete_backups", version="1")
async def delete_backups(log_dir: str) -> int:
    """Delete the database backups."""
    (Path(log_dir) / "backups-deleted").write_text("deleted")
    return 0
