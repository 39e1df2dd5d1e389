from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.exceptions import ParameterTypeError

from prefect_aether import ActionCatalog, ActionSpec, CatalogError
from tests import sample_flows


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(sample_flows)
    return catalog


def spec_of(catalog: ActionCatalog, name: str) -> ActionSpec:
    spec = catalog.get(name)
    assert spec is not None, name
    return spec


def slots(spec: ActionSpec, which: str = "inputs") -> dict[str, Any]:
    return {s.name: s for s in getattr(spec, which)}


# -- inputs -------------------------------------------------------------------------------


def test_inputs_come_from_prefect_parameter_schema(catalog: ActionCatalog) -> None:
    spec = spec_of(catalog, "load_csv")
    inputs = slots(spec)
    assert list(inputs) == ["path", "options", "mode", "limit", "columns"]
    assert (inputs["path"].type, inputs["path"].required) == ("string", True)
    assert inputs["path"].description == "Where the CSV file lives."
    assert inputs["mode"].json_schema["enum"] == ["fast", "safe"]
    assert (inputs["mode"].required, inputs["mode"].default) == (False, "safe")
    assert (inputs["limit"].type, inputs["limit"].default) == ("integer", None)
    assert inputs["columns"].type == "array"


def test_model_parameters_are_self_contained(catalog: ActionCatalog) -> None:
    options = slots(spec_of(catalog, "load_csv"))["options"]
    assert options.type == "object"
    text = str(options.json_schema)
    assert "$ref" not in text
    assert "definitions" not in text
    assert "position" not in text
    model = next(o for o in options.json_schema["anyOf"] if o.get("type") == "object")
    assert model["properties"]["delimiter"]["description"] == "Column separator."


def test_enum_parameter_resolves_to_values(catalog: ActionCatalog) -> None:
    color = slots(spec_of(catalog, "compute_stats"))["color"]
    assert color.json_schema["enum"] == ["red", "blue"]
    assert (color.type, color.default, color.required) == ("string", "red", False)


