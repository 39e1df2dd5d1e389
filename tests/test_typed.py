"""A user's own flows, typed end to end: models in and out, whole outputs, structural
wiring checks, resume of model-typed steps, JSON previews (tests/typed_flows.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from prefect_aether import (
    ActionCatalog,
    CandidatePlan,
    HeuristicPlanner,
    PlanExecutor,
    PlanningContext,
    parse_binding,
    validate_plan,
)
from prefect_aether._internal.text import preview
from tests import typed_flows
from tests.artifacts import results
from tests.typed_flows import Manifest, Shipment, Speed, Window

CSV = """parcel_id,carrier,shipped_on,weight_kg,fee
p1,dhl,2026-11-02,2.5,3.10
p2,ups,2026-11-02,1.0,2.00
p3,dhl,2026-11-03,4.0,5.25
p4,dhl,2026-11-02,0.5,1.00
"""


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(typed_flows)
    return catalog


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "parcels.csv").write_text(CSV)
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("AETHER_TEST_RUNS", str(runs))
    return tmp_path


def runs_of(folder: Path, name: str) -> int:
    path = folder / "runs" / name
    return len(path.read_text()) if path.exists() else 0


def chain(source: str = "${user.source}") -> CandidatePlan:
    return CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "read", "action": "read-shipments", "inputs": {"source": source}},
                {
                    "id": "manifest",
                    "action": "build-manifest",
                    "inputs": {"parcels": "${read}", "day": "2026-11-02"},
                },
                {
                    "id": "loads",
                    "action": "load-per-carrier",
                    "inputs": {"manifest": "${manifest}"},
                },
                {"id": "top", "action": "heaviest", "inputs": {"loads": "${loads}"}},
            ]
        }
    )


# -- catalog ---------------------------------------------------------------------------


def test_a_structured_return_gives_its_fields_and_the_whole_value(
    catalog: ActionCatalog,
) -> None:
    spec = catalog.get("build-manifest")
    assert spec is not None
    assert [o.name for o in spec.outputs] == ["day", "parcels", "carriers"]
    assert spec.returns is not None
    whole = spec.returns.json_schema
    assert whole["type"] == "object"
    assert set(whole["required"]) == {"day", "parcels", "carriers"}
    assert whole["properties"]["parcels"]["items"]["properties"]["weight_kg"]["type"] == "number"
    # An unstructured return: the whole value is `result`.
    quote = catalog.get("quote")
    assert quote is not None
    assert [o.name for o in quote.outputs] == ["result"]
    assert quote.returns is not None
    assert quote.returns.type == "string"
    # Rendered for the LLM: the whole output, bound as ${step}.
    text = catalog.render([spec])
    assert "returns (${step}): object Manifest" in text or "returns (${step}): object" in text


def test_whole_output_bindings_parse() -> None:
    whole = parse_binding("${manifest}")
    assert (whole.kind, whole.step_id, whole.output, whole.path) == (
        "step_output",
        "manifest",
        None,
        (),
    )
    assert whole.reference == "manifest"
    field = parse_binding("${manifest.parcels.0}")
    assert (field.output, field.path) == ("parcels", (0,))


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "field", "value", "ok"),
    [
        ("build-manifest", "parcels", [{"parcel_id": "p", "carrier": "c"}], False),
        (
            "build-manifest",
            "parcels",
            [{"parcel_id": "p", "carrier": "c", "shipped_on": "2026-11-02", "weight_kg": 1}],
            True,
        ),
        (
            "load-per-carrier",
            "manifest",
            {"day": "not a day", "parcels": [], "carriers": []},
            False,
        ),
        (
            "load-per-carrier",
            "manifest",
            {"day": "2026-11-02", "parcels": [], "carriers": []},
            True,
        ),
        ("in-window", "window", {"start": "2026-11-01", "end": "2026-11-30"}, True),
        ("in-window", "window", {"start": "2026-11-01"}, False),
        ("quote", "totals", {"parcels": 2, "weight_kg": 1.5}, True),
        ("quote", "totals", {"parcels": "many", "weight_kg": 1.5}, False),
        ("quote", "speed", "express", True),
        ("quote", "speed", "overnight", False),
        ("quote", "currency", "GBP", False),
        ("quote", "rate", "2.25", True),
        ("quote", "rate", "cheap", False),
        ("quote", "batch", str(uuid.uuid4()), True),
        ("quote", "batch", "not-a-uuid", False),
        ("read-shipments", "source", "parcels.csv", True),
        ("read-shipments", "since", "2026-13-45", False),
    ],
)
def test_literals_and_user_values_are_checked_with_the_parameters_own_type(
    catalog: ActionCatalog, action: str, field: str, value: Any, ok: bool
) -> None:
    spec = catalog.get(action)
    assert spec is not None
    inputs: dict[str, Any] = {
        s.name: "${user." + s.name + "}" for s in spec.inputs if s.required and s.name != field
    }
    user = dict.fromkeys(inputs, "x")
    for as_user in (False, True):
        given = {**inputs, field: "${user.value}" if as_user else value}
        plan = CandidatePlan.from_dict({"steps": [{"id": "s", "action": action, "inputs": given}]})
        result = validate_plan(plan, catalog, user_inputs={**user, "value": value})
        wrong = [i for i in result.issues if i.field == field]
        if ok:
            assert wrong == [], result.summary()
        else:
            assert [i.kind for i in wrong] == ["invalid_literal"], result.summary()
            assert wrong[0].step_id == "s"
            assert field in wrong[0].message


def test_whole_outputs_wire_by_structure(catalog: ActionCatalog) -> None:
    result = validate_plan(chain(), catalog, user_inputs={"source": "parcels.csv"})
    assert result.ok, result.summary()
    assert result.levels == [["read"], ["manifest"], ["loads"], ["top"]]
    # `${s}` and `${s.result}` are the same value for an unstructured return.
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "q",
                    "action": "quote",
                    "inputs": {"totals": {"parcels": 1, "weight_kg": 2}},
                },
                {
                    "id": "r",
                    "action": "quote",
                    "inputs": {"totals": {"parcels": 1, "weight_kg": 2}},
                },
                {
                    "id": "w",
                    "action": "write-manifest",
                    "inputs": {
                        "manifest": {"day": "2026-11-02", "parcels": [], "carriers": ["${q}"]},
                        "dest": "${r.result}",
                    },
                },
            ]
        }
    )
    assert validate_plan(plan, catalog).ok


@pytest.mark.parametrize(
    ("producer", "binding", "consumer", "field"),
    [
        # A dict[str, float] is not a model with other required fields.
        ("weights-by-carrier", "${p}", "load-per-carrier", "manifest"),
        # One model is not a list of them.
        ("heaviest", "${p}", "heaviest", "loads"),
        # A list of one model is not a list of another.
        ("load-per-carrier", "${p}", "build-manifest", "parcels"),
        # A NamedTuple of dates is not a TypedDict of counts.
        ("span-of", "${p}", "quote", "totals"),
        # A field's own type still counts: a list of strings is not a date.
        ("build-manifest", "${p.carriers}", "build-manifest", "day"),
    ],
)
def test_wiring_between_incompatible_structures_is_a_type_mismatch(
    catalog: ActionCatalog, producer: str, binding: str, consumer: str, field: str
) -> None:
    manifest = {"day": "2026-11-02", "parcels": [], "carriers": []}
    fillers: dict[str, Any] = {
        "manifest": manifest,
        "loads": [],
        "parcels": [],
        "day": "2026-11-02",
        "totals": {"parcels": 0, "weight_kg": 0},
        "window": {"start": "2026-11-01", "end": "2026-11-02"},
    }
    producer_spec, consumer_spec = catalog.get(producer), catalog.get(consumer)
    assert producer_spec is not None
    assert consumer_spec is not None
    producer_inputs = {s.name: fillers[s.name] for s in producer_spec.inputs if s.required}
    consumer_inputs = {s.name: fillers[s.name] for s in consumer_spec.inputs if s.required}
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "p", "action": producer, "inputs": producer_inputs},
                {"id": "c", "action": consumer, "inputs": {**consumer_inputs, field: binding}},
            ]
        }
    )
    result = validate_plan(plan, catalog)
    assert [(i.kind, i.step_id, i.field) for i in result.issues] == [
        ("type_mismatch", "c", field)
    ], result.summary()


def test_a_step_that_returns_nothing_has_no_whole_output(catalog: ActionCatalog) -> None:
    plan = chain()
    manifest = {"day": "2026-11-02", "parcels": [], "carriers": []}
    plan.steps.append(
        chain()
        .steps[0]
        .model_copy(
            update={
                "id": "keep",
                "action": "archive",
                "inputs": {"manifest": manifest, "dest": "a"},
            }
        )
    )
    plan.steps[3].inputs["loads"] = "${keep}"
    result = validate_plan(plan, catalog, user_inputs={"source": "x"})
    assert [(i.kind, i.field) for i in result.issues] == [("unknown_output", "loads")]
    assert "returns nothing" in result.issues[0].message


# -- planning --------------------------------------------------------------------------


async def test_the_heuristic_planner_wires_whole_models(catalog: ActionCatalog) -> None:
    goal = "read the shipments from parcels.csv, build the manifest, then find the heaviest load"
    result = await HeuristicPlanner(catalog).plan(
        PlanningContext(goal=goal, user_inputs={"day": "2026-11-02"})
    )
    assert result.plan is not None
    steps = {s.action: s for s in result.plan.steps}
    assert list(steps) == ["read-shipments", "build-manifest", "load-per-carrier", "heaviest"]
    ids = {s.action: s.id for s in result.plan.steps}
    assert steps["build-manifest"].inputs["parcels"] == f"${{{ids['read-shipments']}}}"
    assert steps["load-per-carrier"].inputs["manifest"] == f"${{{ids['build-manifest']}}}"
    assert steps["heaviest"].inputs["loads"] == f"${{{ids['load-per-carrier']}}}"
    assert result.validation is not None
    assert result.validation.ok


# -- execution -------------------------------------------------------------------------

pytestmark_server = pytest.mark.usefixtures("prefect_server")


@pytestmark_server
@pytest.mark.parametrize("run_as", ["task", "subflow"])
async def test_models_cross_steps_as_the_consumers_type(
    catalog: ActionCatalog, data: Path, run_as: str
) -> None:
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                *chain().to_dict()["steps"],
                {
                    "id": "window",
                    "action": "in-window",
                    "inputs": {
                        "parcels": "${read}",
                        "window": {"start": "2026-11-01", "end": "2026-11-02"},
                    },
                },
                {
                    "id": "price",
                    "action": "quote",
                    "inputs": {"totals": "${window}", "speed": "express", "rate": "2"},
                },
                {"id": "span", "action": "span-of", "inputs": {"parcels": "${read}"}},
                {
                    "id": "write",
                    "action": "write-manifest",
                    "inputs": {"manifest": "${manifest}", "dest": str(data / "manifest.json")},
                },
            ]
        }
    )
    result = await PlanExecutor(catalog, run_as=run_as).execute(
        plan, user_inputs={"source": str(data / "parcels.csv")}
    )
    assert result.ok, result.errors
    assert result.step_outputs["top"]["carrier"] == "dhl"
    assert result.step_outputs["top"]["weight_kg"] == 3.0
    assert result.step_outputs["price"]["result"] == "16.00 EUR"
    assert result.step_outputs["span"]["first"] == dt.date(2026, 11, 2)
    written = Manifest.model_validate_json((data / "manifest.json").read_text())
    assert [p.parcel_id for p in written.parcels] == ["p1", "p2", "p4"]


@pytestmark_server
async def test_resume_never_runs_a_finished_model_typed_step_again(
    catalog: ActionCatalog, data: Path
) -> None:
    plan = chain()
    more = [
        # A dataclass input, then a TypedDict passed whole.
        {
            "id": "window",
            "action": "in-window",
            "inputs": {
                "parcels": "${read}",
                "window": {"start": "2026-11-01", "end": "2026-11-02"},
            },
        },
        {"id": "price", "action": "quote", "inputs": {"totals": "${window}", "rate": "2.5"}},
        {"id": "late", "action": "read-shipments", "inputs": {"source": "${user.late_source}"}},
    ]
    plan = CandidatePlan.from_dict({"steps": [*plan.to_dict()["steps"], *more]})
    executor = PlanExecutor(catalog, fail_fast=False)
    inputs = {"source": str(data / "parcels.csv"), "late_source": str(data / "missing.csv")}
    first = await executor.execute(plan, user_inputs=inputs)
    assert not first.ok
    assert set(first.errors) == {"late"}
    counts = {a: runs_of(data, a) for a in ("read_shipments", "build_manifest", "heaviest")}
    assert counts == {"read_shipments": 2, "build_manifest": 1, "heaviest": 1}
    (data / "missing.csv").write_text(CSV)
    second = await executor.execute(plan, user_inputs=inputs, resume=first.execution_id)
    assert second.ok, second.errors
    assert sorted(second.reused) == ["loads", "manifest", "price", "read", "top", "window"]
    assert runs_of(data, "read_shipments") == 3  # only `late` ran again
    for action in ("build_manifest", "load_per_carrier", "heaviest", "in_window", "quote"):
        assert runs_of(data, action) == 1, action
    # The reused whole model reaches its consumer as the consumer's type.
    assert second.step_outputs["top"] == first.step_outputs["top"]


@pytestmark_server
async def test_previews_are_json_in_the_results_artifact_and_events(
    catalog: ActionCatalog, data: Path
) -> None:
    events: list[Any] = []
    plan = chain()
    result = await PlanExecutor(catalog).execute(
        plan, user_inputs={"source": str(data / "parcels.csv")}, on_event=events.append
    )
    assert result.ok, result.errors
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"aether-results-{plan.plan_id}"])
            )
        )
    mine = [a for a in artifacts if str(a.flow_run_id) == result.flow_run_id]
    read_row = results(str(mine[0].data))["read"]
    assert read_row["output"].startswith('{"result":[{"carrier":"dhl"')
    assert "parcel_id=" not in read_row["output"]
    assert "datetime.date" not in read_row["output"]


def test_previews_of_models_dataclasses_dates_decimals_and_enums_are_json() -> None:
    shipment = Shipment(
        parcel_id="p1",
        carrier="dhl",
        shipped_on=dt.date(2026, 11, 2),
        weight_kg=1,
        fee=Decimal("2.50"),
    )
    assert preview(shipment) == (
        '{"carrier":"dhl","fee":"2.50","parcel_id":"p1","shipped_on":"2026-11-02","weight_kg":1.0}'
    )
    assert preview({"w": Window(dt.date(2026, 1, 1), dt.date(2026, 1, 2)), "s": Speed.express}) == (
        '{"s":"express","w":{"end":"2026-01-02","start":"2026-01-01"}}'
    )


def test_parameter_docs_are_read_in_google_numpy_and_sphinx_styles() -> None:
    from prefect import flow

    @flow
    def numpy_style(path: str, limit: int = 10) -> int:
        """Count lines.

        Parameters
        ----------
        path : str
            The file to count.
        limit : int
            Stop after this many.

        Returns
        -------
        int
            How many lines.
        """
        return 0

    @flow
    def sphinx_style(path: str) -> int:
        """Count words.

        :param path: The file whose words to count.
        :returns: How many words.
        """
        return 0

    catalog = ActionCatalog()
    numpy_spec, sphinx_spec = catalog.register(numpy_style), catalog.register(sphinx_style)
    assert [(s.name, s.description) for s in numpy_spec.inputs] == [
        ("path", "The file to count."),
        ("limit", "Stop after this many."),
    ]
    assert numpy_spec.description == "Count lines."
    assert numpy_spec.outputs[0].description == "How many lines."
    assert sphinx_spec.inputs[0].description == "The file whose words to count."
    assert sphinx_spec.inputs[0].json_schema["description"] == "The file whose words to count."
    assert sphinx_spec.description == "Count words."
