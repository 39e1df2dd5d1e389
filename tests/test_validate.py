from __future__ import annotations

import sys
from typing import Any

import pytest
from prefect import flow

from prefect_aether import ActionCatalog, CandidatePlan, ValidationResult, validate_plan
from tests import sample_flows


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(sample_flows)
    return catalog


def check(catalog: ActionCatalog, steps: list[dict[str, Any]], **kwargs: Any) -> ValidationResult:
    return validate_plan(CandidatePlan.from_dict({"steps": steps}), catalog, **kwargs)


def kinds(result: ValidationResult) -> list[tuple[str, str | None, str | None]]:
    return [(i.kind, i.step_id, i.field) for i in result.issues]


LOAD = {"id": "load", "action": "load_csv", "inputs": {"path": "data.csv"}}


def test_valid_plan_any_order_with_levels(catalog: ActionCatalog) -> None:
    steps = [
        {"id": "report", "action": "write_report", "inputs": {"title": "t", "score": "${st.mean}"}},
        {"id": "st", "action": "compute_stats", "inputs": {"values": "${sp.train}"}},
        {"id": "sp", "action": "split_data", "inputs": {"items": [1, 2, 3]}},
        {"id": "count", "action": "count_rows", "inputs": {"rows": "${load.rows}"}},
        LOAD,
    ]
    result = check(catalog, steps)
    assert result.ok, result.summary()
    assert result.levels == [["sp", "load"], ["st", "count"], ["report"]]
    assert result.summary() == "Plan is valid."


def test_empty_plan(catalog: ActionCatalog) -> None:
    result = check(catalog, [])
    assert kinds(result) == [("empty_plan", None, None)]
    assert result.has_structural_errors
    assert not result.ok
    assert not result.is_partial_ok()


def test_plan_too_large_is_an_issue_not_a_crash(catalog: ActionCatalog) -> None:
    steps = [{**LOAD, "id": f"s{i}"} for i in range(6)]
    result = check(catalog, steps, max_steps=5)
    assert kinds(result) == [("plan_too_large", None, None)]
    assert result.issues[0].details == {"steps": 6, "max_steps": 5}


