"""Reliability figures gathered by the tests and printed at the end of the session (JSON).

Tests count what they did here; `pytest_terminal_summary` in conftest prints the
totals, so `make test` shows them on every run.
"""

from __future__ import annotations

from collections import Counter

FIGURES: Counter[str] = Counter()

GROUPS = {
    "bad_inputs": ("tried", "rejected", "crashes"),
    "fuzzed_plans": ("generated", "accepted", "rejected", "crashes"),
    "crash_resume": ("plans_resumed", "completed_steps_rerun", "steps_completed_after_resume"),
    "llm_faults": ("injected", "recovered", "failed_cleanly_within_budget", "unclean"),
    "secrets": ("places_searched", "canary_hits"),
    "previews": ("checked", "unsanitized"),
    "executions": (
        "api_outages",
        "gave_up_within_s",
        "concurrent_resumes",
        "double_runs",
        "forged_results_planted",
        "forged_results_trusted",
    ),
    # Attacks tried and blocked, by kind (tests/test_guardrails.py and friends).
    "guardrails": tuple(
        f"{kind}_{outcome}"
        for kind in (
            "parameter_code_injection",
            "ui_injection",
            "cache_bypass",
            "excess_retries",
            "secret_leaks",
            "prompt_injection",
            "unplanned_manual_actions",
            "unapproved_runs",
            "policy_overrides",
            "ungranted_secrets",
            "derived_secret_leaks",
            "agent_approvals",
        )
        for outcome in ("tried", "blocked")
    ),
}


def add(name: str, amount: int = 1) -> None:
    """Add to one figure, `"group.figure"`."""
    FIGURES[name] += amount


def summary() -> dict[str, dict[str, int]]:
    return {
        group: {name: FIGURES[f"{group}.{name}"] for name in names}
        for group, names in GROUPS.items()
    }
