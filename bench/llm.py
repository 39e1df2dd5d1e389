"""The LLM planner against a real local model, side by side with the heuristic planner.

Starts llama.cpp's server with Qwen2.5-Coder-1.5B-Instruct on loopback (installed and
verified by `tests/llama.py` into a cache outside the repository) and plans the
real-world set's goals (`../shared/realworld`, scored by its own `score.py`) and a
fixed, evenly spread sample of TaskBench development requests with:

(a) the heuristic planner;
(b) `ActionPlanner` alone (no draft);
(c) `ActionPlanner` with the heuristic planner's plan as a draft (worked examples come
    from a plan store of executed plans; a fresh bench has none);
(d) `planner="auto"` (`AutoPlanner`: the LLM never makes the plan worse).

With a draft that is valid, complete and serves the whole goal, (c) and (d) do not ask
the model (`planner_trust_draft`, the default); `draft_reviews` counts the plans that
were such a `trusted` draft, and those where the draft stood over the model's answer
(`failed`: it never validated, left out a draft action, said no action can do the goal,
or was worse than the draft by `auto`'s rule).

It prints one JSON object: per planner the scorer's figures, TaskBench n-F1 and e-F1,
prompt and completion tokens per plan, seconds per plan and LLM rounds per plan. (c) and
(d) share the model's answers (`Replay`): (d) asks what (c) asked and is given the same
answer, its seconds credited; run them together (`--planners c,d`).
A plan takes 30-60 s on two cores: `--limit` and `--taskbench` bound the run.

    .venv/bin/python bench/llm.py [--limit 5] [--taskbench 60] [--planners a,d]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="aether-bench-llm-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_INTEGRATIONS_AETHER_PLANNING_TIMEOUT", "600")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from prefect_aether import ActionCatalog, HeuristicPlanner  # noqa: E402
from prefect_aether.planning.auto import AutoPlanner  # noqa: E402
from prefect_aether.planning.llm import OpenAICompatibleLLM  # noqa: E402
from prefect_aether.planning.llm_planner import ActionPlanner  # noqa: E402

DEFAULT_SET = ROOT.parent / "shared" / "realworld"
DEFAULT_TASKBENCH = ROOT.parent / "shared" / "taskbench"


class Counting:
    """Wraps a planner and counts what each plan cost."""

    def __init__(self, planner: Any) -> None:
        self.planner = planner
        self.plans = 0
        self.seconds = 0.0
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        self.rounds = 0
        self.reviews: dict[str, int] = {}

    async def plan(self, ctx: Any, *, on_event: Any = None) -> Any:
        started = time.perf_counter()
        credit = REPLAY[0].credit if REPLAY else 0.0
        events: list[Any] = []
        result = await self.planner.plan(ctx, on_event=events.append)
        replayed = (REPLAY[0].credit if REPLAY else 0.0) - credit
        self.seconds += time.perf_counter() - started + replayed
        self.plans += 1
        for key in self.tokens:
            self.tokens[key] += int(result.usage.get(key, 0))
        self.rounds += sum(
            1 for e in events if e.phase == "llm_request" and e.message.startswith("round")
        )
        # How the draft fared: trusted (the model not asked), failed (the draft stood).
        review = result.plan.extras.get("review") if result.plan is not None else None
        if isinstance(review, str):
            self.reviews[review] = self.reviews.get(review, 0) + 1
        return result

    def figures(self) -> dict[str, Any]:
        n = max(self.plans, 1)
        return {
            "plans": self.plans,
            "seconds_per_plan": round(self.seconds / n, 2),
            "prompt_tokens_per_plan": round(self.tokens["prompt_tokens"] / n, 1),
            "completion_tokens_per_plan": round(self.tokens["completion_tokens"] / n, 1),
            "llm_rounds_per_plan": round(self.rounds / n, 2),
            "draft_reviews": dict(sorted(self.reviews.items())),
        }


class Replay:
    """The model's answers by request. (d) asks the model exactly what (c) asked (same
    prompt and schema, temperature 0), so it is given (c)'s answer again instead of
    waiting 30 s for the same text; the seconds that answer took are credited to the
    plan that asks again (`Counting`), so (d)'s seconds per plan stay the model's."""

    def __init__(self, llm: OpenAICompatibleLLM) -> None:
        self.llm = llm
        self.answers: dict[str, tuple[str, dict[str, int], float]] = {}
        self.credit = 0.0

    async def chat(self, messages: Any, **kwargs: Any) -> tuple[str, dict[str, int]]:
        key = json.dumps([messages, kwargs.get("json_schema")], sort_keys=True)
        if key in self.answers:
            content, usage, seconds = self.answers[key]
            self.credit += seconds
            return content, usage
        started = time.perf_counter()
        content, usage = await self.llm.chat(messages, **kwargs)
        self.answers[key] = (content, usage, time.perf_counter() - started)
        return content, usage


REPLAY: list[Replay] = []


def factories(base_url: str) -> dict[str, Any]:
    def llm() -> OpenAICompatibleLLM:
        return OpenAICompatibleLLM(base_url, "qwen2.5-coder-1.5b", timeout=300, max_retries=0)

    replay = Replay(llm())
    REPLAY[:] = [replay]
    return {
        "a_heuristic": lambda catalog: HeuristicPlanner(catalog),
        "b_llm_alone": lambda catalog: ActionPlanner(catalog, llm(), use_draft=False),
        "c_llm_with_draft": lambda catalog: ActionPlanner(catalog, replay),
        "d_auto": lambda catalog: AutoPlanner(catalog, ActionPlanner(catalog, replay)),
    }


def load_scorer(root: Path) -> Any:
    spec = importlib.util.spec_from_file_location("realworld_score", root / "score.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def realworld(root: Path, make: Any, limit: int | None) -> dict[str, Any]:
    scorer = load_scorer(root)
    counters: list[Counting] = []

    def make_planner(kind: str, catalog: ActionCatalog) -> Any:
        counter = Counting(make(catalog))
        counters.append(counter)
        return counter

    scorer.make_planner = make_planner
    args = argparse.Namespace(set=str(root), catalog=None, execute=False, limit=limit, planner="x")
    summary = (await scorer.amain(args))["summary"]["totals"]
    keep = ("node", "edge", "binding_accuracy", "exact_plan_rate", "case_accuracy", "abstention",
            "unserved_reported", "destructive_bindings", "invented_steps", "crashes")  # fmt: skip
    merged = Counting(None)
    for counter in counters:
        merged.plans += counter.plans
        merged.seconds += counter.seconds
        merged.rounds += counter.rounds
        for review, count in counter.reviews.items():
            merged.reviews[review] = merged.reviews.get(review, 0) + count
        for key in merged.tokens:
            merged.tokens[key] += counter.tokens[key]
    return {"scorer": {k: summary.get(k) for k in keep}, "cost": merged.figures()}


async def taskbench(root: Path, make: Any, sample: int) -> dict[str, Any]:
    import taskbench as tb

    counters: list[Counting] = []

    def make_planner(catalog: ActionCatalog) -> Any:
        counter = Counting(make(catalog))
        counters.append(counter)
        return counter

    scored = await tb.run(root, "huggingface", make_planner=make_planner, sample=sample)
    return {
        "n_f1": scored["n_f1"],
        "e_f1": scored["e_f1"],
        "samples": scored["samples"],
        "cost": counters[0].figures(),
    }


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from tests.llama import LlamaServer

    server = LlamaServer()
    try:
        chosen = factories(server.base_url)
        wanted = [p for p in chosen if p[0] in args.planners.split(",")]
        report: dict[str, Any] = {"model": "qwen2.5-coder-1.5b-instruct q4_k_m", "planners": {}}
        for name in wanted:
            entry: dict[str, Any] = {}
            if (args.set / "score.py").is_file():
                entry["realworld"] = await realworld(args.set, chosen[name], args.limit)
            if args.taskbench and (args.taskbench_root / "data").is_dir():
                entry["taskbench"] = await taskbench(
                    args.taskbench_root, chosen[name], args.taskbench
                )
            report["planners"][name] = entry
            print(json.dumps({name: entry}), file=sys.stderr)
        return report
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--taskbench-root", type=Path, default=DEFAULT_TASKBENCH)
    parser.add_argument("--limit", type=int, default=None, help="Goals per real-world catalog.")
    parser.add_argument("--taskbench", type=int, default=60, help="TaskBench requests (0: none).")
    parser.add_argument("--planners", default="a,b,c,d", help="Which of a,b,c,d to run.")
    print(json.dumps(asyncio.run(amain(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
