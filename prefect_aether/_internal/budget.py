"""One budget for a whole plan-and-execute: LLM calls, tokens and wall time, across
planning, repair rounds and replans (private; `prefect_aether.Budget` is its public
name).

`spending(budget)` opens the account in a context variable; the LLM client charges each
call (`before_llm_call`, then `spend` its tokens) and the executor asks before each step
(`before_step`). Whoever finds a budget spent raises `BudgetExceeded` with one line
naming it; nothing is charged outside an account.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel, Field

from prefect_aether.exceptions import BudgetExceeded
from prefect_aether.settings import current_settings

__all__ = ["Budget", "Spending", "current_spending", "spending"]


class Budget(BaseModel):
    """Limits of one plan-and-execute; None takes the setting (`budget_*`).

    Examples:
        >>> Budget(llm_calls=3).llm_calls
        3
    """

    llm_calls: int | None = Field(default=None, ge=1, description="Most LLM calls.")
    tokens: int | None = Field(default=None, ge=1, description="Most prompt + completion tokens.")
    seconds: float | None = Field(default=None, gt=0, description="Most wall-clock seconds.")


class Spending:
    """What one plan-and-execute has spent so far, against its budget."""

    def __init__(self, budget: Budget | None = None) -> None:
        settings = current_settings()
        chosen = budget or Budget()
        self.llm_calls = chosen.llm_calls or settings.budget_llm_calls
        self.tokens = chosen.tokens or settings.budget_tokens
        self.seconds = chosen.seconds or settings.budget_seconds
        self.calls_made = 0
        self.tokens_spent = 0
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def before_llm_call(self) -> None:
        """Raise `BudgetExceeded` when another LLM call would pass a budget."""
        if self.calls_made >= self.llm_calls:
            raise BudgetExceeded(
                f"budget llm_calls: {self.calls_made} of {self.llm_calls} LLM calls used",
                budget="llm_calls",
            )
        self._tokens_and_time()
        self.calls_made += 1

    def spend(self, tokens: int) -> None:
        """Charge what an LLM call cost (prompt + completion tokens)."""
        self.tokens_spent += tokens

    def before_step(self) -> None:
        """Raise `BudgetExceeded` when the tokens or the time are spent."""
        self._tokens_and_time()

    def _tokens_and_time(self) -> None:
        if self.tokens_spent >= self.tokens:
            raise BudgetExceeded(
                f"budget tokens: {self.tokens_spent} of {self.tokens} tokens spent",
                budget="tokens",
            )
        if self.elapsed() >= self.seconds:
            raise BudgetExceeded(
                f"budget seconds: {self.elapsed():.1f} of {self.seconds:g} s spent",
                budget="seconds",
            )


_SPENDING: ContextVar[Spending | None] = ContextVar("aether_spending", default=None)


def current_spending() -> Spending | None:
    """The account of the plan-and-execute this code runs in, if any."""
    return _SPENDING.get()


@contextmanager
def spending(budget: Budget | None = None) -> Iterator[Spending]:
    """Open an account for one plan-and-execute; an account already open (a replan
    inside it) is reused, so one budget covers the whole call."""
    open_ = _SPENDING.get()
    if open_ is not None:
        yield open_
        return
    account = Spending(budget)
    token = _SPENDING.set(account)
    try:
        yield account
    finally:
        _SPENDING.reset(token)
