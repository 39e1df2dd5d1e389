"""Scale: our cost per step and plan throughput against hand-written Prefect, on real servers.

Starts PostgreSQL and a `prefect server start` backed by it on 127.0.0.1, and a SQLite-backed
one for comparison (as the test fixtures do), then prints one JSON object. Each figure is
ours against hand-written Prefect making the same calls in the same mode (its runs
carry the same kind of tags as a plan's), interleaved in one run, each measured in a
process of its own:

- `chain`: ms per step of a chain of no-op steps, per step mode (task, tagged task,
  subflow, deployment), the minimum over the repeats, and the ratio. Goal <= 1.15 in task
  and subflow modes on PostgreSQL. Each run starts once the server is idle again (its
  recorders work behind the API), and the server's CPU per step is reported too.
- `fanout`: a width-8 fan-out of 0.5 s steps and a join: wall time and span (first
  step's start to the join's end, inside the parent run), their ratios to the critical
  path (0.5 s). Goal <= 1.3.
- `cpu_fanout_task_runner`: a CPU-bound width-4 fan-out (a second of pure Python work
  a step, calibrated on one core) on
  the default task runner and on prefect-dask's `DaskTaskRunner` over a 2-process
  `LocalCluster`: the speedup (~2 on 2 cores).
- `plans`: N = 1, 4, 16, 32 concurrent plans (5-step DAGs of 0.2 s steps, task mode),
  from one process and from N processes: wall, plans per minute, failed plans, peak RSS
  of a client process. Goal: no failed plan, throughput within 15% of hand-written.

Run: `.venv/bin/python bench/scale.py [--quick]` (or `make bench-scale`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CRITICAL_PATH_S = 0.5
DAG_NAP_S = 0.2


# -- child processes: one measurement each, pointed at a server by their environment -----


def _catalog() -> Any:
    from scale_flows import bump, burn, gather, nap

    from prefect_aether import ActionCatalog

    catalog = ActionCatalog()
    for f in (bump, nap, gather, burn):
        catalog.register(f)
    return catalog


def _chain_plan(n: int, nonce: str, action: str) -> Any:
    from prefect_aether import CandidatePlan

    steps: list[dict[str, Any]] = [
        {"id": "s0", "action": action, "inputs": {"x": 0, "nonce": nonce}}
    ]
    steps += [
        {"id": f"s{i}", "action": action, "inputs": {"x": f"${{s{i - 1}.result}}", "nonce": nonce}}
        for i in range(1, n)
    ]
    return CandidatePlan.from_dict({"steps": steps})


def _fanout_plan(width: int, amount: float, nonce: str, action: str = "nap") -> Any:
    """`width` steps of `action` (`nap` for `amount` seconds, or `burn` `amount` units)
    and a join."""
    from prefect_aether import CandidatePlan

    key = "units" if action == "burn" else "seconds"
    value = int(amount) if action == "burn" else amount
    steps: list[dict[str, Any]] = [
        {"id": f"n{i}", "action": action, "inputs": {key: value, "nonce": nonce}}
        for i in range(width)
    ]
    values = [f"${{n{i}.result}}" for i in range(width)]
    steps.append({"id": "join", "action": "gather", "inputs": {"values": values, "nonce": nonce}})
    return CandidatePlan.from_dict({"steps": steps})


def _server_cpu() -> float:
    """CPU seconds the Prefect server process has used (Linux `/proc`), 0 elsewhere."""
    pid = os.environ.get("AETHER_BENCH_SERVER_PID")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _quiet(limit: float = 60.0) -> None:
    """Wait until the server has worked through what the last run sent it (its event
    and task-run recorders run behind the API): under 15% of a core for 0.5 s. Each
    run then starts on an idle server, ours and hand-written alike."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = _server_cpu()
        await asyncio.sleep(0.5)
        if (_server_cpu() - before) / 0.5 < 0.15:
            return


