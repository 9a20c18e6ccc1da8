"""Typed options for plugins: ``--model-args k=v,...`` and metric options, validated against a schema."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlmbench.errors import ArgError, unknown_message

# How true and false are written in options and environment variables.
TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Arg:
    """One option of a plugin.

    ``affects_output`` says whether the value can change what the model answers; such values are part
    of the model fingerprint that keys the prediction cache (e.g. a checkpoint path is, a log level is not).
    ``secret`` values are never written to logs or artifacts. ``min`` and ``max`` bound numbers
    (inclusive), so a plugin states its ranges here instead of checking them by hand.
    """

    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    affects_output: bool = True
    secret: bool = False
    min: float | None = None
    max: float | None = None

    def describe(self) -> str:
        """Type, bounds or choices and default, for listings and ``--help`` texts."""
        text = self.type.__name__
        if self.choices is not None:
            text += f", one of {', '.join(map(str, self.choices))}"
        elif self.min is not None and self.max is not None:
            text += f" from {self.min} to {self.max}"
        elif self.min is not None:
            text += f" >= {self.min}"
        elif self.max is not None:
            text += f" <= {self.max}"
        if self.default is not None:
            text += f"; default {'***' if self.secret else self.default}"
        return text


_SCOPE = re.compile(r"^([A-Za-z0-9_.\-]+):(?!//)(.*)$", re.S)


def split_scoped(value: str) -> tuple[str | None, str]:
    """``"NAME:k=v,..."`` -> ``("NAME", "k=v,...")``; an unscoped ``"k=v,..."`` -> ``(None, value)``.

    The same form addresses one of several models (``--model-args``), generators or metrics. A colon
    inside a value (``pretrained=hf-hub:org/x``) is not a scope: the scope never contains ``=``."""
    match = _SCOPE.match(value)
    if match and "=" not in match.group(1):
        return match.group(1), match.group(2)
    return None, value


def parse_kv(text: str | None) -> dict[str, str]:
    """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``. A key given twice (``k=3,k=4``, also from options
    joined from several ``-a`` flags) is an error: which value was meant cannot be told."""
    result: dict[str, str] = {}
    if not text:
        return result
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ArgError(f"expected key=value, got {part!r} (in {text!r})")
        key = key.strip()
        if key in result:
            raise ArgError(
                f"{key!r} is given twice ({key}={result[key]} and {key}={value.strip()}); give it once"
            )
        result[key] = value.strip()
    return result


def convert(name: str, arg: Arg, value: Any, owner: str) -> Any:
    if value is None:
        return None
    try:
        if arg.type is bool:
            if isinstance(value, bool):
                out: Any = value
            elif str(value).lower() in TRUE_WORDS:
                out = True
            elif str(value).lower() in _FALSE:
                out = False
            else:
                raise ValueError("expected true or false")
        elif arg.type in (int, float):
            if isinstance(value, bool):
                raise ValueError(f"expected {'an integer' if arg.type is int else 'a number'}")
            out = arg.type(value)
        else:
            out = arg.type(value)
    except (TypeError, ValueError) as exc:
        shown = "***" if arg.secret else repr(value)
        raise ArgError(
            f"{owner}: invalid value {shown} for {name!r}: {exc if not arg.secret else 'wrong type'}"
        ) from None
    if arg.choices is not None and out not in arg.choices:
        shown = "***" if arg.secret else repr(out)
        raise ArgError(f"{owner}: {name!r} must be one of {', '.join(map(str, arg.choices))}, got {shown}")
    if _out_of_bounds(arg, out):
        bounds = [
            f"at least {arg.min}" if arg.min is not None else "",
            f"at most {arg.max}" if arg.max is not None else "",
        ]
        raise ArgError(
            f"{owner}: {name!r} must be {' and '.join(b for b in bounds if b) or 'a number'}, got {out!r}"
        )
    return out


def _out_of_bounds(arg: Arg, value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return (
        value != value
        or (arg.min is not None and value < arg.min)
        or (arg.max is not None and value > arg.max)
    )


def validate(schema: Mapping[str, Arg], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Convert ``given`` to typed values, fill defaults, reject unknown names (with a suggestion)."""
    for name in given:
        if name not in schema:
            msg = unknown_message(f"argument for {owner}", name, schema)
            if not schema:
                msg = f"{owner} takes no arguments, but {name!r} was given"
            raise ArgError(msg)
    return {name: convert(name, arg, given.get(name, arg.default), owner) for name, arg in schema.items()}


def output_affecting(schema: Mapping[str, Arg], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values that can change outputs (and are not secret): what a fingerprint is made of."""
    return {k: v for k, v in values.items() if schema[k].affects_output and not schema[k].secret}


def redact(schema: Mapping[str, Arg], values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: ("***" if k in schema and schema[k].secret and v is not None else v) for k, v in values.items()
    }
