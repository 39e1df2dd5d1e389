"""Adaptive execution measured: a failure-injection run (one step fails, an alternative
action exists) with the heuristic planner and the LLM planner on a real local model,
and, for the record, how long plan-then-execute waits before its first step.

For each planner it prints whether the goal was reached (the portfolio valued), the
replans made, how many times a completed step ran again (must be 0), the LLM calls and
tokens used, and the seconds taken; then, for a 5-step goal whose steps take ~2 s each,
the seconds until the first step started and in all, with the heuristic planner and the
LLM planner (plan-then-execute: steps start once the whole plan is validated), and with
the LLM planner streaming (`stream=True`: steps start while the answer streams in),
when its answer was half sent and whole, and its total time over plan-then-execute's
(goal: the first step before the answer is half sent, the total at most 0.8x).

Starts llama.cpp's server with Qwen2.5-Coder-1.5B-Instruct on loopback (installed and
checked by `tests/llama.py`); `--no-llm` runs the heuristic planner only.

    .venv/bin/python bench/adaptive.py [--no-llm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="aether-bench-adaptive-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_INTEGRATIONS_AETHER_PLANNING_TIMEOUT", "600")
os.environ.setdefault("PREFECT_INTEGRATIONS_AETHER_STORE_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]


from prefect_aether import ActionCatalog, OpenAICompatibleLLM, PlannerService  # noqa: E402
from tests import adaptive_flows, chain_flows  # noqa: E402
from tests.adaptive_flows import runs  # noqa: E402

GOAL = "load the holdings from {path}, fetch the rates of market 'EU', then value the portfolio"
FIVE = chain_flows.GOAL


class CountingLLM(OpenAICompatibleLLM):
    """The client, counting its calls and tokens."""

    calls = 0
    tokens = 0
    # A streamed answer as it arrived: (time.perf_counter(), characters so far).
    heard: list[tuple[float, int]] = []

    async def chat(self, *args: Any, on_text: Any = None, **kwargs: Any) -> Any:
        heard = self.heard = []

        def listen(text: str) -> None:
            heard.append((time.perf_counter(), len(text)))
            on_text(text)

        listening = listen if on_text is not None else None
        content, usage = await super().chat(*args, on_text=listening, **kwargs)
        self.calls += 1
        self.tokens += int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        return content, usage


def five_step_catalog() -> ActionCatalog:
    """Five ~2 s flows that hand one model down a chain (`tests/chain_flows.py`)."""
    os.environ["AETHER_STEP_SECONDS"] = "2"
    catalog = ActionCatalog()
    catalog.register_module(chain_flows)
    return catalog


async def failure_injection(kind: str, llm: CountingLLM | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="aether-runs-"))
    os.environ["AETHER_TEST_RUN_LOG"] = str(folder)
    holdings = folder / "h.csv"
    holdings.write_text("asset,units\ngold,3\noil,10\n")
    catalog = ActionCatalog()
    for f in (
        adaptive_flows.load_holdings,
        adaptive_flows.fetch_rates,
        adaptive_flows.fetch_rates_mirror,
        adaptive_flows.value_portfolio,
    ):
        catalog.register(f)
    service = PlannerService(catalog, planner=kind, llm=llm)  # type: ignore[arg-type]
    started = time.perf_counter()
    said: list[str] = []
    planned, result = await service.aplan_and_execute(
        GOAL.format(path=holdings),
        max_replans=2,
        allow_partial=False,
        planning_events_cb=lambda e: said.append(e.message) if e.phase == "validation" else None,
    )
    seconds = time.perf_counter() - started
    completed_before = {"load-holdings"}  # what ran before the failure in the first plan
    rerun = sum(max(0, runs(folder, a) - 1) for a in completed_before)
    return {
        "planner": kind,
        "first_plan": [s.action for s in planned.plan.steps] if planned.plan else None,
        "goal_reached": bool(result and result.ok and result.outputs.get("result") == 11.0),
        "replans": len(result.replans) if result else 0,
        "completed_steps_rerun": rerun,
        "llm_calls": llm.calls if llm else 0,
        "llm_tokens": llm.tokens if llm else 0,
        "seconds": round(seconds, 2),
        "errors": dict(result.errors) if result else {},
        # What validation said of the last plan the planner proposed (a replan's, if any).
        "last_validation": said[-1] if said else None,
    }


async def plan_then_execute(kind: str, llm: CountingLLM | None) -> dict[str, Any]:
    service = PlannerService(five_step_catalog(), planner=kind, llm=llm)  # type: ignore[arg-type]
    first: list[float] = []
    started = time.perf_counter()

    def on_event(event: Any) -> None:
        if event.phase == "step_start" and not first:
            first.append(time.perf_counter() - started)

    planned, result = await service.aplan_and_execute(
        FIVE, user_inputs={"city": "Oslo"}, execution_events_cb=on_event
    )
    return {
        "planner": kind,
        "steps": len(planned.plan.steps) if planned.plan else 0,
        "ok": bool(result and result.ok),
        "seconds_to_first_step": round(first[0], 2) if first else None,
        "seconds_total": round(time.perf_counter() - started, 2),
    }


async def streamed(llm: CountingLLM) -> dict[str, Any]:
    """The 5-step goal with `stream=True`: steps start while the answer streams in."""
    service = PlannerService(five_step_catalog(), planner="llm", llm=llm)
    first: list[float] = []
    started = time.perf_counter()

    def on_event(event: Any) -> None:
        if event.phase == "step_start" and not first:
            first.append(time.perf_counter())

    planned, result = await service.aplan_and_execute(
        FIVE, user_inputs={"city": "Oslo"}, execution_events_cb=on_event, stream=True
    )
    total = time.perf_counter() - started
    heard = llm.heard
    half = next((t for t, n in heard if heard and n * 2 >= heard[-1][1]), None)
    return {
        "planner": "llm (stream=True)",
        "steps": len(planned.plan.steps) if planned.plan else 0,
        "ok": bool(result and result.ok),
        "steps_started_while_streaming": len(result.streamed) if result else 0,
        "seconds_to_first_step": round(first[0] - started, 2) if first else None,
        "seconds_to_answer_half_sent": round(half - started, 2) if half else None,
        "seconds_to_answer_end": round(heard[-1][0] - started, 2) if heard else None,
        "first_step_before_half_sent": bool(first and half and first[0] < half),
        "seconds_total": round(total, 2),
    }


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"failure_injection": [], "plan_then_execute": []}
    report["failure_injection"].append(await failure_injection("heuristic", None))
    report["plan_then_execute"].append(await plan_then_execute("heuristic", None))
    if args.no_llm:
        return report
    from tests.llama import LlamaServer

    server = LlamaServer()
    try:
        report["model"] = "qwen2.5-coder-1.5b-instruct q4_k_m (llama.cpp, loopback)"
        llm = CountingLLM(server.base_url, "qwen2.5-coder-1.5b", timeout=300, max_retries=0)
        report["failure_injection"].append(await failure_injection("llm", llm))
        timed = CountingLLM(server.base_url, "qwen2.5-coder-1.5b", timeout=300, max_retries=0)
        # The server keeps the last prompt's cache: plan the 5-step goal once untimed, so
        # that plan-then-execute and streaming both start from a warm cache.
        await PlannerService(five_step_catalog(), planner="llm", llm=timed).aplan(
            FIVE, user_inputs={"city": "Oslo"}, cache=False
        )
        report["plan_then_execute"].append(await plan_then_execute("llm", timed))
        flowing = CountingLLM(server.base_url, "qwen2.5-coder-1.5b", timeout=300, max_retries=0)
        report["streaming"] = await streamed(flowing)
        whole = report["plan_then_execute"][-1]["seconds_total"]
        report["streaming"]["total_vs_plan_then_execute"] = round(
            report["streaming"]["seconds_total"] / whole, 3
        )
    finally:
        server.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--no-llm", action="store_true", help="The heuristic planner only.")
    print(json.dumps(asyncio.run(amain(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