async def _hand(flow: Any, *args: Any) -> Any:
    """A hand-written run under the tags every plan run carries (`plan:<id>`,
    `execution:<id>`, new for each run): Prefect adds a run's tags to the events of all
    its task runs, so they cost every step (~25% of a no-op task step here)."""
    from prefect import tags

    nonce = uuid.uuid4().hex
    with tags(f"plan:{nonce[:16]}", f"execution:{nonce}"):
        return await flow(*args)


async def _timed(coro: Any, *, must: bool = False) -> tuple[float, bool]:
    """Wall time of a plan (or flow) run and whether it succeeded; `must`: a failure
    stops the benchmark (a figure of a failed run would mean nothing)."""
    started = time.perf_counter()
    try:
        result = await coro
        ok = bool(getattr(result, "ok", True))
    except Exception as exc:
        if must:
            raise
        print(f"a run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        ok = False
    if must and not ok:
        raise SystemExit(f"a benchmark run failed: {getattr(result, 'errors', '')}")
    return time.perf_counter() - started, ok


async def _chain(spec: dict[str, Any]) -> dict[str, Any]:
    from scale_flows import hand_chain

    from prefect_aether import PlanExecutor

    mode, n, repeat = spec["mode"], spec["steps"], spec["repeat"]
    catalog = _catalog()
    action = "bump"
    if mode == "deployment":
        await catalog.register_deployments(names=["bump/scale-bump"])
        action = "bump/scale-bump"
    executor = PlanExecutor(
        catalog,
        run_as="subflow" if mode == "subflow" else "task",
        tag_steps=mode == "tagged",
    )
    # A warm-up of each: the first run of a process pays for imports and caches.
    await _timed(executor.execute(_chain_plan(2, uuid.uuid4().hex, action)))
    await _timed(hand_chain(2, uuid.uuid4().hex, mode))
    walls: dict[str, list[float]] = {"ours": [], "hand": []}
    server: dict[str, list[float]] = {"ours": [], "hand": []}
    failures = 0
    for _ in range(repeat):  # interleaved, so drift on a shared machine hits both
        for who in ("ours", "hand"):
            nonce = uuid.uuid4().hex
            run = (
                executor.execute(_chain_plan(n, nonce, action))
                if who == "ours"
                else _hand(hand_chain, n, nonce, mode)
            )
            await _quiet()
            cpu = _server_cpu()
            wall, ok = await _timed(run)
            await _quiet()
            walls[who].append(wall)
            server[who].append(_server_cpu() - cpu)
            failures += not ok
    ms_ours, ms_hand = min(walls["ours"]) / n * 1000, min(walls["hand"]) / n * 1000
    return {
        "steps": n,
        "ours_ms_per_step": round(ms_ours, 1),
        "hand_written_ms_per_step": round(ms_hand, 1),
        "ratio": round(ms_ours / ms_hand, 2),
        # What the server spends on a step, recorders included (median over repeats).
        "server_cpu_ms_per_step": {
            who: round(sorted(values)[len(values) // 2] / n * 1000, 1)
            for who, values in server.items()
        },
        "failures": failures,
    }


async def _fanout(spec: dict[str, Any]) -> dict[str, Any]:
    from scale_flows import SPANS, hand_fanout

    from prefect_aether import PlanExecutor

    width, repeat = spec["width"], spec["repeat"]
    executor = PlanExecutor(_catalog())
    await _timed(executor.execute(_fanout_plan(2, 0.01, uuid.uuid4().hex)))
    await _timed(hand_fanout(2, 0.01, uuid.uuid4().hex))
    ours, hand, ours_span = [], [], []
    for _ in range(repeat):
        plan = _fanout_plan(width, CRITICAL_PATH_S, uuid.uuid4().hex)
        seen: dict[str, float] = {}

        def on_event(event: Any, seen: dict[str, float] = seen) -> None:
            if event.phase == "step_start":
                seen.setdefault("first", time.perf_counter())
            elif event.phase == "step_success" and event.step_id == "join":
                seen["last"] = time.perf_counter()

        await _quiet()
        ours.append((await _timed(executor.execute(plan, on_event=on_event), must=True))[0])
        ours_span.append(seen["last"] - seen["first"])
        await _quiet()
        hand.append((await _timed(_hand(hand_fanout, width, CRITICAL_PATH_S, "f"), must=True))[0])
    hand_span = SPANS[-repeat:]
    return {
        "width": width,
        "ours_wall_s": round(min(ours), 3),
        "ours_ratio_to_critical_path": round(min(ours) / CRITICAL_PATH_S, 2),
        "hand_written_wall_s": round(min(hand), 3),
        "hand_written_ratio_to_critical_path": round(min(hand) / CRITICAL_PATH_S, 2),
        "ratio": round(min(ours) / min(hand), 2),
        # From the first step's start to the join's end, inside the parent run: the
        # wall above also holds the parent flow run's own start and end.
        "ours_span_ratio_to_critical_path": round(min(ours_span) / CRITICAL_PATH_S, 2),
        "hand_written_span_ratio_to_critical_path": round(min(hand_span) / CRITICAL_PATH_S, 2),
    }


async def _dask(spec: dict[str, Any]) -> dict[str, Any]:
    """A CPU-bound width-4 fan-out on the default runner, then on a Dask LocalCluster of
    2 worker processes (the cluster is started before the clock starts)."""
    from distributed import LocalCluster
    from prefect_dask.task_runners import DaskTaskRunner
    from scale_flows import units_per_second

    from prefect_aether import PlanExecutor

    catalog = _catalog()
    seconds = spec["seconds"]
    units = units_per_second() * seconds
    default = PlanExecutor(catalog)
    await _timed(default.execute(_fanout_plan(2, 10, uuid.uuid4().hex, "burn")))
    walls: dict[str, list[float]] = {"default": [], "dask": []}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)  # type: ignore[no-untyped-call]
    with cluster:
        dask = PlanExecutor(catalog, task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        await _timed(dask.execute(_fanout_plan(2, 10, uuid.uuid4().hex, "burn")))
        for _ in range(spec["repeat"]):
            for name, executor in (("default", default), ("dask", dask)):
                plan = _fanout_plan(4, units, uuid.uuid4().hex, "burn")
                walls[name].append((await _timed(executor.execute(plan), must=True))[0])
    return {
        "width": 4,
        "cpu_seconds_per_step": seconds,
        "default_runner_wall_s": round(min(walls["default"]), 2),
        "dask_2_workers_wall_s": round(min(walls["dask"]), 2),
        "speedup": round(min(walls["default"]) / min(walls["dask"]), 2),
    }


async def _plans(spec: dict[str, Any]) -> dict[str, Any]:
    """`count` concurrent 5-step DAGs in this process, ours or by hand; starts at `start`
    (a wall-clock time every process of a batch shares)."""
    from scale_flows import hand_dag

    from prefect_aether import PlanExecutor

    count, who = spec["count"], spec["who"]
    executor = PlanExecutor(_catalog())
    if who == "ours":
        await _timed(executor.execute(_fanout_plan(2, 0.01, uuid.uuid4().hex)))
    else:
        await _timed(hand_dag(0.01, uuid.uuid4().hex))
    await asyncio.sleep(max(0.0, spec["start"] - time.time()))

    def one() -> Any:
        nonce = uuid.uuid4().hex
        if who == "ours":
            return executor.execute(_fanout_plan(4, DAG_NAP_S, nonce))
        return _hand(hand_dag, DAG_NAP_S, nonce)

    results = await asyncio.gather(*(_timed(one()) for _ in range(count)))
    return {
        "ended": time.time(),
        "failures": sum(not ok for _, ok in results),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def child(spec: dict[str, Any]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    kinds = {"chain": _chain, "fanout": _fanout, "plans": _plans, "dask": _dask}
    print("RESULT " + json.dumps(asyncio.run(kinds[spec["kind"]](spec))), flush=True)


# -- the parent: servers, and a process per measurement ------------------------------------


def _run_children(server: Any, specs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    env = {
        **server.env,
        "AETHER_BENCH_SERVER_PID": str(server.server.popen.pid),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}",
        "PREFECT_LOGGING_LEVEL": "ERROR",
        "PREFECT_INTEGRATIONS_AETHER_STORE_ENABLED": "false",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    found = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"a benchmark process failed:\n{err[-3000:]}")
        found.append(json.loads(lines[-1][len("RESULT ") :]))
    return found


def _concurrency(server: Any, counts: list[int]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for count in counts:
        row: dict[str, Any] = {}
        for spread in ("one_process", "n_processes"):
            for who in ("ours", "hand_written"):
                start = time.time() + (12 if spread == "n_processes" else 8) + count * 0.4
                specs = (
                    [{"kind": "plans", "count": count, "who": who[:4], "start": start}]
                    if spread == "one_process"
                    else [
                        {"kind": "plans", "count": 1, "who": who[:4], "start": start}
                        for _ in range(count)
                    ]
                )
                done = _run_children(server, specs, timeout=600)
                wall = max(d["ended"] for d in done) - start
                row[f"{spread}_{who}"] = {
                    "wall_s": round(wall, 2),
                    "plans_per_min": round(count / wall * 60, 1),
                    "failures": sum(d["failures"] for d in done),
                    "max_client_rss_mb": max(d["rss_mb"] for d in done),
                }
            ours, hand = row[f"{spread}_ours"], row[f"{spread}_hand_written"]
            row[f"{spread}_throughput_ratio"] = round(
                ours["plans_per_min"] / hand["plans_per_min"], 2
            )
        figures[str(count)] = row
    return figures


SECTIONS = ("chain", "fanout", "dask", "plans")


def main(quick: bool, only: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.processes import PostgresServer, PrefectServer

    repeat = 2 if quick else 3
    counts = [1, 4] if quick else [1, 4, 16, 32]
    postgres = PostgresServer()
    servers: list[Any] = []
    figures: dict[str, Any] = {"repeat": repeat}
    try:
        pg = PrefectServer(
            Path(tempfile.mkdtemp(prefix="aether-scale-pg-")), database_url=postgres.url
        )
        servers.append(pg)
        lite = PrefectServer(Path(tempfile.mkdtemp(prefix="aether-scale-lite-")))
        servers.append(lite)
        serving = pg.start(
            [sys.executable, str(ROOT / "bench" / "scale_flows.py")],
            "serve-bump",
            PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}",
        )
        serving.wait_until(
            lambda: (
                __import__("httpx")
                .get(f"{pg.api_url}/deployments/name/bump/scale-bump", timeout=5)
                .status_code
                == 200
            ),
            120,
            "serve the bump deployment",
        )
        if "chain" in only:
            chain: dict[str, Any] = {}
            modes = (("task", 30), ("tagged", 30), ("subflow", 30), ("deployment", 5))
            for mode, steps in modes:
                spec = {"kind": "chain", "mode": mode, "steps": steps, "repeat": repeat}
                chain[mode] = _run_children(pg, [spec], timeout=1800)[0]
            chain["sqlite_task"] = _run_children(
                lite, [{"kind": "chain", "mode": "task", "steps": 30, "repeat": repeat}], 900
            )[0]
            figures["chain_postgresql"] = chain
        if "fanout" in only:
            figures["fanout_postgresql"] = _run_children(
                pg, [{"kind": "fanout", "width": 8, "repeat": repeat}], 900
            )[0]
        if "dask" in only:
            figures["cpu_fanout_task_runner"] = _run_children(
                pg, [{"kind": "dask", "seconds": 1.0, "repeat": repeat}], 900
            )[0]
        if "plans" in only:
            figures["plans_postgresql"] = _concurrency(pg, counts)
            figures["plans_sqlite"] = _concurrency(lite, counts[:2])
        figures["goals"] = {
            "chain_ratio_task_and_subflow": 1.15,
            "fanout_ratio_to_critical_path": 1.3,
            "plans_throughput_ratio": 0.85,
        }
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer repeats and plan counts.")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"Sections to run, of {','.join(SECTIONS)}."
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
    else:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")
        print(json.dumps(main(args.quick, sections), indent=2))