def test_max_steps_defaults_to_the_setting(
    catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_MAX_STEPS", "2")
    steps = [{**LOAD, "id": f"s{i}"} for i in range(3)]
    assert kinds(check(catalog, steps)) == [("plan_too_large", None, None)]


def test_duplicate_step_id(catalog: ActionCatalog) -> None:
    result = check(catalog, [LOAD, {**LOAD, "inputs": {"path": "other.csv"}}])
    assert kinds(result) == [("duplicate_step_id", "load", None)]
    assert result.issues[0].details["positions"] == [0, 1]


@pytest.mark.parametrize("step_id", ["user", "a b", "../x", "na\u200bme", "é", ""])
def test_invalid_step_id(catalog: ActionCatalog, step_id: str) -> None:
    result = check(catalog, [{**LOAD, "id": step_id}])
    assert kinds(result) == [("invalid_step_id", step_id, "id")]


def test_unknown_action_with_suggestions(catalog: ActionCatalog) -> None:
    result = check(catalog, [{"id": "a", "action": "load_cvs", "inputs": {}}])
    assert kinds(result) == [("unknown_action", "a", "action")]
    assert result.issues[0].details["suggestions"][0] == "load_csv"
    assert "Did you mean 'load_csv'" in result.issues[0].message


def test_action_outside_flow_ids_is_unknown() -> None:
    catalog = ActionCatalog()
    catalog.register(sample_flows.count_rows, flow_id="a")
    catalog.register(sample_flows.split_data, flow_id="b")
    step = {"id": "s", "action": "split_data", "inputs": {"items": [1]}}
    assert check(catalog, [step]).ok
    result = check(catalog, [step], flow_ids=["a"])
    assert kinds(result) == [("unknown_action", "s", "action")]
    assert "not available" in result.issues[0].message


def test_unknown_input(catalog: ActionCatalog) -> None:
    result = check(catalog, [{**LOAD, "inputs": {"path": "x", "pth": "y"}}])
    assert kinds(result) == [("unknown_input", "load", "pth")]
    assert result.issues[0].details["suggestions"] == ["path"]


def test_missing_input_lists_candidate_producers(catalog: ActionCatalog) -> None:
    result = check(catalog, [{"id": "c", "action": "count_rows", "inputs": {}}])
    assert kinds(result) == [("missing_input", "c", "rows")]
    candidates = result.issues[0].details["candidates"]
    assert candidates[0] == {"action": "load_csv", "output": "rows", "score": 1.0}
    assert all(c["action"] != "compute_stats" for c in candidates)  # outputs are numbers
    assert "load_csv.rows" in result.issues[0].message


def test_missing_input_points_at_plan_steps_that_can_provide_it(catalog: ActionCatalog) -> None:
    result = check(catalog, [LOAD, {"id": "c", "action": "count_rows", "inputs": {}}])
    assert result.issues[0].details["plan_bindings"] == ["${load.rows}"]


def test_unknown_step_nested_in_lists_and_dicts(catalog: ActionCatalog) -> None:
    steps = [
        LOAD,
        {
            "id": "r",
            "action": "write_report",
            "inputs": {
                "title": "t",
                "score": 1,
                "notes": {"a": "${ghost.result}", "b": "${load.row_count}"},
            },
        },
        {"id": "s", "action": "split_data", "inputs": {"items": [1, "${phantom.result}"]}},
    ]
    result = check(catalog, steps)
    assert kinds(result) == [
        ("unknown_step", "r", "notes.a"),
        ("type_mismatch", "r", "notes.b"),
        ("unknown_step", "s", "items.1"),
    ]


def test_unknown_output_and_bad_paths(catalog: ActionCatalog) -> None:
    steps = [
        LOAD,
        {"id": "c1", "action": "count_rows", "inputs": {"rows": "${load.result}"}},
        {"id": "c2", "action": "count_rows", "inputs": {"rows": "${load.rows.0.x}"}},
        {"id": "sp", "action": "split_data", "inputs": {"items": [1]}},
        {"id": "st", "action": "compute_stats", "inputs": {"values": "${sp.train.oops}"}},
        {"id": "rep", "action": "write_report", "inputs": {"title": "${st.mean.x}", "score": 1}},
    ]
    result = check(catalog, steps)
    assert kinds(result) == [
        ("unknown_output", "c1", "rows"),
        ("type_mismatch", "c2", "rows"),
        ("unknown_output", "st", "values"),
        ("unknown_output", "rep", "title"),
    ]
    assert result.issues[0].details["outputs"] == ["rows", "row_count"]


def test_dotted_path_into_known_schema_is_typed(catalog: ActionCatalog) -> None:
    steps = [
        {"id": "r", "action": "write_report", "inputs": {"title": "t", "score": 2}},
        {"id": "r2", "action": "write_report", "inputs": {"title": "${r.tags.0}", "score": 1}},
        {
            "id": "r3",
            "action": "write_report",
            "inputs": {"title": "${r.tags.0}", "score": "${r.tags.1}"},
        },
    ]
    result = check(catalog, steps)
    assert kinds(result) == [("type_mismatch", "r3", "score")]
    assert "gives string but score expects number" in result.issues[0].message


def test_type_mismatch_rules(catalog: ActionCatalog) -> None:
    steps = [
        LOAD,
        {"id": "sp", "action": "split_data", "inputs": {"items": "${load.row_count}"}},
        {
            "id": "ok_int_to_number",
            "action": "write_report",
            "inputs": {"title": "t", "score": "${load.row_count}"},
        },
        {"id": "items_mismatch", "action": "split_data", "inputs": {"items": "${load.rows}"}},
        {"id": "any_source", "action": "split_data", "inputs": {"items": "${nd.result}"}},
        {"id": "nd", "action": "no_docs", "inputs": {"x": "${load.rows}"}},
        {"id": "st", "action": "compute_stats", "inputs": {"values": "${sp.train}"}},
    ]
    result = check(catalog, steps)
    assert kinds(result) == [
        ("type_mismatch", "sp", "items"),
        ("type_mismatch", "items_mismatch", "items"),
    ]
    assert result.issues[0].details["expected"]["type"] == "array"


def test_self_reference_and_cycles_report_the_path(catalog: ActionCatalog) -> None:
    result = check(
        catalog, [{"id": "c", "action": "count_rows", "inputs": {"rows": "${c.result}"}}]
    )
    assert [i.kind for i in result.issues] == ["type_mismatch", "cycle"]
    assert result.issues[1].details["cycle"] == ["c", "c"]
    steps = [
        {"id": "a", "action": "split_data", "inputs": {"items": "${c.train}"}},
        {"id": "b", "action": "split_data", "inputs": {"items": "${a.train}"}},
        {"id": "c", "action": "split_data", "inputs": {"items": "${b.train}"}},
        {"id": "d", "action": "split_data", "inputs": {"items": "${c.test}"}},
        {"id": "free", "action": "split_data", "inputs": {"items": [1]}},
    ]
    result = check(catalog, steps)
    assert kinds(result) == [("cycle", result.issues[0].step_id, None)]
    cycle = result.issues[0].details["cycle"]
    assert cycle[0] == cycle[-1]
    assert sorted(set(cycle)) == ["a", "b", "c"]
    assert result.levels == []


def test_invalid_literals_use_prefect_coercions(catalog: ActionCatalog) -> None:
    ok = {
        **LOAD,
        "inputs": {"path": "x", "limit": "3", "mode": "fast", "options": {"skip_rows": "1"}},
    }
    assert check(catalog, [ok]).ok
    bad = {
        **LOAD,
        "inputs": {"path": 5, "limit": "three", "mode": "slow", "options": {"skip_rows": "x"}},
    }
    result = check(catalog, [bad])
    assert kinds(result) == [
        ("invalid_literal", "load", "path"),
        ("invalid_literal", "load", "limit"),
        ("invalid_literal", "load", "mode"),
        ("invalid_literal", "load", "options"),
    ]
    assert "valid string" in result.issues[0].message
    assert "skip_rows" in result.issues[3].message
    assert result.issues[1].details["expected"]["anyOf"][0] == {"type": "integer"}


def test_user_values_are_checked_and_missing_ones_make_a_partial_plan(
    catalog: ActionCatalog,
) -> None:
    steps = [
        {
            "id": "load",
            "action": "load_csv",
            "inputs": {"path": "${user.path}", "limit": "${user.limit}"},
        },
        {
            "id": "sp",
            "action": "split_data",
            "inputs": {"items": ["${user.first}", 2], "ratio": "${user.ratio}"},
        },
    ]
    partial = check(catalog, steps)
    assert partial.is_partial_ok()
    assert not partial.ok
    assert partial.issues == []
    assert partial.missing_user_bindings == {
        "path": ["load.path"],
        "limit": ["load.limit"],
        "first": ["sp.items.0"],
        "ratio": ["sp.ratio"],
    }
    assert "user.path is needed by load.path" in partial.summary()
    values = {"path": "x.csv", "limit": "7", "first": 1, "ratio": "high"}
    result = check(catalog, steps, user_inputs=values)
    assert kinds(result) == [("invalid_literal", "sp", "ratio")]
    assert result.issues[0].details["user_key"] == "ratio"
    assert "User input 'ratio'" in result.issues[0].message
    values["ratio"] = 0.5
    assert check(catalog, steps, user_inputs=values).ok


def test_invalid_bindings_are_reported_where_they_are(catalog: ActionCatalog) -> None:
    steps = [
        {**LOAD, "inputs": {"path": "${load.}"}},
        {"id": "sp", "action": "split_data", "inputs": {"items": [1, "n=${user.n}"]}},
    ]
    result = check(catalog, steps)
    assert kinds(result) == [
        ("invalid_binding", "load", "path"),
        ("invalid_binding", "sp", "items.1"),
    ]
    escaped = {**LOAD, "inputs": {"path": "$${HOME}/x.csv"}}
    assert check(catalog, [escaped]).ok


@pytest.mark.parametrize(
    ("extras", "field"),
    [
        ({"retries": -1}, "extras.retries"),
        ({"retries": True}, "extras.retries"),
        ({"retry_delay_seconds": [1, -2]}, "extras.retry_delay_seconds"),
        ({"timeout_seconds": 0}, "extras.timeout_seconds"),
        ({"run_as": "thread"}, "extras.run_as"),
    ],
)
def test_invalid_policy(catalog: ActionCatalog, extras: dict[str, Any], field: str) -> None:
    result = check(catalog, [{**LOAD, "extras": extras}])
    assert kinds(result) == [("invalid_policy", "load", field)]


def test_valid_policy(catalog: ActionCatalog) -> None:
    extras = {
        "retries": 2,
        "retry_delay_seconds": [1, 2.5],
        "timeout_seconds": 30,
        "run_as": "subflow",
    }
    assert check(catalog, [{**LOAD, "extras": extras}]).ok


def test_every_problem_is_reported_at_once(catalog: ActionCatalog) -> None:
    steps = [
        {"id": "a", "action": "nope", "inputs": {"x": "${b.result}"}},
        {"id": "b", "action": "count_rows", "inputs": {"rows": 5, "extra": 1}},
        {"id": "b", "action": "count_rows", "inputs": {}},
    ]
    result = check(catalog, steps)
    assert sorted(i.kind for i in result.issues) == [
        "duplicate_step_id",
        "invalid_literal",
        "unknown_action",
        "unknown_input",
    ]
    summary = result.summary()
    assert summary.startswith("Plan is invalid:")
    assert "[unknown_input] step=b field=extra" in summary


# -- regressions for the aethergraph gaps listed in DESIGN --------------------------------


@flow(name="inc", version="1")
def inc(x: int) -> int:
    """Add one."""
    return x + 1


def chain(n: int) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"id": "s0", "action": "inc", "inputs": {"x": 0}}]
    steps += [
        {"id": f"s{i}", "action": "inc", "inputs": {"x": f"${{s{i - 1}.result}}"}}
        for i in range(1, n)
    ]
    return steps


