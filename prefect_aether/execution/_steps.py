"""How one plan step runs as a Prefect child run: a task, a subflow or a deployment run
(private to `_run`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from prefect import Flow, Task, tags
from prefect._internal.pydantic.validated_func import ValidatedFunction
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.exceptions import ParameterTypeError
from prefect.states import Completed
from prefect.task_runners import TaskRunner
from prefect.utilities.callables import parameters_to_args_kwargs
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

from prefect_aether.catalog.registry import ActionSpec
from prefect_aether.catalog.schemas import type_adapter
from prefect_aether.exceptions import ExecutionError
from prefect_aether.execution._deployment_step import call_deployment
from prefect_aether.execution._secrets import SecretRef, reveal, scrub
from prefect_aether.plan import Binding, PlanStep, iter_bindings, map_bindings
from prefect_aether.settings import current_settings

RESULT = "result"
_Built = TypeVar("_Built")


def outputs_of(spec: ActionSpec, value: Any) -> dict[str, Any]:
    """Split a step's return value into its output slots (see `ActionSpec.outputs`): a
    live model, dataclass or NamedTuple, or the same value read back from JSON (a
    mapping, or a list for a NamedTuple)."""
    names = [slot.name for slot in spec.outputs]
    if value is None and not names:
        return {}
    if not names or names == [RESULT]:
        return {RESULT: value}
    if isinstance(value, BaseModel) or dataclasses.is_dataclass(value):
        return {n: getattr(value, n) for n in names if hasattr(value, n)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return dict(value._asdict())
    if isinstance(value, Mapping):
        return {n: value[n] for n in names if n in value}
    if isinstance(value, list | tuple) and len(value) == len(names):
        return dict(zip(names, value, strict=True))
    return {RESULT: value}


def restore(flow: Flow[..., Any] | None, value: Any) -> Any:
    """A stored return value (JSON data) as the flow's return type again, so a reused
    step gives what a fresh run gives; as it is when the type is unknown or refuses it."""
    if flow is None:
        return value
    annotation = _RETURNS.get(flow.fn, _UNKNOWN)
    if annotation is _UNKNOWN:
        try:
            annotation = typing.get_type_hints(flow.fn).get("return")
        except Exception:
            annotation = None
        _RETURNS[flow.fn] = annotation
    if annotation is None or value is None:
        return value
    try:
        return type_adapter(annotation).validate_python(value)
    except Exception:
        return value


_UNKNOWN: Any = object()
_RETURNS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def canonical_inputs(flow: Flow[..., Any] | None, inputs: dict[str, Any]) -> Any:
    """The inputs as the consumer's parameter types write them in JSON: a live model and
    the same model read back from JSON (a dict) give the same data, so they hash alike.
    Values its parameters refuse are kept as they are (the step will fail on them)."""
    if flow is not None:
        with contextlib.suppress(Exception):
            inputs = validate_inputs(flow, inputs)
    return to_jsonable_python(inputs, fallback=repr)


def follow_path(value: Any, path: Sequence[str | int], where: str) -> Any:
    """The value at a dotted path into mappings, sequences and attributes."""
    for depth, item in enumerate(path):
        try:
            if isinstance(value, Mapping):  # noqa: SIM114 (separate: mypy narrows the index type)
                value = value[item]
            elif (
                isinstance(item, int) and isinstance(value, Sequence) and not isinstance(value, str)
            ):
                value = value[item]
            elif isinstance(item, str):
                value = getattr(value, item)
            else:
                raise LookupError(item)
        except (LookupError, AttributeError):
            walked = ".".join(str(p) for p in path[: depth + 1])
            raise ExecutionError(
                f"{where}: the value has no {walked!r} (got {type(value).__name__})"
            ) from None
    return value


def resolve_inputs(
    step: PlanStep,
    user_inputs: Mapping[str, Any],
    step_outputs: Mapping[str, dict[str, Any]],
    step_values: Mapping[str, Any],
) -> dict[str, Any]:
    """The step's inputs with every binding replaced by its run-time value: `${s}` is
    step `s`'s whole return value, `${s.<output>}` one of its outputs."""

    def resolve(binding: Binding) -> Any:
        where = f"step {step.id!r}: {binding.raw}"
        if binding.kind == "secret":
            # Read only when the step starts (`_secrets.reveal`): its name until then.
            return SecretRef.of(binding.key or "")
        if binding.kind == "external":
            if binding.key not in user_inputs:
                raise ExecutionError(f"{where}: no user value {binding.key!r}", step_id=step.id)
            return follow_path(user_inputs[binding.key or ""], binding.path, where)
        if binding.output is None:
            producer = binding.step_id or ""
            if producer not in step_values:
                raise ExecutionError(
                    f"{where}: step {producer!r} has no return value", step_id=step.id
                )
            return follow_path(step_values[producer], binding.path, where)
        outputs = step_outputs.get(binding.step_id or "", {})
        if binding.output not in outputs:
            raise ExecutionError(
                f"{where}: step {binding.step_id!r} produced no output {binding.output!r}",
                step_id=step.id,
            )
        return follow_path(outputs[binding.output], binding.path, where)

    return dict(map_bindings(step.inputs, resolve))


