"""Config errors as one line that names the dotted key and what is allowed (never a pydantic dump)."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from pipeline.config.base import FieldProblem
from pipeline.errors import ConfigError, short


_S = typing.TypeVar("_S", bound=BaseModel)


def from_dict(cls: type[_S], data: Any, source: str = "config") -> _S:
    """Validate ``data`` into ``cls``; any problem is one ConfigError naming the dotted keys."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc, cls)}") from None


def format_validation_error(exc: ValidationError, cls: type[BaseModel]) -> str:
    messages: list[str] = []
    for error in exc.errors():
        message = _error_message(error, cls)
        if message not in messages:
            messages.append(message)
    return "; ".join(messages)


# keys a release retired: the message says what replaced them (the key itself is refused, never silently ignored)
RETIRED_KEYS = {"synthesis.reference_steps": "the reference classifier is now the real arm's fold fits, trained "
                                            "with the classifiers.* settings; remove this key"}

_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
               "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
               "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping"}


def _error_message(error: Any, cls: type[BaseModel]) -> str:
    key, owner, field, annotation, rest = _walk(cls, error["loc"])
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        if key.split(".", 1)[-1] in RETIRED_KEYS or key in RETIRED_KEYS:
            return f"{key} was retired: {RETIRED_KEYS.get(key) or RETIRED_KEYS[key.split('.', 1)[-1]]}"
        where = key.rsplit(".", 1)[0] if "." in key else ""
        allowed = ", ".join(owner.model_fields) if owner is not None else "?"
        return f"unknown key {key}; allowed keys{' under ' + where if where else ''}: {allowed}"
    if kind == "missing":
        return f"missing required key {key}"
    if rest == "[key]":
        return f"{key}: key {short(value)} is not allowed; allowed keys: {_allowed(_dict_key_type(annotation))}"
    if rest is not None:  # a union: report against the whole field
        return f"{key} = {short(value)} is not allowed; allowed values: {_allowed(annotation)}"
    if kind == "literal_error":
        return f"{key} = {short(value)} is not allowed; allowed values: {_allowed(annotation)}"
    if kind in _TYPE_WORDS:
        return f"{key} must be {_TYPE_WORDS[kind]}, got {short(value)}"
    if kind == "value_error":
        problem = error.get("ctx", {}).get("error")
        if isinstance(problem, FieldProblem):
            key = f"{key}.{problem.field}" if key else problem.field
            return f"{key} = {short(problem.value)} is invalid; expected {problem.expected}"
        return f"{key} = {short(value)} is invalid; expected {problem}"
    if owner is not None and field is not None and kind in {"greater_than", "greater_than_equal", "less_than",
                                                            "less_than_equal", "multiple_of"}:
        return f"{key} = {short(value)} is invalid; expected {_range_words(owner, field)}"
    return f"{key} = {short(value)} is invalid: {error['msg']}"


def _walk(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, Any, str | None, Any, str | None]:
    """Follow ``loc`` through the models: (dotted key, owning model, field, its annotation, unresolved tail)."""
    key, owner, field, current = "", None, None, cls
    for i, part in enumerate(loc):
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:  # an unknown key under this model
                return (f"{key}.{part}" if key else str(part)), current, None, None, None
            owner, field, current = current, str(part), current.model_fields[str(part)].annotation
            key = f"{key}.{part}" if key else str(part)
        elif typing.get_origin(current) is list and isinstance(part, int):
            key, current = f"{key}[{part}]", typing.get_args(current)[0]
        elif typing.get_origin(current) is dict and i + 1 < len(loc) and loc[i + 1] == "[key]":
            return key, owner, field, current, "[key]"
        elif typing.get_origin(current) is dict:
            key, current = f"{key}.{part}", typing.get_args(current)[1]
        else:
            return key, owner, field, current, str(part)
    return key, owner, field, current, None


def _dict_key_type(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is dict else annotation


def _allowed(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return ", ".join(_allowed(a) for a in typing.get_args(annotation))
    if annotation is bool:
        return "true, false"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _range_words(owner: type[BaseModel], field: str) -> str:
    info = owner.model_fields[field]
    bounds: dict[str, Any] = {}
    for item in info.metadata:  # annotated_types.Ge(ge=1), Lt(lt=1), MultipleOf(multiple_of=8), ...
        for name in ("ge", "gt", "le", "lt", "multiple_of"):
            if getattr(item, name, None) is not None:
                bounds[name] = getattr(item, name)
    base = info.annotation
    integer = base is int
    noun = "an integer" if integer else "a number"
    if "multiple_of" in bounds:
        text = f"a multiple of {bounds['multiple_of']}"
        return text + (f", at least {bounds['ge']}" if "ge" in bounds else "")
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    null = " or null" if base is not None and type(None) in typing.get_args(base) else ""
    if low and high:
        if low[0] == "(" and high[1] == ")":
            return f"{noun} strictly between {low[1]} and {high[0]}{null}"
        return f"{noun} in {low[0]}{low[1]}, {high[0]}{high[1]}{null}"
    if low:
        return f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]}{null}"
    if high:
        return f"{noun} {'<=' if high[1] == ']' else '<'} {high[0]}{null}"
    return str(base)


