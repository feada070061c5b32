"""Run an Amazon States Language definition in-process as Step Functions would, Distributed Map included
(which moto's interpreter cannot parse): the local driver of the full reindex's state machine, for tests and
benches.

What is simulated, accepted without being enforced, and refused is listed in LocalStateMachine's docstring.
"""

from __future__ import annotations

import functools
import json
import operator
import random as random_module
import re
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

# Step Functions' quota on a state's input and output and on a task's result (UTF-8 JSON).
PAYLOAD_LIMIT_BYTES = 262_144
# Threads for a Map whose MaxConcurrency is 0 (AWS: up to 10,000 child executions, 40 inline iterations).
DEFAULT_MAX_THREADS = 32
DEFAULT_STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:local"
DEFAULT_RETRY_INTERVAL = 1
DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_BACKOFF_RATE = 2.0
# Recalled from AWS's Map Run failures; the error name is documented, this wording is not.
TOLERATED_FAILURE_CAUSE = "The specified tolerated failure threshold was exceeded"

_ALL = "States.ALL"
_TASK_FAILED = "States.TaskFailed"
_TIMEOUT = "States.Timeout"
_RUNTIME = "States.Runtime"
_DATA_LIMIT = "States.DataLimitExceeded"

_LAMBDA_INVOKE = re.compile(r"arn:aws[a-z-]*:states:::lambda:invoke")
_LAMBDA_FUNCTION = re.compile(r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[\w-]+(:[\w$-]+)?")
_S3_GET_OBJECT = re.compile(r"arn:aws[a-z-]*:states:::s3:getObject")


class DefinitionError(ValueError):
    """The definition is not valid ASL, or uses something this driver does not simulate (one line each)."""


class StatesError(Exception):
    """An error as Step Functions names it. An `invoke` callback raises it for a function error: `error` is
    the Lambda's errorType, `cause` the JSON error payload (see function_error)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class _TerminalError(StatesError):
    """States.Runtime and States.DataLimitExceeded: no Retry or Catch applies, the execution fails."""

    def __init__(self, error: str, cause: str, state: str | None = None) -> None:
        super().__init__(error, cause)
        self.state = state


def function_error(exc: BaseException) -> StatesError:
    """An exception raised by a Lambda handler as Step Functions reports the function error: the error is
    the exception's class name (Lambda's errorType), the cause the JSON payload Lambda's Python runtime
    returns."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != __file__]
    payload = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": str(uuid.uuid4()),
        "stackTrace": traceback.format_list(frames),
    }
    return StatesError(type(exc).__name__, json.dumps(payload))


@dataclass
class MapRunStats:
    """One run of a Map state: its items, the child executions (batches, or iterations when inline) planned,
    started and how they ended, and the most that ran at once."""

    state: str
    mode: Literal["INLINE", "DISTRIBUTED"]
    items: int
    batches: int
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    failed_items: int = 0
    max_concurrency: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    running: int = 0


class ExecutionStats:
    """Counts of one execution, its child executions included; updated under a lock (Maps run threads)."""

    def __init__(self) -> None:
        self.invocations: Counter[str] = Counter()
        self.states_entered: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.map_runs: list[MapRunStats] = []
        self._lock = threading.Lock()

    def _entered(self, state: str) -> None:
        with self._lock:
            self.states_entered[state] += 1

    def _invoked(self, function: str) -> None:
        with self._lock:
            self.invocations[function] += 1

    def _retried(self, state: str) -> None:
        with self._lock:
            self.retries[state] += 1

    def _map_run(self, run: MapRunStats) -> None:
        with self._lock:
            self.map_runs.append(run)

    def _child_started(self, run: MapRunStats) -> None:
        with self._lock:
            run.started += 1
            run.running += 1
            run.max_concurrency = max(run.max_concurrency, run.running)

    def _child_ended(self, run: MapRunStats, items: int, error: StatesError | None) -> None:
        with self._lock:
            run.running -= 1
            if error is None:
                run.succeeded += 1
            else:
                run.failed += 1
                run.failed_items += items
                run.errors[error.error] += 1


@dataclass(frozen=True)
class Execution:
    status: Literal["SUCCEEDED", "FAILED"]
    output: Any
    error: str | None
    cause: str | None
    stats: ExecutionStats


@dataclass(frozen=True)
class _Outcome:
    output: Any = None
    error: StatesError | None = None


# --- JSON values and paths ---------------------------------------------------------------------------------


class _Absent:
    """A path that selects nothing (distinct from JSON null)."""


