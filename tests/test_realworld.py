"""The development catalogs of `../shared/realworld/` (flows written the way teams write
them: models, dataclasses, TypedDicts, NamedTuples, enums, Literal, Optional, Path,
dates, Decimal, async flows, side effects): every flow registers, every gold plan
validates, and every gold plan runs on the suite's Prefect server.

The set is read where it lies (`AETHER_REALWORLD_DIR` points elsewhere); nothing of it
is copied into the repository."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor, validate_plan

ROOT = Path(
    os.environ.get(
        "AETHER_REALWORLD_DIR", Path(__file__).resolve().parents[2] / "shared" / "realworld"
    )
)

if not (ROOT / "goals").is_dir():
    pytest.skip(f"the real-world set is not at {ROOT}", allow_module_level=True)


def _cases() -> list[tuple[str, str, int, dict[str, Any]]]:
    """(catalog, case id, which gold plan, case) for every gold plan of the set."""
    found = []
    for goals in sorted((ROOT / "goals").glob("*.json")):
        for case in json.loads(goals.read_text()):
            plans = [case["expect"]["plan"]] if "plan" in case["expect"] else []
            plans += case.get("alternatives") or []
            for index, _ in enumerate(plans):
                found.append((goals.stem, case["id"], index, case))
    return found


CASES = _cases()
CATALOGS = sorted({name for name, *_ in CASES})
_BUILT: dict[str, ActionCatalog] = {}


def catalog_of(name: str) -> ActionCatalog:
    if name not in _BUILT:
        catalog = ActionCatalog()
        catalog.register_module(str(ROOT / "catalogs" / f"{name}.py"))
        _BUILT[name] = catalog
    return _BUILT[name]


def gold(case: dict[str, Any], index: int) -> CandidatePlan:
    plans = [case["expect"]["plan"]] if "plan" in case["expect"] else []
    plans += case.get("alternatives") or []
    return CandidatePlan.from_dict(plans[index])


@pytest.mark.parametrize("name", CATALOGS)
def test_every_flow_of_a_real_world_catalog_registers(name: str) -> None:
    import ast

    source = (ROOT / "catalogs" / f"{name}.py").read_text()
    flows = [
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any("flow" in ast.unparse(d) for d in node.decorator_list)
    ]
    catalog = catalog_of(name)
    assert len(catalog) == len(flows) > 0
    # Every action is shown to a planner with its typed inputs and what it returns.
    rendered = catalog.render()
    assert rendered.count("\n  inputs: ") == len(flows)
    assert all(f"- {spec.name}" in rendered for spec in catalog)


@pytest.mark.parametrize(("name", "case_id", "index", "case"), CASES, ids=lambda v: str(v))
def test_every_gold_plan_validates(name: str, case_id: str, index: int, case: Any) -> None:
    inputs = {**(case.get("execute_inputs") or {}), **(case.get("user_inputs") or {})}
    result = validate_plan(gold(case, index), catalog_of(name), user_inputs=inputs)
    assert result.ok, f"{case_id}: {result.summary()}"


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("name", "case_id", "index", "case"),
    [c for c in CASES if c[2] == 0],
    ids=lambda v: str(v),
)
async def test_every_gold_plan_runs(
    name: str,
    case_id: str,
    index: int,
    case: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copytree(ROOT / "catalogs" / f"{name}_data", tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    inputs = {**(case.get("execute_inputs") or {}), **(case.get("user_inputs") or {})}
    result = await PlanExecutor(catalog_of(name)).execute(gold(case, index), user_inputs=inputs)
    assert result.ok, f"{case_id}: {result.errors}"
    assert set(result.step_outputs) == {s.id for s in gold(case, index).steps}
