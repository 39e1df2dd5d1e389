"""Flows that carry secrets the careless ways real code does, for tests/test_secret_grants.py."""

from __future__ import annotations

from prefect import flow


@flow(name="build_dsn", version="1")
async def build_dsn(host: str, password: str) -> str:
    """Build a database connection string from a host and a password."""
    return f"postgresql://app:{password}@{host}/sales"


@flow(name="open_connection", version="1")
async def open_connection(dsn: str) -> int:
    """Open a database connection from a connection string."""
    return len(dsn)


@flow(name="sign_in", version="1")
async def sign_in(credentials: dict[str, str], fail: str = "") -> str:
    """Sign in with a JSON credentials object.

    Args:
        credentials: The user and password.
        fail: "field" or "key": fail on purpose, with the password in the message.
    """
    if fail == "field":
        raise ValueError(f"bad password {credentials['password']} for {credentials['user']}")
    if fail == "key":
        raise KeyError(credentials["password"])
    return f"signed in as {credentials['user']}"


@flow(name="check_password", version="1")
async def check_password(password: str) -> bool:
    """Check a password against the vault (fails with the password as a KeyError)."""
    raise KeyError(password)


@flow(name="post_message", version="1")
async def post_message(channel: str, text: str) -> str:
    """Post a message to a chat channel."""
    return f"posted {len(text)} characters to {channel}"


@flow(name="summarize_ticket", version="1")
async def summarize_ticket(ticket: str) -> str:
    """Summarize a support ticket in one line."""
    return ticket[:40]