@pytest.fixture(scope="module")
def inc_catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register(inc)
    return catalog


def test_reverse_listed_2000_step_chain_is_ok(inc_catalog: ActionCatalog) -> None:
    result = check(inc_catalog, chain(2_000)[::-1], max_steps=2_000)
    assert result.ok
    assert result.levels[0] == ["s0"]
    assert result.levels[-1] == ["s1999"]
    assert len(result.levels) == 2_000


def test_100k_step_chain_has_no_recursion_limit(inc_catalog: ActionCatalog) -> None:
    assert sys.getrecursionlimit() < 100_000
    steps = chain(100_000)
    steps[0]["inputs"]["x"] = f"${{s{len(steps) - 1}.result}}"  # close the loop: worst case
    result = check(inc_catalog, steps[::-1], max_steps=100_000)
    assert [i.kind for i in result.issues] == ["cycle"]
    assert len(result.issues[0].details["cycle"]) == 100_001
    steps[0]["inputs"]["x"] = 0
    assert check(inc_catalog, steps, max_steps=100_000).ok


def test_after_edges_order_steps_and_are_checked(catalog: ActionCatalog) -> None:
    notify_a = {"id": "a", "action": "notify", "inputs": {"message": "first"}}
    notify_b = {"id": "b", "action": "notify", "inputs": {"message": "second"}, "after": ["a"]}
    result = check(catalog, [notify_b, notify_a])
    assert result.ok, result.summary()
    assert result.levels == [["a"], ["b"]]
    unknown = check(catalog, [notify_a, {**notify_b, "after": ["a", "zz"]}])
    assert kinds(unknown) == [("unknown_step", "b", "after.1")]
    # A cycle across a data edge and an order edge is a cycle.
    mixed = check(
        catalog,
        [
            {"id": "sp", "action": "split_data", "inputs": {"items": [1]}, "after": ["st"]},
            {"id": "st", "action": "compute_stats", "inputs": {"values": "${sp.train}"}},
        ],
    )
    assert [i.kind for i in mixed.issues] == ["cycle"]
    assert set(mixed.issues[0].details["cycle"]) == {"sp", "st"}
    itself = check(catalog, [{**notify_a, "after": ["a"]}])
    assert [i.kind for i in itself.issues] == ["cycle"]


