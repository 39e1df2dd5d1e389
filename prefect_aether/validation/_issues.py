"""What validation reports: issues, the result, and what counts as a secret (private;
`prefect_aether.validation.validate` is the public home of these names)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_aether.catalog.specs import IOSlot

IssueKind = Literal[
    "empty_plan",
    "plan_too_large",
    "duplicate_step_id",
    "invalid_step_id",
    "unknown_action",
    "unknown_input",
    "missing_input",
    "unknown_step",
    "unknown_output",
    "cycle",
    "invalid_literal",
    "type_mismatch",
    "invalid_binding",
    "invalid_policy",
    "secret_binding",
    "secret_not_granted",
    "manual_action",
    "write_conflict",
    "excluded_action",
]

# `${user.<key>}` names that ask a person (or an LLM) for a secret: the value would be
# stored with the plan's parameters, shown in forms and logged. Whole words only, so
# `token_limit` or `password_policy_url` are not flagged.
_SECRET_LAST_WORDS = {
    "secret",
    "secrets",
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "pin",
    "token",
    "jwt",
    "apikey",
    "credential",
    "credentials",
    "cred",
    "creds",
    "privatekey",
    "cookie",
    "otp",
    "pass",
    "bearer",
    "auth",
    "ssn",
}
# Words that may follow a secret's name without changing what it is (`private_key_pem`,
# `secret_value`, `token_b64`); digits are dropped too (`password2`).
_SECRET_SUFFIXES = {"pem", "der", "b64", "base64", "hex", "raw", "value", "str", "text", "data"}
_SECRET_PAIRS = {
    ("api", "key"),
    ("access", "key"),
    ("private", "key"),
    ("secret", "key"),
    ("signing", "key"),
    ("client", "secret"),
}


def looks_like_secret(key: str) -> bool:
    """Whether a user input key or slot name names a secret (`api_key`, `DB_PASSWORD`,
    `authToken`, `ssh_passphrase`, `card_pin`).

    Examples:
        >>> [looks_like_secret(k) for k in ("OPENAI_API_KEY", "token_limit", "authToken")]
        [True, False, True]
        >>> [looks_like_secret(k) for k in ("db_pass", "password2", "private_key_pem", "bypass")]
        [True, True, True, False]
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    words = [w.rstrip("0123456789") for w in re.split(r"[^A-Za-z0-9]+", spaced.lower())]
    words = [w for w in words if w]
    while len(words) > 1 and words[-1] in _SECRET_SUFFIXES:
        words.pop()
    if not words:
        return False
    return words[-1] in _SECRET_LAST_WORDS or tuple(words[-2:]) in _SECRET_PAIRS


class ValidationIssue(BaseModel):
    """One problem in a plan, located by step and field.

    Examples:
        >>> issue = ValidationIssue(kind="unknown_step", message="no step 'x'", field="n")
        >>> issue.field
        'n'
    """

    kind: IssueKind = Field(description="What is wrong (see the module docs for the kinds).")
    message: str = Field(description="Human- and LLM-readable explanation.")
    step_id: str | None = Field(default=None, description="The step where it was found.")
    field: str | None = Field(
        default=None, description="The input (with a path into it), extra or output concerned."
    )
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Machine-readable extras: candidates, cycle path, expected schema.",
    )

    def __str__(self) -> str:
        where = "".join(
            f" {k}={v}" for k, v in (("step", self.step_id), ("field", self.field)) if v is not None
        )
        return f"[{self.kind}]{where}: {self.message}"


class ValidationResult(BaseModel):
    """The outcome of `validate_plan`.

    Examples:
        >>> ValidationResult(ok=True).summary()
        'Plan is valid.'
    """

    ok: bool = Field(description="No issues and no missing user values: ready to run.")
    issues: list[ValidationIssue] = Field(default_factory=list, description="Every problem found.")
    has_structural_errors: bool = Field(
        default=False, description="Any issue at all (missing user values are not issues)."
    )
    missing_user_bindings: dict[str, list[str]] = Field(
        default_factory=dict,
        description='User input key to the "step.field" locations that need it.',
    )
    levels: list[list[str]] = Field(
        default_factory=list,
        description="Step ids grouped by dependency depth: each level can run together.",
    )

    def is_partial_ok(self) -> bool:
        """Structurally valid, but waiting for some `${user.*}` values."""
        return not self.has_structural_errors and bool(self.missing_user_bindings)

    def summary(self) -> str:
        """A short multi-line report, suitable for logs and LLM repair prompts."""
        if self.ok:
            return "Plan is valid."
        lines = ["Plan is invalid:" if self.has_structural_errors else "Plan needs user input:"]
        lines += [f"- {issue}" for issue in self.issues]
        for key, places in self.missing_user_bindings.items():
            lines.append(f"- [missing_user_input] user.{key} is needed by {', '.join(places)}")
        return "\n".join(lines)


def make_result(
    issues: list[ValidationIssue], missing: dict[str, list[str]], levels: list[list[str]]
) -> ValidationResult:
    # Built from already-checked data: skip pydantic's re-validation of every level.
    return ValidationResult.model_construct(
        ok=not issues and not missing,
        issues=issues,
        has_structural_errors=bool(issues),
        missing_user_bindings=missing,
        levels=levels,
    )


def secret_slot(slot: IOSlot) -> bool:
    """A slot that takes a secret: by its name, or a `SecretStr` annotation (whose JSON
    schema says `format: password`, `writeOnly`)."""
    schema = slot.json_schema
    return looks_like_secret(slot.name) or (
        schema.get("format") == "password" or schema.get("writeOnly") is True
    )