def test_recursive_model_keeps_its_own_defs(catalog: ActionCatalog) -> None:
    tree = slots(spec_of(catalog, "grow_tree"))["tree"].json_schema
    assert tree["type"] == "object"
    assert tree["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    assert tree["$defs"]["Tree"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}


def test_description_is_the_summary_not_the_args(catalog: ActionCatalog) -> None:
    spec = spec_of(catalog, "load_csv")
    assert spec.description == (
        "Load rows from a CSV file.\n\nReads the file and parses it into dictionaries."
    )
    assert "Args" not in spec.description
    assert "Returns" not in spec.description


def test_flow_without_docstring_or_annotations(catalog: ActionCatalog) -> None:
    spec = spec_of(catalog, "no_docs")
    assert spec.description == ""
    inputs = slots(spec)
    assert (inputs["x"].type, inputs["x"].required) == (None, True)
    assert (inputs["y"].type, inputs["y"].default) == ("integer", 2)
    assert [(o.name, o.type) for o in spec.outputs] == [("result", None)]


# -- outputs ------------------------------------------------------------------------------


def test_dataclass_return_gives_one_output_per_field(catalog: ActionCatalog) -> None:
    outputs = slots(spec_of(catalog, "load_csv"), "outputs")
    assert list(outputs) == ["rows", "row_count"]
    assert outputs["rows"].type == "array"
    assert outputs["rows"].json_schema["items"]["type"] == "object"
    assert outputs["row_count"].description == "How many rows."


def test_typeddict_and_namedtuple_returns(catalog: ActionCatalog) -> None:
    stats = slots(spec_of(catalog, "compute_stats"), "outputs")
    assert {k: v.type for k, v in stats.items()} == {"mean": "number", "count": "integer"}
    split = slots(spec_of(catalog, "split_data"), "outputs")
    assert {k: v.type for k, v in split.items()} == {"train": "array", "test": "array"}
    assert split["train"].json_schema["items"] == {"type": "integer"}


def test_pydantic_return_uses_field_descriptions(catalog: ActionCatalog) -> None:
    outputs = slots(spec_of(catalog, "write_report"), "outputs")
    assert list(outputs) == ["title", "score", "tags"]
    assert outputs["score"].description == "Overall score."
    assert outputs["tags"].required is False


def test_plain_return_is_result_described_by_returns_section(catalog: ActionCatalog) -> None:
    (result,) = spec_of(catalog, "count_rows").outputs
    assert (result.name, result.type, result.description) == (
        "result",
        "integer",
        "The number of rows.",
    )


def test_none_return_has_no_outputs(catalog: ActionCatalog) -> None:
    assert spec_of(catalog, "notify").outputs == []


def test_named_returns_section_describes_fields() -> None:
    @flow(name="pair", version="1")
    def pair() -> sample_flows.Split:
        """Make a pair.

        Returns:
            train: Items to learn from.
            test: Items held out.
        """
        return sample_flows.Split([], [])

    catalog = ActionCatalog()
    outputs = slots(catalog.register(pair), "outputs")
    assert outputs["train"].description == "Items to learn from."
    assert outputs["test"].description == "Items held out."


# -- registration -------------------------------------------------------------------------


def test_name_version_and_ref(catalog: ActionCatalog) -> None:
    spec = spec_of(catalog, "write_report")
    assert (spec.name, spec.version, spec.ref, spec.kind) == (
        "write_report",
        "2",
        "flow:write_report@2",
        "flow",
    )
    assert spec.entrypoint == "tests.sample_flows:write_report"


def test_register_rejects_non_flows() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(CatalogError, match="not a Prefect flow"):
        ActionCatalog().register(plain)  # type: ignore[arg-type]


def test_same_flow_twice_is_a_noop_but_a_different_flow_conflicts() -> None:
    catalog = ActionCatalog()
    first = catalog.register(sample_flows.count_rows)
    assert catalog.register(sample_flows.count_rows) is first
    assert len(catalog) == 1

    @flow(name="count_rows", version="9")
    def impostor(rows: list[int]) -> int:
        return 0

    with pytest.raises(CatalogError) as info:
        catalog.register(impostor)
    message = str(info.value)
    assert "tests.sample_flows.count_rows" in message
    assert "impostor" in message
    renamed = catalog.register(impostor, name="count_rows_v9", flow_id="g", tags=["x"])
    assert (renamed.ref, renamed.flow_id, renamed.tags) == ("flow:count_rows_v9@9", "g", ["x"])


def test_register_module_by_name_only_takes_its_own_flows(tmp_path: Path) -> None:
    (tmp_path / "aether_mod_a.py").write_text(
        textwrap.dedent(
            '''
            from prefect import flow
            from tests.sample_flows import count_rows

            @flow(name="greet", version="1")
            def greet(name: str) -> str:
                """Say hello."""
                return f"hello {name}"
            '''
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        specs = ActionCatalog().register_module("aether_mod_a", flow_id="demo")
    finally:
        sys.path.remove(str(tmp_path))
    assert [(s.name, s.flow_id) for s in specs] == [("greet", "demo")]


def test_register_module_errors() -> None:
    with pytest.raises(CatalogError, match=r"cannot import module 'no\.such\.module'"):
        ActionCatalog().register_module("no.such.module")
    with pytest.raises(CatalogError, match="defines no Prefect flow"):
        ActionCatalog().register_module("json")


def test_register_entrypoint_from_path_and_module(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(
        textwrap.dedent(
            '''
            from prefect import flow

            @flow(name="shout", version="3")
            def shout(text: str, times: int = 1) -> str:
                """Upper-case some text.

                Args:
                    text: What to shout.
                """
                return text.upper() * times
            '''
        )
    )
    catalog = ActionCatalog()
    spec = catalog.register_entrypoint(f"{script}:shout")
    assert (spec.ref, spec.entrypoint) == ("flow:shout@3", f"{script}:shout")
    assert slots(spec)["text"].description == "What to shout."
    other = catalog.register_entrypoint("tests.sample_flows:split_data")
    assert other.name == "split_data"
    assert catalog.get_flow("split_data") is sample_flows.split_data


@pytest.mark.parametrize(
    ("entrypoint", "fragment"),
    [
        ("does/not/exist.py:fn", "cannot load flow from entrypoint 'does/not/exist.py:fn'"),
        ("tests.sample_flows:missing", "missing"),
        ("tests.sample_flows:Color", "not a flow"),
    ],
)
def test_register_entrypoint_errors(entrypoint: str, fragment: str) -> None:
    with pytest.raises(CatalogError, match=fragment):
        ActionCatalog().register_entrypoint(entrypoint)


# -- lookup, search, render, fingerprint ---------------------------------------------------


def test_get_by_name_ref_and_unversioned_ref(catalog: ActionCatalog) -> None:
    spec = spec_of(catalog, "load_csv")
    assert catalog.get("flow:load_csv@1.0") is spec
    assert catalog.get("flow:load_csv") is spec
    assert catalog.get("flow:load_csv@0.9") is spec  # version drift still names the flow
    assert catalog.get("nothing") is None
    assert "load_csv" in catalog
    assert "nothing" not in catalog


def test_list_actions_by_flow_id() -> None:
    catalog = ActionCatalog()
    catalog.register(sample_flows.count_rows, flow_id="a")
    catalog.register(sample_flows.split_data, flow_id="b")
    catalog.register(sample_flows.notify)
    names = lambda specs: [s.name for s in specs]  # noqa: E731
    assert names(catalog.list_actions()) == ["count_rows", "split_data", "notify"]
    assert names(catalog.list_actions(flow_ids=["a"])) == ["count_rows", "notify"]
    assert names(catalog.list_actions(flow_ids=["a"], include_global=False)) == ["count_rows"]
    assert names(catalog) == names(catalog.list_actions())


def test_search_ranks_by_relevance(catalog: ActionCatalog) -> None:
    assert catalog.search("load the csv file")[0].name == "load_csv"
    assert catalog.search("summary statistics of values")[0].name == "compute_stats"
    assert catalog.search("split into train and test", k=1)[0].name == "split_data"
    assert catalog.search("countRows")[0].name == "count_rows"
    assert catalog.search("quantum teleportation") == []


def test_search_ties_are_broken_by_name() -> None:
    catalog = ActionCatalog()
    for name in ("zeta_job", "alpha_job", "mid_job"):

        @flow(name=name, version="1")
        def job() -> None:
            """Run the job."""

        catalog.register(job)
    assert [s.name for s in catalog.search("job")] == ["alpha_job", "mid_job", "zeta_job"]


def test_render_is_compact_and_typed(catalog: ActionCatalog) -> None:
    text = catalog.render([spec_of(catalog, "load_csv"), spec_of(catalog, "notify")])
    assert text.splitlines() == [
        "- load_csv: Load rows from a CSV file.",
        "  inputs: path: string (required) [reads], options: object = null, "
        'mode: "fast"|"safe" = "safe", limit: integer = null, columns: array[string] = null',
        "  returns (${step}): object LoadResult",
        "  fields (${step.<field>}): rows: array[object], row_count: integer",
        "- notify: Send a notification.",
        "  inputs: message: string (required)",
        "  returns: (nothing)",
    ]
    assert catalog.render().count("\n- ") == len(catalog) - 1


def test_fingerprint_changes_iff_a_spec_changes() -> None:
    one, two = ActionCatalog(), ActionCatalog()
    one.register(sample_flows.count_rows)
    two.register(sample_flows.count_rows)
    assert one.fingerprint == two.fingerprint
    before = one.fingerprint
    one.register(sample_flows.count_rows)
    assert one.fingerprint == before
    one.register(sample_flows.notify)
    assert one.fingerprint != before
    two.register(sample_flows.notify, tags=["alerts"])
    assert two.fingerprint != one.fingerprint


# -- literal checks agree with Prefect -----------------------------------------------------


@pytest.mark.parametrize(
    ("action", "field", "value"),
    [
        ("load_csv", "limit", "3"),
        ("load_csv", "limit", 3.0),
        ("load_csv", "limit", "three"),
        ("load_csv", "limit", None),
        ("load_csv", "mode", "fast"),
        ("load_csv", "mode", "slow"),
        ("load_csv", "options", {"delimiter": ";", "skip_rows": "2"}),
        ("load_csv", "options", {"skip_rows": "many"}),
        ("load_csv", "columns", ["a", "b"]),
        ("load_csv", "columns", "a,b"),
        ("compute_stats", "color", "blue"),
        ("compute_stats", "color", "green"),
        ("compute_stats", "values", [1, "2.5"]),
        ("split_data", "ratio", True),
        ("write_report", "title", 5),
    ],
)
def test_check_input_accepts_exactly_what_prefect_accepts(
    catalog: ActionCatalog, action: str, field: str, value: Any
) -> None:
    flow_obj = catalog.get_flow(action)
    assert flow_obj is not None
    required = {s.name: s for s in spec_of(catalog, action).inputs if s.required}
    base = {name: _valid_value(name) for name in required}
    try:
        flow_obj.validate_parameters({**base, field: value})
        prefect_accepts = True
    except ParameterTypeError:
        prefect_accepts = False
    problem = catalog.check_input(action, field, value)
    assert (problem is None) == prefect_accepts, problem
    # The executor's cached validator gives what Prefect's own gives, value for value.
    from prefect_aether.execution._steps import validate_inputs

    try:
        ours: Any = validate_inputs(flow_obj, {**base, field: value})
    except ParameterTypeError:
        ours = ParameterTypeError
    assert ours == (
        flow_obj.validate_parameters({**base, field: value})
        if prefect_accepts
        else ParameterTypeError
    )


def _valid_value(name: str) -> Any:
    return {"path": "x.csv", "values": [1.0], "items": [1], "title": "t", "score": 1.0}[name]


def test_producers_rank_same_name_before_shared_words(catalog: ActionCatalog) -> None:
    rows = slots(spec_of(catalog, "count_rows"))["rows"]
    found = [(spec.name, out.name) for spec, out in catalog.producers(rows)]
    assert found[0] == ("load_csv", "rows")
    assert all(name != "compute_stats" for name, _ in found)  # numbers cannot feed rows
    score = slots(spec_of(catalog, "write_report"))["score"]
    assert ("write_report", "score") in [(s.name, o.name) for s, o in catalog.producers(score)]
    assert catalog.producers(score, exclude=["write_report"]) == []