def test_after_edges_change_the_plan_id_and_round_trip() -> None:
    base = {"id": "a", "action": "notify", "inputs": {"message": "x"}}
    other = {"id": "b", "action": "notify", "inputs": {"message": "y"}}
    plain = CandidatePlan.from_dict({"steps": [base, other]})
    ordered = CandidatePlan.from_dict({"steps": [base, {**other, "after": ["a"]}]})
    assert plain.plan_id != ordered.plan_id
    assert CandidatePlan.from_dict(ordered.to_dict()) == ordered
    assert "after" in CandidatePlan.json_schema()["properties"]["steps"]["items"]["properties"]


def test_inputs_nested_100000_deep_are_an_issue_not_a_crash(catalog: ActionCatalog) -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    deep_dict: Any = {}
    for _ in range(100_000):
        deep_dict = {"a": deep_dict}
    step = {"id": "c", "action": "count_rows", "inputs": {"rows": "${user.rows}"}}
    for value in (deep, deep_dict):
        result = check(catalog, [step], user_inputs={"rows": value})
        assert [(i.kind, i.field) for i in result.issues] == [("invalid_literal", "rows")]
        assert "max_input_depth" in result.issues[0].message
    literal = check(catalog, [{**step, "inputs": {"rows": deep}}])
    assert [i.kind for i in literal.issues] == ["invalid_literal"]
