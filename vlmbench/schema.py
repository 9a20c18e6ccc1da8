"""Build typed dataclasses from YAML/JSON data, with errors that name the file and the key.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Any``, ``X | None``, ``A | B`` of scalars,
``list[X]``, ``dict[K, V]``, ``Literal[...]`` and nested dataclasses. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from vlmbench.errors import SpecError, did_you_mean

# A configuration file has hundreds of values; YAML aliases can make a few hundred bytes stand for
# billions ("billion laughs"), which would take minutes and gigabytes to walk through.
MAX_YAML_VALUES = 100_000

_SCALARS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def build(cls: type, data: Any, *, where: str, source: str) -> Any:
    """Validate ``data`` against dataclass ``cls``; ``where`` is the key path, ``source`` the file."""
    return _convert(cls, data, where, source)


def _fail(source: str, where: str, message: str) -> SpecError:
    return SpecError(f"{source}: {where or '(top level)'}: {message}")


def _convert(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, where, source)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _fail(source, where, "must not be empty")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where, source)
            except SpecError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        wanted = " or ".join(_describe(o) for o in options if o is not type(None))
        raise _fail(source, where, f"expected {wanted}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = did_you_mean(str(value), [str(a) for a in allowed])
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise _fail(
                source, where, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}{extra}"
            )
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _fail(source, where, f"expected a list, got {value!r}")
        return [_convert(item_tp, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _fail(source, where, f"expected a mapping, got {value!r}")
        return {
            _convert(key_tp, k, f"{where}.{k}", source): _convert(val_tp, v, f"{where}.{k}", source)
            for k, v in value.items()
        }
    if tp in _SCALARS:
        return _scalar(tp, value, where, source)
    raise TypeError(f"schema: unsupported type {tp!r} at {where}")


def _scalar(tp: type, value: Any, where: str, source: str) -> Any:
    # bool is a subclass of int: never accept true/false where a number is meant, or 1 where a bool is.
    is_bool = isinstance(value, bool)
    accepted = {
        bool: is_bool,
        float: isinstance(value, (int, float)) and not is_bool,
        int: isinstance(value, int) and not is_bool,
        str: isinstance(value, (str, int, float)) and not is_bool,
    }[tp]
    if accepted:
        return tp(value)
    raise _fail(source, where, f"expected {_SCALARS[tp]}, got {value!r}")


def _describe(tp: Any) -> str:
    if tp in _SCALARS:
        return _SCALARS[tp]
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    return {list: "a list", dict: "a mapping"}.get(origin, str(tp))


def _build_dataclass(cls: type, value: Any, where: str, source: str) -> Any:
    if not isinstance(value, dict):
        raise _fail(source, where, f"expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        key = unknown[0]
        hint = did_you_mean(str(key), fields)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise _fail(source, _join(where, key), f"unknown key{extra}; allowed keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], _join(where, name), source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _fail(source, _join(where, name), "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, SpecError) as exc:
        if isinstance(exc, SpecError):
            raise
        # the class's own check names its fields; the key path says where the mapping was
        raise SpecError(f"{source}: {where}: {exc}" if where else f"{source}: {exc}") from None


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def load_yaml(text: str, *, source: str) -> Any:
    """``yaml.safe_load`` for configuration files, refusing documents whose aliases expand to more than
    :data:`MAX_YAML_VALUES` values or that nest too deeply. Errors are :class:`SpecError` naming ``source``."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise SpecError(
                f"{source}: the YAML expands to more than {MAX_YAML_VALUES} values (through aliases); "
                "a task or configuration file needs far fewer"
            )
        repeated = _repeated_key(node)
        if repeated:
            raise SpecError(
                f"{source}: line {repeated[1]}: key {repeated[0]!r} appears twice in one mapping; which value "
                "was meant cannot be told (YAML would keep the last silently)"
            )
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    problem = invalid_text(data)
    if problem:
        raise SpecError(f"{source}: {problem}")
    return data


def invalid_text(value: Any, where: str = "") -> str | None:
    """The encoding policy for text read from outside (data rows, run and task files, predictions,
    command lines): every string, keys included, must be valid Unicode, so that it can be written as
    UTF-8. A lone surrogate (JSON's ``"\\ud800"``, a YAML escape, a file name's undecodable byte) is the
    one thing a Python string can hold that cannot. Returns where the first such string is, escaped;
    None when every string is fine. Readers turn it into a counted skip (a data row) or one error line
    (a file or an option). Walked without recursion: parsed JSON may nest as deep as the parser allows."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                place = f" in {at}" if at else ""
                excerpt = shown_text(item[max(0, exc.start - 20) : exc.end + 20])
                return f"not valid Unicode text{place}: a lone surrogate in '{excerpt}'"
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                stack.append((inner, _join(at, shown_text(str(key)))))
                stack.append((key, f"a key of {at}" if at else "a key"))
        elif isinstance(item, (list, tuple)):
            stack.extend((inner, f"{at}[{i}]") for i, inner in reversed(list(enumerate(item))))
    return None


def shown_text(text: str) -> str:
    """``text`` with what cannot be written as UTF-8 (lone surrogates) shown as ``\\udXXX`` escapes, for
    messages about it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _repeated_key(node: Any) -> tuple[str, int] | None:
    """(key, line) of the first mapping key written twice in one mapping, if any (``<<`` merges aside)."""
    import yaml

    seen: set[int] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in item.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in keys:
                        return key.value, key.start_mark.line + 1
                    keys.add(key.value)
                stack += [key, value]
        elif isinstance(item, yaml.SequenceNode):
            stack += item.value
    return None


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Number of values ``node`` stands for once aliases are expanded (shared nodes counted each time)."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_VALUES + 1  # a node that contains itself expands without end
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_YAML_VALUES + 1)
    return memo[id(node)]