def takes_secret(step: PlanStep) -> bool:
    """Whether any input of the step is a `${secret.*}` binding."""
    return any(b.kind == "secret" for _, b in iter_bindings(step.inputs))


def _policy(step: PlanStep, flow: Flow[..., Any]) -> dict[str, Any]:
    extras = step.extras
    return {
        "retries": extras.get("retries", flow.retries),
        "retry_delay_seconds": extras.get("retry_delay_seconds", flow.retry_delay_seconds),
        "timeout_seconds": extras.get("timeout_seconds", flow.timeout_seconds),
    }


def validate_inputs(flow: Flow[..., Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Prefect's own validation and coercion of a flow's parameters ("3" -> 3, dict ->
    model), as `Flow.validate_parameters` does, with the flow's validator built once
    rather than on every call (it cost ~2.6 ms a step), and without logging the values
    when they are refused (a step's inputs may hold a secret).

    Raises:
        ParameterTypeError: A value does not fit its parameter.
    """
    validator = _VALIDATORS.get(flow.fn)
    if validator is None:
        validator = _VALIDATORS[flow.fn] = ValidatedFunction(
            flow.fn, config=ConfigDict(arbitrary_types_allowed=True)
        )
    args, kwargs = parameters_to_args_kwargs(flow.fn, inputs)
    try:
        return validator.validate_call_args(args, kwargs)
    except ValidationError as exc:
        raise ParameterTypeError.from_validation_error(exc) from None


_VALIDATORS: weakref.WeakKeyDictionary[Any, ValidatedFunction] = weakref.WeakKeyDictionary()


def consumer_inputs(flow: Flow[..., Any] | None, inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs as the consumer takes them: a model made by another copy of its class
    (two entrypoints of one file each load it) is refused by class, so such inputs go as
    JSON data, which the consumer's own types read. Anything else as it is."""
    if flow is None or not any(_structured(v) for v in inputs.values()):
        return inputs
    try:
        validate_inputs(flow, inputs)
    except ParameterTypeError:
        data = {k: to_jsonable_python(v) if _structured(v) else v for k, v in inputs.items()}
        try:
            validate_inputs(flow, data)
        except Exception:
            return inputs  # the step fails on its own inputs, saying why
        return data
    return inputs


def _structured(value: Any) -> bool:
    items = value if isinstance(value, list | tuple) else [value]
    return any(
        isinstance(v, BaseModel) or (dataclasses.is_dataclass(v) and not isinstance(v, type))
        for v in items[:1]
    )


async def _call_fn(flow: Flow[..., Any], inputs: dict[str, Any]) -> Any:
    params = validate_inputs(flow, inputs) if flow.should_validate_parameters else inputs
    if inspect.iscoroutinefunction(flow.fn):
        return await flow.fn(**params)
    # Sync code runs in a worker thread (contextvars copied, so Prefect's run context and
    # logger follow) to keep the plan's event loop free for concurrent steps.
    return await asyncio.to_thread(functools.partial(flow.fn, **params))


async def call_subflow(
    flow: Flow[..., Any],
    step: PlanStep,
    step_tags: list[str],
    inputs: dict[str, Any],
    upstream: list[State[Any]],
) -> State[Any]:
    """Start the action's flow as a child flow run named after the step, under its tags.

    `wait_for` records the upstream steps, so the edges show in the run graph.
    """
    child = _child_flow(flow, step)
    _CHILD_RUN_NAME.set(step.id)
    call: Callable[[], Any] = functools.partial(
        child, **inputs, wait_for=wait_for(upstream), return_state=True
    )
    with tags(*step_tags):
        if inspect.iscoroutinefunction(flow.fn):
            outcome: Any = await call()
        else:
            # A sync flow blocks: run it in a thread (context copied) to keep steps concurrent.
            outcome = await asyncio.to_thread(call)
    return cast(State[Any], outcome)


_CHILD_RUN_NAME: ContextVar[str] = ContextVar("aether_child_run_name")


def _child_run_name() -> str:
    return _CHILD_RUN_NAME.get()


def _child_flow(flow: Flow[..., Any], step: PlanStep) -> Flow[..., Any]:
    """The action's flow with the step's policy (`with_options` builds a new `Flow`);
    its runs are named after the step being run (read from the context it runs in)."""
    return _per_policy(
        _CHILD_FLOWS,
        flow,
        step,
        lambda policy: flow.with_options(flow_run_name=_child_run_name, **policy),
    )


def _per_policy(
    cache: weakref.WeakKeyDictionary[Flow[..., Any], dict[str, _Built]],
    flow: Flow[..., Any],
    step: PlanStep,
    build: Callable[[dict[str, Any]], _Built],
) -> _Built:
    """What `build` makes of the action's flow and the step's policy, made once per
    action and policy: building a `Flow` or a `Task` costs ~1-10 ms, a step a few."""
    policy = _policy(step, flow)
    key = repr(sorted(policy.items()))
    built = cache.setdefault(flow, {})
    if key not in built:
        built[key] = build(policy)
    return built[key]


_CHILD_FLOWS: weakref.WeakKeyDictionary[Flow[..., Any], dict[str, Flow[..., Any]]] = (
    weakref.WeakKeyDictionary()
)


def step_task(
    flow: Flow[..., Any],
    step: PlanStep,
    *,
    step_tags: list[str] | None,
    secrets: dict[str, str] | None = None,
) -> Task[..., Any]:
    """A Prefect task, named after the step, that runs the action's function.

    It carries the step's retries and timeout (else the flow's). Prefect neither
    caches nor persists it: the executor keeps step results itself (`_results`),
    keyed by execution. With `secrets`, the inputs' `SecretRef`s are read inside the
    task (each value read is added to `secrets`) and its errors are masked.
    """
    policy = _policy(step, flow)

    async def run_step(inputs: dict[str, Any]) -> Any:
        if secrets is None:
            return await _call_fn(flow, inputs)
        # Secret values exist only in here: what Prefect records of this task run (its
        # failed state, its log lines) sees the error with every value masked.
        revealed = await reveal(inputs, secrets)
        try:
            return await _call_fn(flow, revealed)
        except Exception as exc:
            message = scrub(f"{type(exc).__name__}: {exc}", secrets.values())
            raise ExecutionError(message, step_id=step.id) from None

    return Task(
        fn=run_step,
        name=step.id,
        task_run_name=step.id,
        tags=step_tags,
        cache_policy=NO_CACHE,
        persist_result=False,
        **policy,
    )


async def call_task(
    flow: Flow[..., Any],
    step: PlanStep,
    inputs: dict[str, Any],
    upstream: list[State[Any]],
    step_tags: list[str] | None,
) -> tuple[State[Any], Any]:
    """Run the step as a task run in this process; its final state and value.

    The task is built once per action and step policy (building a `Task` costs ~1 ms),
    its run is named after the step (`task_run_name="{step_id}"`) and takes the step's
    tags from the tags context.
    """
    runner = _action_task(flow, step)
    with tags(*(step_tags or ())):
        call: Any = runner(inputs, step.id, wait_for=wait_for(upstream), return_state=True)
        state = cast(State[Any], await call)
    return state, await state.aresult(raise_on_failure=False)


def _action_task(flow: Flow[..., Any], step: PlanStep) -> Task[..., Any]:
    async def run_action(inputs: dict[str, Any], step_id: str) -> Any:
        return await _call_fn(flow, inputs)

    return _per_policy(
        _TASKS,
        flow,
        step,
        lambda policy: Task(
            fn=run_action,
            name=flow.name,
            task_run_name="{step_id}",
            cache_policy=NO_CACHE,
            persist_result=False,
            **policy,
        ),
    )


_TASKS: weakref.WeakKeyDictionary[Flow[..., Any], dict[str, Task[..., Any]]] = (
    weakref.WeakKeyDictionary()
)


async def submit(
    runner: Task[..., Any], inputs: dict[str, Any], upstream: list[State[Any]]
) -> tuple[State[Any], Any]:
    """Run a step's task on the plan flow's task runner; its final state and value.

    The future is waited for in a thread: a remote runner's wait blocks."""
    future = runner.submit(inputs, wait_for=wait_for(upstream, local=False))
    value = await asyncio.to_thread(future.result, raise_on_failure=False)
    return future.state, value


#: The state name of a step whose kept result was used instead of running it again.
REUSED = "Reused"


def reused_task(step: PlanStep, step_tags: list[str] | None, message: str) -> Task[..., Any]:
    """A task run that stands for a step whose kept result is reused: it ends `Reused`
    at once, so the run graph keeps every step and its edges."""

    async def reuse(outputs: dict[str, Any]) -> State[Any]:
        return Completed(name=REUSED, data=outputs, message=message)

    return Task(
        fn=reuse,
        name=step.id,
        task_run_name=step.id,
        tags=step_tags,
        cache_policy=NO_CACHE,
        persist_result=False,
    )


class _Upstream:
    """Stands for a finished upstream run in `wait_for`, linked to its state in the flow
    run's context: Prefect records it as a task input (`TaskRunResult`, or
    `FlowRunResult` for a child flow run, the node the run graph draws for it) and, not
    being a `State`, does not read the upstream's result again before the step starts
    (a blocking hop to another thread per edge; the scheduler starts a step only once
    its upstream steps completed)."""

    __slots__ = ("__weakref__", "run_id")

    def __init__(self, run_id: Any) -> None:
        self.run_id = run_id


def wait_for(states: Sequence[State[Any]], *, local: bool = True) -> list[Any]:
    """`wait_for` items for upstream steps: child flow runs (subflows, deployments) by
    their flow run, task runs by their task run. `local=False` (a task runner that may
    run the step in another process, where this context's links do not exist) passes
    task states as they are."""
    from prefect.client.schemas.objects import RunType
    from prefect.context import FlowRunContext
    from prefect.utilities.engine import link_state_to_result

    context = FlowRunContext.get()
    parent = context.flow_run.id if context is not None and context.flow_run else None
    items: list[Any] = []
    for state in states:
        details = state.state_details
        if details.flow_run_id is not None and details.flow_run_id != parent:
            child = _Upstream(details.flow_run_id)
            link_state_to_result(state, child, RunType.FLOW_RUN)
            items.append(child)
        elif local and context is not None and details.task_run_id is not None:
            upstream = _Upstream(details.task_run_id)
            link_state_to_result(state, upstream, RunType.TASK_RUN)
            items.append(upstream)
        else:
            items.append(state)
    return items


async def call_step(
    step: PlanStep,
    spec: ActionSpec,
    flow: Flow[..., Any] | None,
    inputs: dict[str, Any],
    *,
    run_as: str,
    task_runner: TaskRunner[Any] | None,
    run_tags: list[str],
    tag_steps: bool,
    upstream: list[State[Any]],
    secrets: dict[str, str],
    tainted: bool = False,
) -> tuple[State[Any], Any]:
    """Run the step as a task, a child flow run or a deployment run; raise if it failed.

    A step that reads a `${secret.*}` value, or an output that holds one (`tainted`),
    runs as a task whatever `run_as` says, its errors masked: a child flow run's
    parameters are stored on the server. A deployment step is refused such an input."""
    sid = step.id
    secret = takes_secret(step) or tainted
    if run_as == "subflow" and secret:
        run_as = "task"
    if tainted and spec.kind == "deployment":
        raise ExecutionError(
            f"step {sid!r} would send a deployment an output that holds a secret's value "
            "(deployment run parameters are stored on the Prefect server); nothing was sent",
            step_id=sid,
        )
    step_tags = [*run_tags, f"plan_step:{sid}"]
    tagged = step_tags if tag_steps else None
    if spec.kind == "deployment":
        poll = current_settings().deployment_poll_interval
        state, value = await call_deployment(
            spec, step, step_tags, inputs, upstream, poll_interval=poll
        )
    elif run_as == "subflow":
        assert flow is not None
        state = await call_subflow(flow, step, step_tags, inputs, upstream)
        value = await state.aresult(raise_on_failure=False)
    elif task_runner is None and not secret:
        assert flow is not None
        state, value = await call_task(flow, step, inputs, upstream, tagged)
    else:
        assert flow is not None
        runner = step_task(flow, step, step_tags=tagged, secrets=secrets if secret else None)
        if task_runner is None:
            call: Any = runner(inputs, wait_for=wait_for(upstream), return_state=True)
            state = cast(State[Any], await call)
            value = await state.aresult(raise_on_failure=False)
        else:
            # The plan's task runner (Dask, Ray, ...) runs the step where it chooses.
            state, value = await submit(runner, inputs, upstream)
    if not state.is_completed():
        raise (
            value
            if isinstance(value, BaseException)
            else ExecutionError(
                f"step {sid!r} ended {state.type.value}: {state.message}", step_id=sid
            )
        )
    return state, value
