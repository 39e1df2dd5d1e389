"""Property-based tests (hypothesis): random valid plans, and the same plans mutated.

The validator never raises; it accepts every valid plan in any list order and
reports every mutated one with the issue the mutation causes; the executor never
runs a plan the validator rejects.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import flow
from prefect.client.orchestration import get_client

from prefect_aether import ActionCatalog, CandidatePlan, PlanValidationError, validate_plan
from prefect_aether.exceptions import PlanDecodingError
from prefect_aether.execution.executor import PlanExecutor
from tests import figures

# Hypothesis warns when the global `random` state moves while it draws a strategy. Ours
# draw none, but Prefect's background threads of the session (event and log workers,
# client retries with jitter) may, at any moment: that warning would be a false alarm,
# and as an error it makes hypothesis replay the example and call the draw flaky.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


@flow(name="inc", version="1")
def inc(x: int) -> int:
    return x + 1


@flow(name="add", version="1")
def add(a: int, b: int = 0) -> int:
    return a + b


@flow(name="label", version="1")
def label(n: int, prefix: str = "n") -> str:
    return f"{prefix}{n}"


@flow(name="join", version="1")
def join(items: list[str], sep: str = ",") -> str:
    return sep.join(items)


CATALOG = ActionCatalog()
for _flow in (inc, add, label, join):
    CATALOG.register(_flow)

# What each action needs and gives: (required inputs with their type, output type).
SIGNATURES: dict[str, tuple[dict[str, str], str]] = {
    "inc": ({"x": "int"}, "int"),
    "add": ({"a": "int"}, "int"),
    "label": ({"n": "int"}, "str"),
    "join": ({"items": "list"}, "str"),
}
# A literal string never contains "${" (that would be a binding, or a malformed one).
LITERALS = {
    "int": st.integers(-1000, 1000),
    "str": st.text(max_size=8).filter(lambda text: "${" not in text),
}


@st.composite
def valid_plans(draw: st.DrawFn) -> dict[str, Any]:
    """A valid plan: every input is a literal, a user value, or an earlier compatible output."""
    size = draw(st.integers(1, 12))
    steps: list[dict[str, Any]] = []
    for i in range(size):
        action = draw(st.sampled_from(sorted(SIGNATURES)))
        needs, _ = SIGNATURES[action]
        inputs: dict[str, Any] = {}
        for name, kind in needs.items():
            if kind == "list":
                producers = [s["id"] for s in steps if SIGNATURES[s["action"]][1] == "str"]
                items = [
                    draw(st.sampled_from([f"${{{p}.result}}" for p in producers]))
                    if producers and draw(st.booleans())
                    else draw(LITERALS["str"])
                    for _ in range(draw(st.integers(0, 3)))
                ]
                inputs[name] = items
                continue
            producers = [s["id"] for s in steps if SIGNATURES[s["action"]][1] == kind]
            choice = draw(
                st.sampled_from(["literal", "user", "step"] if producers else ["literal", "user"])
            )
            if choice == "literal":
                inputs[name] = draw(LITERALS[kind])
            elif choice == "user":
                inputs[name] = "${user.start}"
            else:
                inputs[name] = f"${{{draw(st.sampled_from(producers))}.result}}"
        steps.append({"id": f"s{i}", "action": action, "inputs": inputs})
    order = draw(st.permutations(steps))
    return {"steps": list(order)}


def mutate(plan: dict[str, Any], how: str, rng: random.Random) -> tuple[dict[str, Any], str]:
    """Break `plan` in one way; return it with the issue kind that must be reported."""
    steps = [dict(s, inputs=dict(s["inputs"])) for s in plan["steps"]]
    victim = rng.choice(steps)
    if how == "unknown_action":
        victim["action"] = victim["action"] + "_gone"
    elif how == "unknown_input":
        victim["inputs"]["surprise"] = 1
    elif how == "invalid_literal":
        victim["action"], victim["inputs"] = "inc", {"x": "not a number"}
    elif how == "unknown_step":
        victim["action"], victim["inputs"] = "inc", {"x": "${ghost.result}"}
    elif how == "duplicate_step_id":
        steps.append(dict(victim))
    elif how == "cycle":
        victim["action"], victim["inputs"] = "inc", {"x": f"${{{victim['id']}.result}}"}
    elif how == "missing_input":
        victim["action"], victim["inputs"] = "inc", {}
    elif how == "type_mismatch":
        strings = [s for s in steps if SIGNATURES.get(s["action"], ({}, ""))[1] == "str"]
        if not strings or strings[0] is victim:
            return mutate(plan, "invalid_literal", rng)
        victim["action"], victim["inputs"] = "inc", {"x": f"${{{strings[0]['id']}.result}}"}
    elif how == "invalid_binding":
        victim["action"], victim["inputs"] = "inc", {"x": "${broken"}
    elif how == "secret_binding":
        victim["action"], victim["inputs"] = "inc", {"x": "${user.api_key}"}
    return {"steps": steps}, how


MUTATIONS = [
    "unknown_action",
    "unknown_input",
    "invalid_literal",
    "unknown_step",
    "duplicate_step_id",
    "cycle",
    "missing_input",
    "type_mismatch",
    "invalid_binding",
    "secret_binding",
]


@settings(max_examples=150, deadline=None)
@given(valid_plans())
def test_valid_plans_are_accepted_in_any_order(plan: dict[str, Any]) -> None:
    result = validate_plan(CandidatePlan.from_dict(plan), CATALOG, user_inputs={"start": 1})
    assert result.ok, result.summary()
    assert sorted(sid for level in result.levels for sid in level) == sorted(
        s["id"] for s in plan["steps"]
    )


@settings(max_examples=300, deadline=None)
@given(valid_plans(), st.sampled_from(MUTATIONS), st.randoms(use_true_random=False))
def test_every_mutated_plan_is_reported(plan: dict[str, Any], how: str, rng: random.Random) -> None:
    # Counted once mutated: `rng` draws from hypothesis, which may discard the example.
    broken, kind = mutate(plan, how, rng)
    figures.add("bad_inputs.tried")
    try:
        candidate = CandidatePlan.from_dict(broken)
    except PlanDecodingError:
        figures.add("bad_inputs.rejected")
        return
    result = validate_plan(candidate, CATALOG, user_inputs={"start": 1})
    assert not result.ok
    assert kind in {i.kind for i in result.issues}, (kind, result.summary())
    figures.add("bad_inputs.rejected")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
BINDINGS = st.sampled_from(
    [
        "${user.x}",
        "${s0.result}",
        "${s1.nope.0}",
        "${",
        "$${user.x}",
        "${ s0.result }",
        "${a.b.c.d}",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.sampled_from(["s0", "s1", "s2", "bad id", ""]),
                "action": st.sampled_from([*SIGNATURES, "nope", ""]),
                "inputs": st.dictionaries(
                    st.sampled_from(["x", "a", "b", "n", "items", "zzz"]),
                    JSON | BINDINGS,
                    max_size=4,
                ),
            }
        ),
        max_size=6,
    )
)
def test_the_validator_never_raises_on_arbitrary_plans(steps: list[dict[str, Any]]) -> None:
    figures.add("fuzzed_plans.generated")
    try:
        try:
            candidate = CandidatePlan.from_dict({"steps": steps})
        except PlanDecodingError:
            figures.add("fuzzed_plans.rejected")
            return
        result = validate_plan(candidate, CATALOG)
    except Exception:
        figures.add("fuzzed_plans.crashes")
        raise
    figures.add("fuzzed_plans.accepted" if result.ok else "fuzzed_plans.rejected")
    assert result.ok == (not result.issues and not result.missing_user_bindings)


@pytest.mark.usefixtures("prefect_server")
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(valid_plans(), st.sampled_from(MUTATIONS), st.randoms(use_true_random=False))
def test_the_executor_never_runs_a_rejected_plan(
    plan: dict[str, Any], how: str, rng: random.Random
) -> None:
    broken, _ = mutate(plan, how, rng)
    try:
        candidate = CandidatePlan.from_dict(broken)
    except PlanDecodingError:
        return

    async def attempt() -> tuple[int, int]:
        async with get_client() as client:
            before = await client.count_flow_runs()
            with pytest.raises(PlanValidationError):
                await PlanExecutor(CATALOG).execute(candidate, user_inputs={"start": 1})
            return before, await client.count_flow_runs()

    before, after = asyncio.run(attempt())
    assert after == before
