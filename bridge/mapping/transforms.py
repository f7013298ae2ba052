"""The ``transform:`` pipeline steps.

A step is written ``name``, ``name(arg)`` or ``{name: arg}``. Each is compiled
once at config load (bad arguments are config errors) into a function of one
value. At delivery time a step raises ``ValueError`` when the value cannot be
used; :mod:`bridge.mapping.rules` turns that into the destination's
``MappingError``. Messages never quote the value: it may be an email address.

Lookups whose input is free text (country names, state names, phone numbers)
keep a value they cannot recognise as it was written, so nothing is lost; type
coercions (int, float, bool, date) fail instead, because a CRM would reject the
text anyway and a clear mapping error beats a remote 400.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

Step = Callable[[Any], Any]

_CALL_RE = re.compile(r"^([a-z_0-9]+)\s*(?:\((.*)\))?$", re.DOTALL)


def describe(value: Any) -> str:
    """A value's JSON kind, for messages that must not quote the value."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise ValueError(f"{name} expects text, got {describe(value)}")


# ----------------------------------------------------------------------- text steps


def _title(value: Any) -> str:
    # str.title() turns "o'neil" into "O'Neil" but "john's" into "John'S"; capitalise
    # each word (letters joined by apostrophes) instead.
    return re.sub(
        r"(?<![\w'])[^\W\d_]+(?:'[^\W\d_]+)*",
        lambda m: m.group(0).capitalize(),
        text(value, "title"),
    )


def _split_name(value: Any, name: str) -> tuple[str, str]:
    """("Mary Ann", "Smith") from "Mary Ann Smith" or "Smith, Mary Ann".

    A single word is a last name: Salesforce requires LastName, not FirstName.
    """
    full = " ".join(text(value, name).split())
    if "," in full:
        last, _, first = full.partition(",")
        return first.strip(), last.strip()
    first, _, last = full.rpartition(" ")
    return first, last


def _truncate(arg: Any) -> Step:
    if isinstance(arg, str) and arg.strip().isdigit():
        arg = int(arg)
    if isinstance(arg, bool) or not isinstance(arg, int) or arg < 1:
        raise ValueError("truncate needs a positive whole number of characters, e.g. truncate(40)")
    limit = arg
    return lambda value: text(value, "truncate")[:limit]


def _join(arg: Any) -> Step:
    separator = ", " if arg is None else arg
    if not isinstance(separator, str):
        raise ValueError("join_list needs a separator text, e.g. join_list(; )")

    def step(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return separator.join(text(v, "join_list") for v in value if v is not None and v != "")

    return step


# ----------------------------------------------------------------------- lookups


def _phone(arg: Any) -> Step:
    import phonenumbers

    region = "US" if arg is None else str(arg).strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"phone_e164: unknown region {region!r}; expected a code such as US or GB")

    def step(value: Any) -> str:
        raw = text(value, "phone_e164").strip()
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            return raw
        if not phonenumbers.is_valid_number(number):
            return raw
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    return step


# pycountry names countries officially ("Russian Federation"); these everyday
# names are the ones its lookup misses.
_COUNTRY_ALIASES = {
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "russia": "RU",
}


@cache
def _country_lookup(key: str) -> str | None:
    import pycountry

    if key in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[key]
    try:
        return str(pycountry.countries.lookup(key).alpha_2)
    except LookupError:
        return None


def _country_code(value: Any) -> str:
    raw = " ".join(text(value, "country_code").split())
    # Bound the cached key space: a country name is never this long.
    if len(raw) > 80:
        return raw
    return _country_lookup(raw.casefold()) or raw


@cache
def _state_table(countries: tuple[str, ...]) -> dict[str, str]:
    import pycountry

    subdivisions: Any = pycountry.subdivisions  # untyped library
    table: dict[str, str] = {}
    for country in countries:
        for sub in subdivisions.get(country_code=country) or []:
            short = sub.code.split("-", 1)[1]
            table[sub.name.casefold()] = short
            table[short.casefold()] = short
    return table


def _state_code(arg: Any) -> Step:
    countries = ("US", "CA") if arg is None else (str(arg).strip().upper(),)
    if any(c not in ("US", "CA") for c in countries):
        raise ValueError("state_code: expected US or CA (or no argument for both)")

    def step(value: Any) -> str:
        raw = " ".join(text(value, "state_code").split())
        return _state_table(countries).get(raw.casefold(), raw)

    return step


# ----------------------------------------------------------------------- coercions