_ABSENT = _Absent()
_PATH_STEP = re.compile(r"""\.([^.\[\]'"*?@()$]+)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")


@dataclass(frozen=True)
class _Path:
    context: bool
    steps: tuple[str | int, ...]


@functools.lru_cache(maxsize=4096)
def _parse_path(text: str) -> _Path:
    """`$`, `$.a.b`, `$['a']`, `$.a[0]` and the same from `$$` (the context object); nothing else."""
    context = text.startswith("$$")
    if not text.startswith("$"):
        raise DefinitionError(f"{text!r} is not a JSONPath (it must start with '$')")
    position = 2 if context else 1
    steps: list[str | int] = []
    while position < len(text):
        match = _PATH_STEP.match(text, position)
        if match is None:
            raise DefinitionError(
                f"JSONPath {text!r} is not simulated (only $, .name, ['name'] and [index] steps; "
                "no wildcards, filters, slices or recursive descent)"
            )
        name, index, single, double = match.groups()
        steps.append(
            int(index) if index is not None else next(s for s in (name, single, double) if s is not None)
        )
        position = match.end()
    return _Path(context, tuple(steps))


def _resolve(text: str, data: Any, context: Mapping[str, Any]) -> Any:
    path = _parse_path(text)
    value: Any = context if path.context else data
    for step in path.steps:
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        if not (in_list or (isinstance(step, str) and isinstance(value, dict) and step in value)):
            return _ABSENT
        value = value[step]
    return value


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _size(value: Any) -> int:
    return len(_encode(value).encode())


def _shown(value: Any, limit: int = 300) -> str:
    text = _encode(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_size(value: Any, what: str) -> None:
    size = _size(value)
    if size > PAYLOAD_LIMIT_BYTES:
        raise _TerminalError(
            _DATA_LIMIT, f"{what} has a size of {size} bytes, more than the {PAYLOAD_LIMIT_BYTES}-byte quota"
        )


def _select(text: str | None, data: Any, context: Mapping[str, Any], field_name: str) -> Any:
    """InputPath / OutputPath / ItemsPath: null selects {}, a path that selects nothing is States.Runtime."""
    if text is None:
        return {}
    value = _resolve(text, data, context)
    if value is _ABSENT:
        raise _TerminalError(_RUNTIME, f"Invalid path '{text}' in {field_name}: no results in {_shown(data)}")
    return value


def _render(template: Any, data: Any, context: Mapping[str, Any]) -> Any:
    """Parameters, ItemSelector, ResultSelector, BatchInput: a key ending in '.$' takes its path's value."""
    if isinstance(template, dict):
        rendered: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                found = _resolve(value, data, context)
                if found is _ABSENT:
                    raise _TerminalError(
                        _RUNTIME,
                        f"The JSONPath '{value}' specified for the field '{key}' could not be found in the "
                        f"input {_shown(data)}",
                    )
                rendered[key[:-2]] = found
            else:
                rendered[key] = _render(value, data, context)
        return rendered
    if isinstance(template, list):
        return [_render(value, data, context) for value in template]
    return template


def _with_result(text: str | None, data: Any, result: Any) -> Any:
    """ResultPath: null keeps the input, '$' is the result, '$.a.b' sets it in a copy of the input."""
    if text is None:
        return data
    steps = _parse_path(text).steps
    if not steps:
        return result
    output = json.loads(_encode(data))  # a copy: the input may be shared with other states and threads
    target = output
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        if isinstance(step, str) and isinstance(target, dict):
            if last:
                target[step] = result
            else:
                target = target.setdefault(step, {})
        elif isinstance(step, int) and isinstance(target, list) and step < len(target):
            if last:
                target[step] = result
            else:
                target = target[step]
        else:
            raise StatesError(
                "States.ResultPathMatchFailure",
                f"Unable to apply ResultPath '{text}' to the input {_shown(data)}",
            )
    return output


# --- Choice rules ------------------------------------------------------------------------------------------


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}
# operator → (the type both sides must have, the comparison); a variable of another type does not match.
_COMPARISONS: dict[str, tuple[Callable[[Any], bool], Callable[[Any, Any], bool]]] = {
    **{f"String{name}": (_is_string, compare) for name, compare in _COMPARE.items()},
    **{f"Numeric{name}": (_is_number, compare) for name, compare in _COMPARE.items()},
    "BooleanEquals": (_is_boolean, operator.eq),
}
_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda value: value is None,
    "IsBoolean": _is_boolean,
    "IsNumeric": _is_number,
    "IsString": _is_string,
}
_CHOICE_OPERATORS = (
    set(_COMPARISONS)
    | {f"{name}Path" for name in _COMPARISONS}
    | set(_TYPE_TESTS)
    | {"IsPresent", "StringMatches"}
)


