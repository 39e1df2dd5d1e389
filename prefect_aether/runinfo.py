"""Who asked for a plan, in which session and why: `Identity` and `RunInfo`, carried
as tags on every run of the plan (Prefect runs have no origin, visibility or
importance fields).

Examples:
    >>> RunInfo(identity=Identity(user_id="ada"), origin="schedule").tags()
    ['user:ada', 'origin:schedule']
"""

from __future__ import annotations

import getpass
import os
import socket
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Identity", "Importance", "Origin", "RunInfo", "Visibility", "holder"]

Origin = Literal["user", "agent", "app", "chat", "api", "schedule", "system"]
Visibility = Literal["normal", "inline", "hidden"]
Importance = Literal["normal", "ephemeral"]


class Identity(BaseModel):
    """Who a plan runs for; read from `user:` / `org:` run tags, else the local user.

    Examples:
        >>> Identity(user_id="ada", org_id="acme").tags()
        ['user:ada', 'org:acme']
    """

    user_id: str = Field(description="The user id.")
    org_id: str | None = Field(default=None, description="The organisation id, if any.")
    mode: Literal["tags", "local"] = Field(
        default="tags", description="`tags` when read from run tags, `local` for the OS user."
    )

    @classmethod
    def local(cls) -> Identity:
        """The identity of the OS user running this process."""
        try:
            user = getpass.getuser()
        except Exception:
            user = "local"
        return cls(user_id=user, mode="local")

    def tags(self) -> list[str]:
        """The run tags that carry this identity."""
        return [f"user:{self.user_id}", *([f"org:{self.org_id}"] if self.org_id else [])]


class RunInfo(BaseModel):
    """Who, in which session and why: turned into run tags on every run of a plan.

    Examples:
        >>> RunInfo(session_id="s1", agent_id="bot").tags()
        ['session:s1', 'agent:bot', 'origin:agent']
    """

    identity: Identity | None = Field(default=None, description="Who the plan runs for.")
    session_id: str | None = Field(default=None, description="Conversation or session id.")
    agent_id: str | None = Field(default=None, description="The agent that asked, if any.")
    app_id: str | None = Field(default=None, description="The application that asked, if any.")
    origin: Origin | None = Field(
        default=None, description="What started it; `agent` with an agent id, else `user`."
    )
    visibility: Visibility | None = Field(default=None, description="How listings show it.")
    importance: Importance | None = Field(default=None, description="How long to keep it.")
    extra_tags: list[str] = Field(default_factory=list, description="More tags, verbatim.")

    def tags(self) -> list[str]:
        """Tags in a stable order, without duplicates."""
        origin = self.origin or ("agent" if self.agent_id else None)
        found = [
            *(self.identity.tags() if self.identity else []),
            *([f"session:{self.session_id}"] if self.session_id else []),
            *([f"agent:{self.agent_id}"] if self.agent_id else []),
            *([f"app:{self.app_id}"] if self.app_id else []),
            *([f"origin:{origin}"] if origin else []),
            *([f"visibility:{self.visibility}"] if self.visibility else []),
            *([f"importance:{self.importance}"] if self.importance else []),
            *self.extra_tags,
        ]
        return list(dict.fromkeys(found))


def holder() -> str:
    """`host:pid` of this process: who runs an execution recorded in the store."""
    return f"{socket.gethostname()}:{os.getpid()}"
