"""Every transform, table-driven, with empty, missing and non-string inputs."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import ConfigError, MappingError
from tests.mapping.helpers import MISSING, map_value


def through(step: Any, value: Any) -> Any:
    return map_value({"source": "data.x", "transform": [step]}, value)


CASES: list[tuple[Any, Any, Any]] = [
    # text
    ("strip", "  a b  ", "a b"),
    ("strip", 42, "42"),
    ("strip", True, "true"),
    ("lower", "ÀB c", "àb c"),
    ("upper", "ab", "AB"),
    ("title", "o'neil mary-jane", "O'neil Mary-Jane"),
    ("title", "JOHN's 3rd", "John's 3rd"),
    ("collapse_spaces", " a \n\t b  c ", "a b c"),
    ("digits_only", "+1 (202) 555-0143", "12025550143"),
    ("digits_only", 1234, "1234"),
    ("truncate(3)", "abcdef", "abc"),
    ({"truncate": 3}, "ab", "ab"),
    ("truncate(2)", 12345, "12"),
    # names
    ("first_name", "Mary Ann  Smith", "Mary Ann"),
    ("last_name", "Mary Ann  Smith", "Smith"),
    ("first_name", "Smith, Mary", "Mary"),
    ("last_name", "Smith, Mary", "Smith"),
    ("last_name", "Cher", "Cher"),
    ("first_name", "Cher", MISSING),  # a single word is a last name
    # phone numbers: valid ones become E.164, others are kept as written
    ("phone_e164", "(202) 555-0143", "+12025550143"),
    ("phone_e164(US)", 2025550143, "+12025550143"),
    ("phone_e164(GB)", "020 7946 0958", "+442079460958"),
    ({"phone_e164": "gb"}, "+1 202-555-0143", "+12025550143"),
    ("phone_e164", "+123123123123123", "+123123123123123"),
    ("phone_e164", " call me ", "call me"),
    # countries and states: unknown names are kept as written
    ("country_code", "United States", "US"),
    ("country_code", " usa ", "US"),
    ("country_code", "germany", "DE"),
    ("country_code", "UK", "GB"),
    ("country_code", "Atlantis", "Atlantis"),
    ("country_code", "x" * 200, "x" * 200),
    ("state_code", "Alabama", "AL"),
    ("state_code", "new  york", "NY"),
    ("state_code", "ontario", "ON"),
    ("state_code", "al", "AL"),
    ("state_code", "Bavaria", "Bavaria"),
    ("state_code(CA)", "Alabama", "Alabama"),
    ("state_code(US)", "Texas", "TX"),
    # dates, always rendered in UTC
    ("date", "2018-07-12T16:29:42Z", "2018-07-12"),
    ("date(%d/%m/%Y)", "2018-07-12", "12/07/2018"),
    ("date", "2018-07-12T23:30:00-05:00", "2018-07-13"),
    ("date", 1531412982, "2018-07-12"),
    ("date", 1531412982000, "2018-07-12"),
    ("datetime", "2018-07-12T16:29:42Z", "2018-07-12T16:29:42Z"),
    ("datetime(%H:%M)", "2018-07-12T16:29:42", "16:29"),
    # coercions
    ("int", "1,250", 1250),
    ("int", " 42 ", 42),
    ("int", "12.0", 12),
    ("int", 7.0, 7),
    ("int", True, 1),
    ("float", "3.5", 3.5),
    ("float", 2, 2.0),
    ("float", "1 000.5", 1000.5),
    ("bool", "Yes", True),
    ("bool", "off", False),
    ("bool", 0, False),
    ("bool", True, True),
    ("string", 42, "42"),
    ("string", False, "false"),
    ("join_list", ["a", "b", ""], "a, b"),
    ("join_list(; )", ["a", 2], "a; 2"),
    ("join_list", "single", "single"),
]


@pytest.mark.parametrize(("step", "value", "expected"), CASES)
def test_transform(step: Any, value: Any, expected: Any) -> None:
    assert through(step, value) == expected


@pytest.mark.parametrize("step", ["strip", "lower", "int", "bool", "date", "phone_e164"])
@pytest.mark.parametrize("value", [MISSING, None, "", "   ", [], {}])
def test_empty_input_skips_the_pipeline(step: str, value: Any) -> None:
    assert through(step, value) is MISSING


ERRORS: list[tuple[Any, Any, str]] = [
    ("lower", {"a": 1}, "lower expects text, got an object"),
    ("strip", [1, 2], "strip expects text, got a list"),
    ("int", "abc", "int: the text is not a number"),
    ("int", 7.5, "not a whole number"),
    ("int", "9" * 400, "int: the number is not finite"),
    ("float", "1e400", "not finite"),
    ("bool", "maybe", "bool: expected yes/no"),
    ("bool", 2, "got a number"),
    ("date", "yesterday", "expected an ISO 8601 date"),
    ("date", 1e30, "not a valid timestamp"),
    ("join_list", [{"a": 1}], "join_list expects text"),
]


@pytest.mark.parametrize(("step", "value", "message"), ERRORS)
def test_unusable_values_are_mapping_errors_naming_the_field(
    step: Any, value: Any, message: str
) -> None:
    with pytest.raises(MappingError) as info:
        through(step, value)
    assert info.value.field == "out"
    assert message in str(info.value)
    assert "of data.x" in str(info.value)


def test_error_messages_never_quote_the_value() -> None:
    with pytest.raises(MappingError) as info:
        through("int", "john@example.com")
    assert "john@example.com" not in str(info.value)


def test_pipeline_runs_in_order() -> None:
    rule = {"source": "data.x", "transform": ["collapse_spaces", "title", "truncate(8)"]}
    assert map_value(rule, "  mary   ANN smith ") == "Mary Ann"


def test_a_single_step_may_be_written_without_a_list() -> None:
    assert map_value({"source": "data.x", "transform": "upper"}, "ab") == "AB"


BAD_SPECS: list[tuple[Any, str]] = [
    ("lwoer", "unknown transform 'lwoer'; did you mean 'lower'?"),
    ("zzzz", "unknown transform 'zzzz'; known: strip, lower"),
    ("truncate(0)", "truncate needs a positive whole number"),
    ("truncate(x)", "truncate needs a positive whole number"),
    ("truncate", "truncate needs a positive whole number"),
    ("strip(x)", "strip takes no argument"),
    ("phone_e164(XX)", "unknown region 'XX'"),
    ("state_code(MX)", "expected US or CA"),
    ("date(Y-m-d)", "needs a strftime format"),
    ({"truncate": 1, "strip": None}, "exactly one key"),
    (42, "expected a transform name such as strip, got a number"),
    ("lower(", "malformed transform"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_transforms_are_config_errors_with_their_key_path(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        map_value({"source": "data.x", "transform": ["strip", spec]})
    [(path, text)] = info.value.problems
    assert path == "mapping.out.transform[1]"
    assert message in text


def test_empty_parentheses_mean_no_argument() -> None:
    assert through("strip()", " a ") == "a"
    assert through("phone_e164()", "(202) 555-0143") == "+12025550143"
