"""Each value in the slot the goal means, however the goal writes it: dates, codes in
capitals, separators said in words, splits and percentages, counts after "top", names
given with "as", values the user gives under other names, objects written out field by
field; and the step a clause asks for when it names both ends of a hand-off
(tests/value_flows.py, planned by the offline planner)."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_aether import ActionCatalog, HeuristicPlanner, PlanningContext, PlanResult
from prefect_aether.planning._goal import read_goal
from tests import value_flows


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(value_flows)
    return catalog


async def plan_for(
    catalog: ActionCatalog, goal: str, user_inputs: dict[str, Any] | None = None
) -> PlanResult:
    ctx = PlanningContext(goal=goal, user_inputs=user_inputs or {}, allow_partial_plans=True)
    return await HeuristicPlanner(catalog).plan(ctx)


def steps(result: PlanResult) -> list[tuple[str, dict[str, Any]]]:
    assert result.plan is not None, [e.message for e in result.events]
    return [(s.action, s.inputs) for s in result.plan.steps]


def test_dates_are_read_with_their_year_and_only_real_days() -> None:
    said = {
        "since March 3rd, 2025": "2025-03-03",
        "from 3 March 2025": "2025-03-03",
        "after 2025-3-3": "2025-03-03",
        "on the 1st of Sept 2024": "2024-09-01",
    }
    for text, day in said.items():
        dates = [r.value for r in read_goal(text).resources if r.kind == "date"]
        assert dates == [day], text
    # No year, or no such day: not a date (the numbers stay numbers).
    assert not [r for r in read_goal("since March 3rd").resources if r.kind == "date"]
    assert not [r for r in read_goal("on February 30 2025").resources if r.kind == "date"]


async def test_dates_codes_and_separators_in_words_go_to_their_inputs(
    catalog: ActionCatalog,
) -> None:
    result = await plan_for(
        catalog, "FR shipments shipped after March 3rd, 2025 from parcels.csv (semicolon-delimited)"
    )
    assert steps(result) == [
        ("read-shipments", {"source": "parcels.csv", "delimiter": ";"}),
        (
            "select-shipments",
            {"shipments": "${read_shipments}", "country": "FR", "shipped_after": "2025-03-03"},
        ),
    ]
    assert result.validation.ok
    # A code goes to the input whose docs say the clause's own words ("convert"); a
    # format written in capitals is no code.
    usd = await plan_for(catalog, "convert the CSV parcels.csv to USD")
    assert steps(usd)[-1] == (
        "reprice-shipments",
        {"shipments": "${read_shipments}", "target": "USD"},
    )
    tabs = await plan_for(catalog, "read parcels.csv, separated by tabs")
    assert steps(tabs) == [("read-shipments", {"source": "parcels.csv", "delimiter": "\t"})]


async def test_splits_percentages_and_counts_become_the_numbers_inputs_take(
    catalog: ActionCatalog,
) -> None:
    split = await plan_for(catalog, "read parcels.csv and split it 80/20 with seed 4")
    assert steps(split)[-1] == (
        "split-shipments",
        {"shipments": "${read_shipments}", "holdout_size": 0.2, "seed": 4},
    )
    # A percentage goes to a share (a default between 0 and 1) divided by 100.
    sla = await plan_for(catalog, "What's the SLA left for route-7 at a 99.5% target?")
    assert steps(sla) == [("sla-left", {"route": "route-7", "target": 0.995})]
    # "top 5" is how many to keep; the clause adds it to the step, not a second step.
    top = await plan_for(
        catalog, "Which countries sent the most? Use parcels.csv, top 5, and save them to top.csv"
    )
    assert steps(top) == [
        ("read-shipments", {"source": "parcels.csv"}),
        ("top-countries", {"shipments": "${read_shipments}", "n": 5}),
        # "them": what the step before made, written where the goal says.
        ("countries-to-csv", {"totals": "${top_countries}", "out_file": "top.csv"}),
    ]


async def test_a_name_given_with_as_goes_to_the_input_that_takes_it(
    catalog: ActionCatalog,
) -> None:
    result = await plan_for(
        catalog, "read parcels.csv, split it, fit the delay model and archive it as delay-q3"
    )
    fitted = dict(steps(result))["fit-delay-model"]
    # "Name the model is archived under": the clause "archive it as ..." meant it.
    assert fitted == {"sample": "${split_shipments}", "model_label": "delay-q3"}


async def test_user_values_under_other_names_are_used_not_asked_again(
    catalog: ActionCatalog,
) -> None:
    result = await plan_for(
        catalog,
        "read the export and log it under the run name I gave",
        {"export": "parcels.csv", "run": "r-9"},
    )
    assert steps(result) == [
        ("read-shipments", {"source": "${user.export}"}),
        ("log-shipping-run", {"run_name": "${user.run}", "shipments": "${read_shipments}"}),
    ]
    assert result.validation.ok


async def test_an_input_the_goal_asks_for_without_a_value_is_asked(
    catalog: ActionCatalog,
) -> None:
    result = await plan_for(catalog, "keep the shipments of a single country")
    assert steps(result)[-1] == (
        "select-shipments",
        {"shipments": "${read_shipments}", "country": "${user.country}"},
    )
    # Said with its value ("a 99.5% target"), nothing is asked.
    sla = await plan_for(catalog, "the SLA left for route-7 at a 99.5% target")
    assert "${user.target}" not in str(steps(sla))


async def test_a_clause_naming_both_ends_of_a_hand_off_asks_for_the_receiving_end(
    catalog: ActionCatalog,
) -> None:
    result = await plan_for(catalog, "load parcels.csv into the warehouse table parcels_raw")
    assert steps(result) == [
        ("read-shipments", {"source": "parcels.csv"}),
        ("store-shipments", {"shipments": "${read_shipments}", "table": "parcels_raw"}),
    ]


async def test_an_object_written_out_in_the_goal_is_a_literal(catalog: ActionCatalog) -> None:
    result = await plan_for(
        catalog,
        "Escalate the delay for route-7: delay is 42 min, late share 0.3, and it is not on time",
    )
    # Every field from the goal; the labels ("late share") are no steps of their own.
    assert steps(result) == [
        (
            "escalate-delay",
            {"report": {"route": "route-7", "delay_min": 42, "late_share": 0.3, "on_time": False}},
        )
    ]
    assert result.validation.ok
    # A field the goal does not give: a step makes the object, or the user is asked.
    partial = await plan_for(catalog, "Escalate the delay for route-7: late share 0.3")
    report = dict(steps(partial))["escalate-delay"]["report"]
    assert not isinstance(report, dict)


async def test_a_forecast_is_no_summary(catalog: ActionCatalog) -> None:
    result = await plan_for(catalog, "forecast next month's shipping prices per country")
    assert result.plan is None
    assert result.unserved == ["forecast next month's shipping prices per country"]


async def test_the_clause_verb_picks_the_action_that_does_it() -> None:
    from tests import chain_flows

    catalog = ActionCatalog()
    catalog.register_module(chain_flows)
    # "chart it" is charting; "file the chart" names a chart but files it.
    result = await plan_for(catalog, chain_flows.GOAL, {"city": "Oslo"})
    assert [action for action, _ in steps(result)] == [
        "fetch-weather",
        "tidy-weather",
        "score-weather",
        "chart-weather",
        "file-chart",
    ]
