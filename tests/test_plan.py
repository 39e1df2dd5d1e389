from __future__ import annotations

import json
from typing import Any

import pytest

from prefect_aether import (
    ActionCatalog,
    BindingError,
    CandidatePlan,
    PlanDecodingError,
    PlanStep,
    iter_bindings,
    map_bindings,
    parse_binding,
)
from tests import sample_flows


def test_parse_binding_kinds() -> None:
    external = parse_binding("${user.dataset_path}")
    assert (external.kind, external.key, external.path) == ("external", "dataset_path", ())
    output = parse_binding("${load.result}")
    assert (output.kind, output.step_id, output.output, output.path) == (
        "step_output",
        "load",
        "result",
        (),
    )
    nested = parse_binding("${load.rows.0.name}")
    assert nested.path == (0, "name")
    assert nested.reference == "load.rows.0.name"
    for literal in (3, None, [1], "plain", "cost: $5", "{x}", "$x.y"):
        binding = parse_binding(literal)
        assert (binding.kind, binding.value) == ("literal", literal)
    assert parse_binding("$${not.a.binding}").value == "${not.a.binding}"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("${user}", "needs the name"),
        ("${secret}", "needs the name"),
        ("${}", "malformed"),
        ("${load.}", "malformed"),
        ("${load..x}", "malformed"),
        ("${lo ad.x}", "malformed"),
        ("${../../etc.passwd}", "malformed"),
        ("prefix ${load.result}", "whole string"),
        ("${a.b}${c.d}", "whole string"),
        ("${a.b", "whole string"),
    ],
)
def test_malformed_bindings_raise(raw: str, fragment: str) -> None:
    with pytest.raises(BindingError, match=fragment):
        parse_binding(raw)


def test_iter_and_map_bindings_reach_nested_values() -> None:
    value = {"a": ["${s.out}", {"b": "${user.k}"}, 3], "c": "text"}
    found = [(loc, b.reference) for loc, b in iter_bindings(value)]
    assert found == [(("a", 0), "s.out"), (("a", 1, "b"), "user.k")]
    mapped = map_bindings(value, lambda b: f"<{b.reference}>")
    assert mapped == {"a": ["<s.out>", {"b": "<user.k>"}, 3], "c": "text"}
    assert value["a"][0] == "${s.out}"  # the original is untouched


def test_walkers_have_no_recursion_limit() -> None:
    depth = 50_000
    value: Any = "${deep.result}"
    for _ in range(depth):
        value = [value]
    ((location, binding),) = list(iter_bindings(value))
    assert len(location) == depth
    assert binding.step_id == "deep"
    mapped = map_bindings(value, lambda b: 7)
    for _ in range(depth):
        mapped = mapped[0]
    assert mapped == 7


def test_round_trip_and_plan_id_stability() -> None:
    data = {
        "steps": [
            {"id": "a", "action": "load_csv", "inputs": {"path": "x.csv", "limit": 3}},
            {"id": "b", "action": "count_rows", "inputs": {"rows": "${a.rows}"}},
        ]
    }
    plan = CandidatePlan.from_dict(data)
    again = CandidatePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.plan_id == plan.plan_id
    reordered = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "b", "action": "count_rows", "inputs": {"rows": "${a.rows}"}},
                {"id": "a", "action": "load_csv", "inputs": {"limit": 3, "path": "x.csv"}},
            ]
        }
    )
    assert reordered.plan_id == plan.plan_id
    changed = CandidatePlan.from_dict(
        {"steps": [data["steps"][0], {**data["steps"][1], "extras": {"retries": 2}}]}
    )
    assert changed.plan_id != plan.plan_id
    assert len(plan.plan_id) == 16
    assert int(plan.plan_id, 16) >= 0


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "must be a JSON object"),
        ({}, "steps: Field required"),
        ({"steps": [{"action": "x"}]}, "steps.0.id: Field required"),
        ({"steps": [{"id": "a", "inputs": []}]}, "steps.0.inputs"),
        ({"steps": [{"id": "a", "why": "because"}]}, "steps.0.why: Extra inputs"),
    ],
)
def test_from_dict_names_the_bad_field(data: Any, fragment: str) -> None:
    with pytest.raises(PlanDecodingError, match=fragment) as info:
        CandidatePlan.from_dict(data)
    assert info.value.raw == json.dumps(data, separators=(",", ":"), sort_keys=True)


def test_resolve_actions_fills_both_directions() -> None:
    catalog = ActionCatalog()
    catalog.register(sample_flows.count_rows)
    plan = CandidatePlan(
        steps=[
            PlanStep(id="a", action="count_rows"),
            PlanStep(id="b", action_ref="flow:count_rows@1.0"),
            PlanStep(id="c", action="unknown"),
        ]
    )
    resolved = plan.resolve_actions(catalog)
    assert [(s.action, s.action_ref) for s in resolved.steps] == [
        ("count_rows", "flow:count_rows@1.0"),
        ("count_rows", "flow:count_rows@1.0"),
        ("unknown", None),
    ]
    assert plan.steps[0].action_ref is None  # a copy, not an in-place change


def test_json_schema_describes_the_plan_shape() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = CandidatePlan.json_schema()
    good = {"steps": [{"id": "a", "action": "x", "inputs": {"n": "${user.n}"}}]}
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"steps": [{"id": "a"}]}, schema)