def _parse_datetime(value: Any, name: str) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if abs(seconds) >= 1e11:  # milliseconds since the epoch
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{name}: the number is not a valid timestamp") from None
    raw = text(value, name).strip()
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an ISO 8601 date or timestamp") from None
    # A timestamp without an offset is taken as UTC, like the provider's `created`.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _date_step(name: str, default_format: str) -> Callable[[Any], Step]:
    def factory(arg: Any) -> Step:
        fmt = default_format if arg is None else arg
        if not isinstance(fmt, str) or "%" not in fmt:
            raise ValueError(f"{name} needs a strftime format such as %Y-%m-%d")
        date(2000, 1, 2).strftime(fmt)  # rejects formats the platform cannot render
        return lambda value: _parse_datetime(value, name).strftime(fmt)

    return factory


_NUMBER_NOISE_RE = re.compile(r"[,_\s]")


def _to_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        result = float(value)
    else:
        try:
            result = float(_NUMBER_NOISE_RE.sub("", text(value, name)))
        except ValueError:
            raise ValueError(f"{name}: the text is not a number") from None
    if not math.isfinite(result):
        raise ValueError(f"{name}: the number is not finite")
    return result


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        cleaned = _NUMBER_NOISE_RE.sub("", value)
        if re.fullmatch(r"[+-]?\d{1,30}", cleaned):
            return int(cleaned)
    number = _to_float(value, "int")
    if not number.is_integer():
        raise ValueError("int: the number is not a whole number")
    return int(number)


_TRUE = {"true", "yes", "y", "1", "on", "t"}
_FALSE = {"false", "no", "n", "0", "off", "f"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        key = value.strip().casefold()
        if key in _TRUE:
            return True
        if key in _FALSE:
            return False
    raise ValueError(f"bool: expected yes/no, true/false, on/off or 1/0, got {describe(value)}")


# ----------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Spec:
    factory: Callable[[Any], Step]
    takes_arg: bool
    example: str


def _fixed(step: Step, name: str) -> _Spec:
    def factory(arg: Any) -> Step:
        if arg is not None:
            raise ValueError(f"{name} takes no argument")
        return step

    return _Spec(factory, False, name)


TRANSFORMS: dict[str, _Spec] = {
    "strip": _fixed(lambda v: text(v, "strip").strip(), "strip"),
    "lower": _fixed(lambda v: text(v, "lower").lower(), "lower"),
    "upper": _fixed(lambda v: text(v, "upper").upper(), "upper"),
    "title": _fixed(_title, "title"),
    "collapse_spaces": _fixed(
        lambda v: " ".join(text(v, "collapse_spaces").split()), "collapse_spaces"
    ),
    "digits_only": _fixed(lambda v: re.sub(r"[^0-9]", "", text(v, "digits_only")), "digits_only"),
    "truncate": _Spec(_truncate, True, "truncate(40)"),
    "first_name": _fixed(lambda v: _split_name(v, "first_name")[0], "first_name"),
    "last_name": _fixed(lambda v: _split_name(v, "last_name")[1], "last_name"),
    "phone_e164": _Spec(_phone, True, "phone_e164(US)"),
    "country_code": _fixed(_country_code, "country_code"),
    "state_code": _Spec(_state_code, True, "state_code(US)"),
    "date": _Spec(_date_step("date", "%Y-%m-%d"), True, "date(%Y-%m-%d)"),
    "datetime": _Spec(
        _date_step("datetime", "%Y-%m-%dT%H:%M:%SZ"), True, "datetime(%d/%m/%Y %H:%M)"
    ),
    "int": _fixed(_to_int, "int"),
    "float": _fixed(lambda v: _to_float(v, "float"), "float"),
    "bool": _fixed(_to_bool, "bool"),
    "string": _fixed(lambda v: text(v, "string"), "string"),
    "join_list": _Spec(_join, True, "join_list(; )"),
}


def compile_step(spec: Any) -> tuple[str, Step]:
    """``"truncate(40)"`` or ``{truncate: 40}`` -> (name, step); ValueError when invalid."""
    arg: Any = None
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError(
                "a transform written as a mapping has exactly one key, e.g. {truncate: 40}"
            )
        ((name, arg),) = spec.items()
        name = str(name)
    elif isinstance(spec, str):
        match = _CALL_RE.match(spec.strip())
        if match is None:
            raise ValueError(f"malformed transform {spec!r}; expected e.g. strip or truncate(40)")
        name, arg = match.group(1), match.group(2)
        if arg == "":  # "strip()" is "strip"
            arg = None
    else:
        raise ValueError(f"expected a transform name such as strip, got {describe(spec)}")
    found = TRANSFORMS.get(name)
    if found is None:
        close = difflib.get_close_matches(name, TRANSFORMS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(TRANSFORMS)}"
        raise ValueError(f"unknown transform {name!r}; {hint}")
    return name, found.factory(arg)