@functools.lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """StringMatches: '*' matches any run of characters; '\\*' and '\\\\' stand for '*' and '\\'."""
    parts: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            parts.append(".*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _rule_operator(rule: Mapping[str, Any]) -> str | None:
    found = [key for key in rule if key in _CHOICE_OPERATORS]
    return found[0] if len(found) == 1 else None


def _holds(rule: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> bool:
    if "And" in rule:
        return all(_holds(inner, data, context) for inner in rule["And"])
    if "Or" in rule:
        return any(_holds(inner, data, context) for inner in rule["Or"])
    if "Not" in rule:
        return not _holds(rule["Not"], data, context)
    name = _rule_operator(rule)
    assert name is not None  # validated
    variable = _resolve(rule["Variable"], data, context)
    if name == "IsPresent":
        return (variable is not _ABSENT) == rule[name]
    if variable is _ABSENT:
        raise _TerminalError(
            _RUNTIME,
            f"Invalid path '{rule['Variable']}': "
            "The choice state's condition path references an invalid value.",
        )
    if name in _TYPE_TESTS:
        return _TYPE_TESTS[name](variable) == rule[name]
    if name == "StringMatches":
        return _is_string(variable) and _wildcard(rule[name]).fullmatch(variable) is not None
    expected = rule[name]
    if name.endswith("Path"):
        name = name.removesuffix("Path")
        expected = _resolve(rule[f"{name}Path"], data, context)
        if expected is _ABSENT:
            raise _TerminalError(
                _RUNTIME,
                f"Invalid path '{rule[f'{name}Path']}': The choice state's condition path is invalid.",
            )
    of_type, compare = _COMPARISONS[name]
    return of_type(variable) and of_type(expected) and compare(variable, expected)


# --- Validation --------------------------------------------------------------------------------------------

_COMMON_FIELDS = {"Type", "Comment", "QueryLanguage"}
_FLOW_FIELDS = {"Next", "End"}
_IO_FIELDS = {"InputPath", "OutputPath"}
_STATE_FIELDS: dict[str, set[str]] = {
    "Task": _COMMON_FIELDS
    | _FLOW_FIELDS
    | _IO_FIELDS
    | {
        "Resource",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "TimeoutSeconds",
        "HeartbeatSeconds",
    },
    "Pass": _COMMON_FIELDS | _FLOW_FIELDS | _IO_FIELDS | {"Result", "Parameters", "ResultPath"},
    "Choice": _COMMON_FIELDS | _IO_FIELDS | {"Choices", "Default"},
    "Wait": _COMMON_FIELDS | _FLOW_FIELDS | _IO_FIELDS | {"Seconds", "SecondsPath"},
    "Succeed": _COMMON_FIELDS | _IO_FIELDS,
    "Fail": _COMMON_FIELDS | {"Error", "ErrorPath", "Cause", "CausePath"},
    "Map": _COMMON_FIELDS
    | _FLOW_FIELDS
    | _IO_FIELDS
    | {
        "ItemProcessor",
        "Iterator",
        "ItemsPath",
        "ItemSelector",
        "Parameters",
        "ItemReader",
        "ItemBatcher",
        "MaxConcurrency",
        "ToleratedFailurePercentage",
        "ToleratedFailureCount",
        "Label",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
    },
}
_DISTRIBUTED_ONLY = (
    "ItemReader",
    "ItemBatcher",
    "ToleratedFailurePercentage",
    "ToleratedFailureCount",
    "Label",
)
_TOP_FIELDS = {"StartAt", "States", "Comment", "TimeoutSeconds", "Version", "QueryLanguage"}
_PROCESSOR_FIELDS = {"StartAt", "States", "Comment", "ProcessorConfig"}
_RETRY_FIELDS = {
    "ErrorEquals",
    "IntervalSeconds",
    "MaxAttempts",
    "BackoffRate",
    "MaxDelaySeconds",
    "JitterStrategy",
}
_CATCH_FIELDS = {"ErrorEquals", "Next", "ResultPath"}


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class _Validator:
    """Collects every problem of a definition, each naming its state and field."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}")

    def machine(self, machine: Any, where: str, allowed: set[str]) -> None:
        if not isinstance(machine, dict):
            self.problem(where, "must be a JSON object")
            return
        for name in sorted(set(machine) - allowed):
            self.problem(where, f"field {name!r} is not simulated by the local driver")
        if machine.get("QueryLanguage", "JSONPath") != "JSONPath":
            self.problem(
                where, f"QueryLanguage {machine['QueryLanguage']!r} is not simulated (only JSONPath)"
            )
        if "TimeoutSeconds" in machine and not _is_int(machine["TimeoutSeconds"], 1):
            self.problem(where, "TimeoutSeconds must be a positive integer")
        states = machine.get("States")
        if not isinstance(states, dict) or not states:
            self.problem(where, "States must be a non-empty object")
            return
        start = machine.get("StartAt")
        if start not in states:
            self.problem(where, f"StartAt {start!r} is not a state")
        for name, state in states.items():
            self.state(name, state, states, f"{where} state {name!r}")
        if isinstance(start, str) and start in states:
            unreachable = sorted(set(states) - self.reachable(start, states))
            for name in unreachable:
                self.problem(f"{where} state {name!r}", "is not reachable from StartAt")

    @staticmethod
    def reachable(start: str, states: Mapping[str, Any]) -> set[str]:
        seen: set[str] = set()
        pending = [start]
        while pending:
            name = pending.pop()
            if name in seen or not isinstance(states.get(name), dict):
                continue
            seen.add(name)
            state = states[name]
            targets = [state.get("Next"), state.get("Default")]
            targets += [rule.get("Next") for rule in state.get("Choices") or [] if isinstance(rule, dict)]
            targets += [
                catcher.get("Next") for catcher in state.get("Catch") or [] if isinstance(catcher, dict)
            ]
            pending += [target for target in targets if isinstance(target, str)]
        return seen

    def state(self, name: str, state: Any, states: Mapping[str, Any], where: str) -> None:
        if not isinstance(state, dict):
            self.problem(where, "must be a JSON object")
            return
        kind = state.get("Type")
        if kind not in _STATE_FIELDS:
            self.problem(
                where, f"state type {kind!r} is not simulated (only {', '.join(sorted(_STATE_FIELDS))})"
            )
            return
        where = f"{where} ({kind})"
        for unknown in sorted(set(state) - _STATE_FIELDS[kind]):
            self.problem(where, f"field {unknown!r} is not simulated by the local driver")
        if state.get("QueryLanguage", "JSONPath") != "JSONPath":
            self.problem(where, f"QueryLanguage {state['QueryLanguage']!r} is not simulated (only JSONPath)")
        self.transition(state, kind, states, where)
        for path_field in ("InputPath", "OutputPath", "ItemsPath", "SecondsPath", "ErrorPath", "CausePath"):
            if path_field in state and state[path_field] is not None:
                self.path(state[path_field], where, path_field)
        if state.get("ResultPath") is not None:
            self.path(state["ResultPath"], where, "ResultPath", reference=True)
        for template_field in ("Parameters", "ResultSelector", "ItemSelector"):
            if template_field in state:
                self.template(state[template_field], where, template_field)
        for number_field in ("TimeoutSeconds", "HeartbeatSeconds"):
            if number_field in state and not _is_int(state[number_field], 1):
                self.problem(where, f"{number_field} must be a positive integer")
        self.retriers(state.get("Retry", []), where)
        self.catchers(state.get("Catch", []), states, where)
        if kind == "Task":
            self.task(state, where)
        elif kind == "Choice":
            self.choice(state, states, where)
        elif kind == "Wait":
            if ("Seconds" in state) == ("SecondsPath" in state):
                self.problem(where, "needs exactly one of Seconds and SecondsPath")
            if "Seconds" in state and not _is_int(state["Seconds"], 0):
                self.problem(where, "Seconds must be a non-negative integer")
        elif kind == "Fail":
            for name_field in ("Error", "Cause"):
                if name_field in state and f"{name_field}Path" in state:
                    self.problem(where, f"has both {name_field} and {name_field}Path")
        elif kind == "Map":
            self.map(state, where)

    def transition(self, state: Mapping[str, Any], kind: str, states: Mapping[str, Any], where: str) -> None:
        if kind in ("Choice", "Succeed", "Fail"):
            return
        if "Next" in state and "End" in state:
            self.problem(where, "has both Next and End")
        elif "Next" in state:
            if state["Next"] not in states:
                self.problem(where, f"Next {state['Next']!r} is not a state")
        elif state.get("End") is not True:
            self.problem(where, 'needs Next or "End": true')

    def path(self, text: Any, where: str, field_name: str, *, reference: bool = False) -> None:
        if not isinstance(text, str):
            self.problem(where, f"{field_name} must be a JSONPath string")
            return
        try:
            path = _parse_path(text)
        except DefinitionError as error:
            self.problem(where, f"{field_name}: {error}")
            return
        if reference and path.context:
            self.problem(where, f"{field_name} {text!r} cannot point into the context object")

    def template(self, template: Any, where: str, field_name: str) -> None:
        if isinstance(template, dict):
            for key, value in template.items():
                if not key.endswith(".$"):
                    self.template(value, where, f"{field_name}.{key}")
                elif isinstance(value, str) and value.startswith("States."):
                    self.problem(where, f"{field_name}.{key}: intrinsic function {value!r} is not simulated")
                else:
                    self.path(value, where, f"{field_name}.{key}")
        elif isinstance(template, list):
            for index, value in enumerate(template):
                self.template(value, where, f"{field_name}[{index}]")

    def error_names(self, names: Any, where: str, last: bool) -> None:
        if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
            self.problem(where, "ErrorEquals must be a non-empty list of error names")
        elif _ALL in names and (len(names) > 1 or not last):
            self.problem(where, f"{_ALL} must appear alone, in the last retrier or catcher")

    def handlers(
        self, entries: Any, kind: str, fields: set[str], where: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The retriers or catchers (`kind` Retry or Catch) that are JSON objects, with where each stands;
        the shared checks (a list, known fields, ErrorEquals) reported for all of them."""
        if not isinstance(entries, list):
            self.problem(where, f"{kind} must be a list")
            return
        for index, entry in enumerate(entries):
            at = f"{where} {kind}[{index}]"
            if not isinstance(entry, dict):
                self.problem(at, "must be a JSON object")
                continue
            for unknown in sorted(set(entry) - fields - {"Comment"}):
                self.problem(at, f"field {unknown!r} is not simulated by the local driver")
            self.error_names(entry.get("ErrorEquals"), at, index == len(entries) - 1)
            yield at, entry

    def retriers(self, retriers: Any, where: str) -> None:
        for at, retrier in self.handlers(retriers, "Retry", _RETRY_FIELDS, where):
            checks = (
                ("IntervalSeconds", _is_int(retrier.get("IntervalSeconds", 1), 1), "a positive integer"),
                ("MaxAttempts", _is_int(retrier.get("MaxAttempts", 0), 0), "a non-negative integer"),
                ("MaxDelaySeconds", _is_int(retrier.get("MaxDelaySeconds", 1), 1), "a positive integer"),
                ("BackoffRate", _is_number(retrier.get("BackoffRate", 1.0)), "a number of at least 1.0"),
                ("JitterStrategy", retrier.get("JitterStrategy", "NONE") in ("FULL", "NONE"), "FULL or NONE"),
            )
            for name, valid, expected in checks:
                if not valid:
                    self.problem(at, f"{name} must be {expected}")
            if _is_number(retrier.get("BackoffRate", 1.0)) and retrier.get("BackoffRate", 1.0) < 1.0:
                self.problem(at, "BackoffRate must be a number of at least 1.0")

    def catchers(self, catchers: Any, states: Mapping[str, Any], where: str) -> None:
        for at, catcher in self.handlers(catchers, "Catch", _CATCH_FIELDS, where):
            if catcher.get("Next") not in states:
                self.problem(at, f"Next {catcher.get('Next')!r} is not a state")
            if catcher.get("ResultPath") is not None:
                self.path(catcher["ResultPath"], at, "ResultPath", reference=True)

    def task(self, state: Mapping[str, Any], where: str) -> None:
        resource = state.get("Resource")
        if not isinstance(resource, str):
            self.problem(where, "Resource must be a string")
        elif _LAMBDA_INVOKE.fullmatch(resource):
            parameters = state.get("Parameters")
            names = {key.removesuffix(".$") for key in parameters} if isinstance(parameters, dict) else set()
            if "FunctionName" not in names:
                self.problem(where, "lambda:invoke needs Parameters with FunctionName")
            for unknown in sorted(names - {"FunctionName", "Payload"}):
                self.problem(where, f"lambda:invoke parameter {unknown!r} is not simulated")
        elif not _LAMBDA_FUNCTION.fullmatch(resource):
            self.problem(
                where,
                f"Resource {resource!r} is not simulated (only arn:aws:states:::lambda:invoke and Lambda "
                "function ARNs; no .sync / .waitForTaskToken)",
            )

    def choice(self, state: Mapping[str, Any], states: Mapping[str, Any], where: str) -> None:
        rules = state.get("Choices")
        if not isinstance(rules, list) or not rules:
            self.problem(where, "Choices must be a non-empty list")
            return
        for index, rule in enumerate(rules):
            self.rule(rule, f"{where} Choices[{index}]", states, top=True)
        if "Default" in state and state["Default"] not in states:
            self.problem(where, f"Default {state['Default']!r} is not a state")

    def rule(self, rule: Any, where: str, states: Mapping[str, Any], *, top: bool) -> None:
        if not isinstance(rule, dict):
            self.problem(where, "must be a JSON object")
            return
        if top and rule.get("Next") not in states:
            self.problem(where, f"Next {rule.get('Next')!r} is not a state")
        if not top and "Next" in rule:
            self.problem(where, "a nested rule has no Next")
        allowed = {"Next", "Comment"} if top else {"Comment"}
        if "And" in rule or "Or" in rule:
            combined = rule.get("And", rule.get("Or"))
            if not isinstance(combined, list) or not combined:
                self.problem(where, "And / Or need a non-empty list of rules")
            else:
                for index, inner in enumerate(combined):
                    self.rule(inner, f"{where}[{index}]", states, top=False)
            allowed |= {"And", "Or"}
        elif "Not" in rule:
            self.rule(rule["Not"], f"{where}.Not", states, top=False)
            allowed |= {"Not"}
        else:
            name = _rule_operator(rule)
            if name is None:
                timestamps = [key for key in rule if key.startswith("Timestamp") or key == "IsTimestamp"]
                hint = f" ({timestamps[0]} is not simulated)" if timestamps else ""
                self.problem(where, f"needs Variable and exactly one comparison operator{hint}")
                return
            self.path(rule.get("Variable"), where, "Variable")
            value = rule[name]
            if name.endswith("Path"):
                self.path(value, where, name)
            elif name in _TYPE_TESTS or name == "IsPresent":
                if not _is_boolean(value):
                    self.problem(where, f"{name} takes true or false")
            elif name == "StringMatches":
                if not _is_string(value):
                    self.problem(where, "StringMatches takes a string")
            elif not _COMPARISONS[name][0](value):
                self.problem(where, f"{name} takes a value of its type, not {value!r}")
            allowed |= {"Variable", name}
        for unknown in sorted(set(rule) - allowed):
            self.problem(where, f"field {unknown!r} is not simulated by the local driver")

    def map(self, state: Mapping[str, Any], where: str) -> None:
        if ("ItemProcessor" in state) == ("Iterator" in state):
            self.problem(where, "needs exactly one of ItemProcessor and Iterator")
            return
        processor = state.get("ItemProcessor", state.get("Iterator"))
        config = processor.get("ProcessorConfig", {}) if isinstance(processor, dict) else {}
        if not isinstance(config, dict):
            self.problem(where, "ProcessorConfig must be a JSON object")
            config = {}
        for unknown in sorted(set(config) - {"Mode", "ExecutionType"}):
            self.problem(where, f"ProcessorConfig field {unknown!r} is not simulated")
        mode = config.get("Mode", "INLINE")
        if mode not in ("INLINE", "DISTRIBUTED"):
            self.problem(where, f"ProcessorConfig Mode {mode!r} is not INLINE or DISTRIBUTED")
        if mode == "DISTRIBUTED" and config.get("ExecutionType") not in ("STANDARD", "EXPRESS"):
            self.problem(where, "a DISTRIBUTED Map needs ProcessorConfig ExecutionType STANDARD or EXPRESS")
        if mode != "DISTRIBUTED":
            for name in _DISTRIBUTED_ONLY:
                if name in state:
                    self.problem(where, f"{name} is only for a DISTRIBUTED Map")
        if "ItemSelector" in state and "Parameters" in state:
            self.problem(where, "has both ItemSelector and Parameters")
        if "ItemReader" in state and "ItemsPath" in state:
            self.problem(where, "has both ItemReader and ItemsPath")
        if "MaxConcurrency" in state and not _is_int(state["MaxConcurrency"], 0):
            self.problem(where, "MaxConcurrency must be a non-negative integer")
        percentage = state.get("ToleratedFailurePercentage", 0)
        if not _is_number(percentage) or not 0 <= percentage <= 100:
            self.problem(where, "ToleratedFailurePercentage must be a number from 0 to 100")
        if "ToleratedFailureCount" in state and not _is_int(state["ToleratedFailureCount"], 0):
            self.problem(where, "ToleratedFailureCount must be a non-negative integer")
        if "Label" in state and not isinstance(state["Label"], str):
            self.problem(where, "Label must be a string")
        if "ItemReader" in state:
            self.item_reader(state["ItemReader"], where)
        if "ItemBatcher" in state:
            self.item_batcher(state["ItemBatcher"], where)
        self.machine(processor, f"{where} ItemProcessor", _PROCESSOR_FIELDS)

    def item_reader(self, reader: Any, where: str) -> None:
        where = f"{where} ItemReader"
        if not isinstance(reader, dict):
            self.problem(where, "must be a JSON object")
            return
        for unknown in sorted(set(reader) - {"Resource", "ReaderConfig", "Parameters"}):
            self.problem(where, f"field {unknown!r} is not simulated by the local driver")
        resource = reader.get("Resource")
        if not isinstance(resource, str) or not _S3_GET_OBJECT.fullmatch(resource):
            self.problem(
                where, f"Resource {resource!r} is not simulated (only arn:aws:states:::s3:getObject)"
            )
        config = reader.get("ReaderConfig")
        if not isinstance(config, dict):
            self.problem(where, "needs a ReaderConfig object")
        else:
            input_type = config.get("InputType")
            if input_type != "JSON":
                self.problem(
                    where, f"InputType {input_type!r} is not simulated (only JSON: an array of items)"
                )
            for unknown in sorted(set(config) - {"InputType", "MaxItems"}):
                self.problem(where, f"ReaderConfig field {unknown!r} is not simulated")
            if "MaxItems" in config and not _is_int(config["MaxItems"], 0):
                self.problem(where, "MaxItems must be a non-negative integer")
        parameters = reader.get("Parameters")
        names = {key.removesuffix(".$") for key in parameters} if isinstance(parameters, dict) else set()
        if names != {"Bucket", "Key"}:
            self.problem(
                where, f"Parameters must name Bucket and Key (and nothing else), not {sorted(names)}"
            )
        self.template(parameters, where, "Parameters")

    def item_batcher(self, batcher: Any, where: str) -> None:
        where = f"{where} ItemBatcher"
        if not isinstance(batcher, dict):
            self.problem(where, "must be a JSON object")
            return
        for unknown in sorted(set(batcher) - {"MaxItemsPerBatch", "MaxInputBytesPerBatch", "BatchInput"}):
            self.problem(where, f"field {unknown!r} is not simulated by the local driver")
        if "MaxItemsPerBatch" not in batcher and "MaxInputBytesPerBatch" not in batcher:
            self.problem(where, "needs MaxItemsPerBatch or MaxInputBytesPerBatch")
        if "MaxItemsPerBatch" in batcher and not _is_int(batcher["MaxItemsPerBatch"], 1):
            self.problem(where, "MaxItemsPerBatch must be a positive integer")
        size = batcher.get("MaxInputBytesPerBatch", 1)
        if not _is_int(size, 1) or size > PAYLOAD_LIMIT_BYTES:
            self.problem(where, f"MaxInputBytesPerBatch must be an integer from 1 to {PAYLOAD_LIMIT_BYTES}")
        if "BatchInput" in batcher:
            if not isinstance(batcher["BatchInput"], dict):
                self.problem(where, "BatchInput must be a JSON object")
            self.template(batcher["BatchInput"], where, "BatchInput")


# --- The driver --------------------------------------------------------------------------------------------


def _batches(
    items: list[Any], max_items: int | None, max_bytes: int | None, extra: Mapping[str, Any]
) -> list[list[Any]]:
    """Consecutive items, at most max_items each and each child input ({"Items": [...], **extra}) within
    max_bytes (the payload quota when not given); an item too large for any batch makes one of its own."""
    limit = max_bytes or PAYLOAD_LIMIT_BYTES
    empty = _size({"Items": [], **extra})
    batches: list[list[Any]] = []
    batch: list[Any] = []
    batch_bytes = empty
    for item in items:
        item_bytes = _size(item) + (1 if batch else 0)  # a comma after the first
        if batch and (
            (max_items is not None and len(batch) == max_items) or batch_bytes + item_bytes > limit
        ):
            batches.append(batch)
            batch, batch_bytes, item_bytes = [], empty, item_bytes - 1
        batch.append(item)
        batch_bytes += item_bytes
    if batch:
        batches.append(batch)
    return batches


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _matches(names: list[str], error: str) -> bool:
    """States.ALL matches any error, States.TaskFailed any but States.Timeout (never a terminal error)."""
    return error in names or _ALL in names or (_TASK_FAILED in names and error != _TIMEOUT)


class LocalStateMachine:
    """A state machine definition (the JSON CDK synthesizes) run in-process, as a Standard workflow.

    Simulated: Task (`arn:aws:states:::lambda:invoke` with FunctionName/Payload: the result is
    {"ExecutedVersion", "Payload", "SdkHttpMetadata", "SdkResponseMetadata", "StatusCode": 200}; a Lambda
    function ARN: the result is the returned value), Pass, Choice (string, numeric and boolean comparisons and
    their Path forms, StringMatches, Is*, And/Or/Not, Default, States.NoChoiceMatched), Wait (Seconds,
    SecondsPath through `sleep`), Succeed, Fail (Error/ErrorPath, Cause/CausePath), Map INLINE (ItemProcessor
    or Iterator, ItemsPath, ItemSelector or Parameters with $$.Map.Item.Value/Index) and DISTRIBUTED
    (ItemReader on an S3 JSON array through `read_object`, MaxItems; ItemSelector per item, then ItemBatcher
    MaxItemsPerBatch / MaxInputBytesPerBatch / BatchInput → {"Items", "BatchInput"} per child execution;
    ToleratedFailurePercentage / ToleratedFailureCount over failed items →
    States.ExceedToleratedFailureThreshold, after which no child execution starts). InputPath, Parameters,
    ResultSelector, ResultPath, OutputPath in AWS's order; the context object ($$.Execution.*, $$.State.*,
    $$.StateMachine.*, $$.Map.Item.*); Retry (own attempt count per retrier, IntervalSeconds * BackoffRate^n
    capped by MaxDelaySeconds, JitterStrategy FULL = random() * delay) and Catch ({"Error", "Cause"} at
    ResultPath) on Task and Map; the 262,144-byte quota (States.DataLimitExceeded) and paths that select
    nothing (States.Runtime), both failing the execution whatever Retry or Catch say.

    Function errors: `invoke(function, payload)` raises StatesError(error, cause) for a function error; any
    other exception is turned into one as Lambda reports an unhandled exception (function_error: the error is
    the class name, the cause {"errorMessage", "errorType", "requestId", "stackTrace"} as JSON); a value that
    is not JSON is Runtime.MarshalError. Payloads go through JSON both ways, as over the wire.

    Accepted, not enforced: TimeoutSeconds and HeartbeatSeconds (no timeout ever fires), Comment, Version,
    QueryLanguage "JSONPath", Label, ProcessorConfig ExecutionType (EXPRESS children run as STANDARD ones).
    Children still running when a Map fails run to their end (AWS aborts them). `sleep` and `random` may be
    called from the Map's threads. Not verified against AWS: the output array of a Distributed Map with
    tolerated failures (a failed child's entry is its {"Error", "Cause"}); an item larger than
    MaxInputBytesPerBatch makes a batch of its own (its child fails with States.DataLimitExceeded above the
    quota).

    Refused with DefinitionError at construction: any other field, state type (Parallel), resource, ItemReader
    (CSV, MANIFEST, listObjectsV2), ResultWriter, *Path variants of Map settings, intrinsic functions,
    Timestamp comparisons, JSONPath beyond plain steps; and invalid structure (StartAt, Next targets, End,
    unreachable states, States.ALL not alone and last).
    """

    def __init__(
        self,
        definition: Mapping[str, Any] | str,
        invoke: Callable[[str, Any], Any],
        read_object: Callable[[str, str], bytes],
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random_module.random,
        *,
        state_machine_arn: str = DEFAULT_STATE_MACHINE_ARN,
        max_threads: int = DEFAULT_MAX_THREADS,
    ) -> None:
        self.definition: dict[str, Any] = json.loads(
            definition if isinstance(definition, str) else _encode(definition)
        )
        validator = _Validator()
        validator.machine(self.definition, "definition", _TOP_FIELDS)
        if validator.problems:
            raise DefinitionError("; ".join(validator.problems))
        self._invoke = invoke
        self._read_object = read_object
        self._sleep = sleep
        self._random = random
        self._state_machine_arn = state_machine_arn
        self._max_threads = max_threads

    def run(self, input: Any, name: str = "local-execution") -> Execution:
        """One execution, to its end. An input that is not JSON or over the quota is refused as StartExecution
        refuses it (ValueError)."""
        try:
            size = _size(input)
        except (TypeError, ValueError) as error:
            raise ValueError(f"the execution input is not JSON: {error}") from error
        if size > PAYLOAD_LIMIT_BYTES:
            raise ValueError(f"the execution input has {size} bytes, more than {PAYLOAD_LIMIT_BYTES}")
        stats = ExecutionStats()
        arn = self._state_machine_arn.split(":")
        machine_name = arn[-1]
        execution = {
            "Execution": {
                "Id": f"{self._state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}",
                "Name": name,
                "Input": json.loads(_encode(input)),
                "StartTime": _now(),
                "RoleArn": f"arn:{arn[1]}:iam::{arn[4]}:role/local",
                "RedriveCount": 0,
            },
            "StateMachine": {"Id": self._state_machine_arn, "Name": machine_name},
        }
        try:
            output = self._run_states(self.definition, execution["Execution"]["Input"], execution, stats)
        except StatesError as error:
            return Execution("FAILED", None, error.error, error.cause, stats)
        return Execution("SUCCEEDED", output, None, None, stats)

    def _run_states(
        self, machine: Mapping[str, Any], data: Any, execution: dict[str, Any], stats: ExecutionStats
    ) -> Any:
        name: str | None = machine["StartAt"]
        while name is not None:
            name, data = self._execute(name, machine["States"][name], data, execution, stats)
        return data

    def _execute(
        self, name: str, state: Mapping[str, Any], data: Any, execution: dict[str, Any], stats: ExecutionStats
    ) -> tuple[str | None, Any]:
        stats._entered(name)
        context = {**execution, "State": {"Name": name, "EnteredTime": _now(), "RetryCount": 0}}
        try:
            next_name, output = self._by_type(name, state, data, context, stats)
        except _TerminalError as error:
            if error.state is not None:
                raise
            raise _TerminalError(
                error.error, f"An error occurred while executing the state '{name}'. {error.cause}", name
            ) from None
        _check_size(output, f"The output of state '{name}'")
        return next_name, output

    def _by_type(
        self, name: str, state: Mapping[str, Any], data: Any, context: dict[str, Any], stats: ExecutionStats
    ) -> tuple[str | None, Any]:
        kind = state["Type"]
        if kind == "Fail":
            raise StatesError(
                self._fail_field(state, "Error", data, context),
                self._fail_field(state, "Cause", data, context),
            )
        effective = _select(state.get("InputPath", "$"), data, context, "InputPath")
        if kind == "Choice":
            rules = state["Choices"]
            chosen = next((rule["Next"] for rule in rules if _holds(rule, effective, context)), None)
            chosen = chosen or state.get("Default")
            if chosen is None:
                raise StatesError(
                    "States.NoChoiceMatched", f"No Matches! (state '{name}', input {_shown(effective)})"
                )
            return chosen, _select(state.get("OutputPath", "$"), effective, context, "OutputPath")
        if kind in ("Succeed", "Wait"):
            if kind == "Wait":
                self._sleep(self._wait_seconds(state, effective, context))
            return state.get("Next"), _select(state.get("OutputPath", "$"), effective, context, "OutputPath")
        if kind == "Pass":
            if "Parameters" in state:
                effective = _render(state["Parameters"], effective, context)
            result = state.get("Result", effective)
            output = _with_result(state.get("ResultPath", "$"), data, result)
            return state.get("Next"), _select(state.get("OutputPath", "$"), output, context, "OutputPath")

        def attempt() -> Any:
            if kind == "Task":
                result = self._task_result(name, state, effective, context, stats)
            else:
                result = self._map_result(name, state, effective, context, stats)
            if "ResultSelector" in state:
                result = _render(state["ResultSelector"], result, context)
            output = _with_result(state.get("ResultPath", "$"), data, result)
            return _select(state.get("OutputPath", "$"), output, context, "OutputPath")

        return self._handling_errors(name, state, data, context, stats, attempt)

    def _handling_errors(
        self,
        name: str,
        state: Mapping[str, Any],
        data: Any,
        context: dict[str, Any],
        stats: ExecutionStats,
        attempt: Callable[[], Any],
    ) -> tuple[str | None, Any]:
        """Retry: the first retrier naming the error decides (its own attempts; none left → Catch); Catch: the
        first catcher naming it puts {"Error", "Cause"} at its ResultPath in the state's input."""
        retriers: list[dict[str, Any]] = state.get("Retry", [])
        attempts = [0] * len(retriers)
        while True:
            try:
                return state.get("Next"), attempt()
            except _TerminalError:
                raise
            except StatesError as error:
                index = next(
                    (i for i, r in enumerate(retriers) if _matches(r["ErrorEquals"], error.error)), None
                )
                if index is not None and attempts[index] < retriers[index].get(
                    "MaxAttempts", DEFAULT_RETRY_ATTEMPTS
                ):
                    delay = self._retry_delay(retriers[index], attempts[index])
                    attempts[index] += 1
                    context["State"]["RetryCount"] += 1
                    stats._retried(name)
                    self._sleep(delay)
                    continue
                for catcher in state.get("Catch", []):
                    if _matches(catcher["ErrorEquals"], error.error):
                        caught = {"Error": error.error, "Cause": error.cause}
                        return catcher["Next"], _with_result(catcher.get("ResultPath", "$"), data, caught)
                raise

    def _retry_delay(self, retrier: Mapping[str, Any], retries_before: int) -> float:
        delay = float(retrier.get("IntervalSeconds", DEFAULT_RETRY_INTERVAL))
        delay *= float(retrier.get("BackoffRate", DEFAULT_BACKOFF_RATE)) ** retries_before
        if "MaxDelaySeconds" in retrier:
            delay = min(delay, float(retrier["MaxDelaySeconds"]))
        if retrier.get("JitterStrategy", "NONE") == "FULL":
            delay *= self._random()
        return delay

    @staticmethod
    def _wait_seconds(state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> float:
        if "Seconds" in state:
            return float(state["Seconds"])
        seconds = _select(state["SecondsPath"], data, context, "SecondsPath")
        if not _is_int(seconds, 0):
            raise _TerminalError(
                _RUNTIME, f"SecondsPath '{state['SecondsPath']}' selects {seconds!r}, not seconds"
            )
        return float(seconds)

    @staticmethod
    def _fail_field(state: Mapping[str, Any], name: str, data: Any, context: Mapping[str, Any]) -> str:
        if f"{name}Path" not in state:
            return str(state.get(name, ""))
        value = _select(state[f"{name}Path"], data, context, f"{name}Path")
        if not isinstance(value, str):
            raise _TerminalError(
                _RUNTIME,
                f"{name}Path '{state[f'{name}Path']}' selects {_shown(value)}, which is not a string",
            )
        return value

    # --- Task ---

    def _task_result(
        self,
        name: str,
        state: Mapping[str, Any],
        effective: Any,
        context: Mapping[str, Any],
        stats: ExecutionStats,
    ) -> Any:
        parameters = _render(state["Parameters"], effective, context) if "Parameters" in state else effective
        _check_size(parameters, f"The input of state '{name}' after Parameters")
        resource: str = state["Resource"]
        if not _LAMBDA_INVOKE.fullmatch(resource):
            result, _ = self._call_function(resource, parameters, stats)
            _check_size(result, f"The result of state '{name}'")
            return result
        function = parameters.get("FunctionName")
        if not isinstance(function, str):
            raise _TerminalError(_RUNTIME, f"FunctionName is {_shown(function)}, not a string")
        returned, request_id = self._call_function(function, parameters.get("Payload", {}), stats)
        length = str(_size(returned))
        headers = {
            "Connection": "keep-alive",
            "Content-Length": length,
            "Content-Type": "application/json",
            "Date": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "X-Amz-Executed-Version": "$LATEST",
            "x-amzn-Remapped-Content-Length": "0",
            "x-amzn-RequestId": request_id,
        }
        result = {
            "ExecutedVersion": "$LATEST",
            "Payload": returned,
            "SdkHttpMetadata": {
                "AllHttpHeaders": {key: [value] for key, value in headers.items()},
                "HttpHeaders": headers,
                "HttpStatusCode": 200,
            },
            "SdkResponseMetadata": {"RequestId": request_id},
            "StatusCode": 200,
        }
        _check_size(result, f"The result of state '{name}'")
        return result

    def _call_function(self, function: str, payload: Any, stats: ExecutionStats) -> tuple[Any, str]:
        """The function's returned value as Lambda hands it back (JSON), and the request id."""
        stats._invoked(function)
        request_id = str(uuid.uuid4())
        try:
            returned = self._invoke(function, json.loads(_encode(payload)))
        except StatesError:
            raise
        except Exception as exc:
            raise function_error(exc) from exc
        try:
            return json.loads(_encode(returned)), request_id
        except (TypeError, ValueError) as exc:
            message = f"Unable to marshal response: {exc}"
            cause = {"errorMessage": message, "errorType": "Runtime.MarshalError", "requestId": request_id}
            raise StatesError("Runtime.MarshalError", json.dumps({**cause, "stackTrace": []})) from exc

    # --- Map ---

    def _map_result(
        self,
        name: str,
        state: Mapping[str, Any],
        effective: Any,
        context: Mapping[str, Any],
        stats: ExecutionStats,
    ) -> list[Any]:
        processor: Mapping[str, Any] = state.get("ItemProcessor", state.get("Iterator", {}))
        distributed = processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED"
        if "ItemReader" in state:
            items = self._read_items(state["ItemReader"], effective, context)
        else:
            items = _select(state.get("ItemsPath", "$"), effective, context, "ItemsPath")
            if not isinstance(items, list):
                raise _TerminalError(_RUNTIME, f"ItemsPath selects {_shown(items)}, not an array")
        selector = state.get("ItemSelector", state.get("Parameters"))
        if selector is not None:
            items = [
                _render(selector, effective, {**context, "Map": {"Item": {"Index": index, "Value": item}}})
                for index, item in enumerate(items)
            ]
        limit = state.get("MaxConcurrency", 0) or self._max_threads
        if distributed:
            results = self._distributed(name, state, processor, items, effective, context, stats, limit)
        else:
            results = self._inline(name, processor, items, context, stats, limit)
        # Without a ResultWriter, the children's outputs come back to the state whatever its ResultPath.
        _check_size(results, f"The result of state '{name}'")
        return results

    def _read_items(self, reader: Mapping[str, Any], effective: Any, context: Mapping[str, Any]) -> list[Any]:
        location = _render(reader["Parameters"], effective, context)
        bucket, key = location["Bucket"], location["Key"]
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise StatesError(
                "States.ItemReaderFailed", f"Bucket and Key must be strings, not {_shown(location)}"
            )
        try:
            body = self._read_object(bucket, key)
        except Exception as exc:
            raise StatesError(
                "States.ItemReaderFailed", f"Attempt to get object s3://{bucket}/{key} failed: {exc!r}"
            ) from exc
        try:
            items = json.loads(body)
        except ValueError as exc:
            raise StatesError("States.ItemReaderFailed", f"s3://{bucket}/{key} is not JSON: {exc}") from exc
        if not isinstance(items, list):
            raise StatesError("States.ItemReaderFailed", f"s3://{bucket}/{key} does not hold a JSON array")
        max_items = reader["ReaderConfig"].get("MaxItems")
        return items[:max_items] if max_items else items

    def _inline(
        self,
        name: str,
        processor: Mapping[str, Any],
        items: list[Any],
        context: Mapping[str, Any],
        stats: ExecutionStats,
        limit: int,
    ) -> list[Any]:
        """Iterations of this execution; the first to fail (in time) fails the Map with its own error."""
        run = MapRunStats(state=name, mode="INLINE", items=len(items), batches=len(items))
        stats._map_run(run)
        execution = {"Execution": context["Execution"], "StateMachine": context["StateMachine"]}

        def iterate(index: int, item: Any) -> Any:
            _check_size(item, f"The input of iteration {index} of Map '{name}'")
            return self._run_states(processor, item, execution, stats)

        failures: list[StatesError] = []

        def failed(error: StatesError) -> bool:
            failures.append(error)
            return True

        outcomes = self._fan_out(stats, run, items, [1] * len(items), iterate, limit, failed)
        if failures:
            raise failures[0]
        return [outcome.output for outcome in outcomes if outcome is not None]

    def _distributed(
        self,
        name: str,
        state: Mapping[str, Any],
        processor: Mapping[str, Any],
        items: list[Any],
        effective: Any,
        context: Mapping[str, Any],
        stats: ExecutionStats,
        limit: int,
    ) -> list[Any]:
        """A Map Run: each batch (or item) a child execution; failed items over the tolerated threshold stop
        new children and fail the Map with States.ExceedToleratedFailureThreshold."""
        batcher = state.get("ItemBatcher")
        if batcher is None:
            inputs, counts = items, [1] * len(items)
        else:
            extra = (
                {"BatchInput": _render(batcher["BatchInput"], effective, context)}
                if "BatchInput" in batcher
                else {}
            )
            batches = _batches(
                items, batcher.get("MaxItemsPerBatch"), batcher.get("MaxInputBytesPerBatch"), extra
            )
            inputs, counts = (
                [{"Items": batch, **extra} for batch in batches],
                [len(batch) for batch in batches],
            )
        run = MapRunStats(state=name, mode="DISTRIBUTED", items=len(items), batches=len(inputs))
        stats._map_run(run)
        percentage = state.get("ToleratedFailurePercentage")
        count = state.get("ToleratedFailureCount")
        if percentage is None and count is None:
            percentage = 0
        parent = context["Execution"]
        label = state.get("Label", name)

        def child(index: int, child_input: Any) -> Any:
            child_name = f"{parent['Name']}-{label}-{index}"
            execution = {
                "Execution": {
                    **parent,
                    "Id": f"{parent['Id']}/{label}:{index}",
                    "Name": child_name,
                    "Input": child_input,
                    "StartTime": _now(),
                },
                "StateMachine": context["StateMachine"],
            }
            _check_size(child_input, f"The input of child execution {child_name}")
            return self._run_states(processor, child_input, execution, stats)

        exceeded = threading.Event()

        def failed(_: StatesError) -> bool:
            over_percentage = percentage is not None and run.failed_items * 100 > percentage * run.items
            if over_percentage or (count is not None and run.failed_items > count):
                exceeded.set()
            return exceeded.is_set()

        outcomes = self._fan_out(stats, run, inputs, counts, child, limit, failed)
        if exceeded.is_set():
            raise StatesError("States.ExceedToleratedFailureThreshold", TOLERATED_FAILURE_CAUSE)
        return [
            outcome.output
            if outcome.error is None
            else {"Error": outcome.error.error, "Cause": outcome.error.cause}
            for outcome in outcomes
            if outcome is not None
        ]

    def _fan_out(
        self,
        stats: ExecutionStats,
        run: MapRunStats,
        inputs: list[Any],
        item_counts: list[int],
        run_one: Callable[[int, Any], Any],
        limit: int,
        on_failure: Callable[[StatesError], bool],
    ) -> list[_Outcome | None]:
        """run_one over the inputs, at most `limit` at once (and max_threads); no new one starts once
        on_failure answers True. Entries never started stay None."""
        outcomes: list[_Outcome | None] = [None] * len(inputs)
        if not inputs:
            return outcomes
        workers = max(1, min(len(inputs), limit, self._max_threads))

        def observed(index: int) -> _Outcome:
            stats._child_started(run)
            outcome = _Outcome()
            try:
                outcome = _Outcome(output=run_one(index, inputs[index]))
            except StatesError as error:
                outcome = _Outcome(error=error)
            finally:
                stats._child_ended(run, item_counts[index], outcome.error)
            return outcome

        stopping = False
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"map-{run.state}") as pool:
            running: dict[Future[_Outcome], int] = {}
            started = 0
            while running or (started < len(inputs) and not stopping):
                while not stopping and started < len(inputs) and len(running) < workers:
                    running[pool.submit(observed, started)] = started
                    started += 1
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    outcome = outcomes[index] = future.result()
                    if outcome.error is not None and on_failure(outcome.error):
                        stopping = True
        return outcomes
