"""Routing filters: every test, the combinators, odd data and config errors."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.mapping import compile_filter

LEAD: dict[str, Any] = {
    "id": "led_1",
    "data": {
        "country": "United States",
        "size": 250,
        "email": "john@example.com",
        "blank": " ",
        "tags": ["red", "blue"],
        "nested": {"a": 1},
        "null": None,
    },
}


def matches(when: Any, lead: dict[str, Any] = LEAD) -> bool:
    compiled = compile_filter(when, path="when")
    assert compiled is not None
    return compiled.matches(lead)


CASES: list[tuple[Any, bool]] = [
    ({"field": "data.country", "equals": "united states "}, True),
    ({"field": "data.country", "equals": "Canada"}, False),
    ({"field": "data.size", "equals": "250"}, True),
    ({"field": "data.size", "equals": 250}, True),
    ({"field": "data.missing", "equals": ""}, False),
    ({"field": "data.tags", "equals": "blue"}, True),
    ({"field": "data.nested", "equals": "1"}, False),
    ({"field": "data.country", "not_equals": "Canada"}, True),
    ({"field": "data.missing", "not_equals": "Canada"}, True),
    ({"field": "data.country", "in": ["Canada", "UNITED STATES"]}, True),
    ({"field": "data.size", "in": [100, 250]}, True),
    ({"field": "data.missing", "in": ["x"]}, False),
    ({"field": "data.country", "not_in": ["Canada"]}, True),
    ({"field": "data.tags", "not_in": ["red"]}, False),
    ({"field": "data.email", "regex": "@example\\.com$"}, True),
    ({"field": "data.email", "regex": "^JOHN"}, False),
    ({"field": "data.email", "regex": "(?i)^JOHN"}, True),
    ({"field": "data.size", "regex": "^2"}, True),
    ({"field": "data.tags", "regex": "^bl"}, True),
    ({"field": "data.nested", "regex": "a"}, False),
    ({"field": "data.email", "exists": True}, True),
    ({"field": "data.blank", "exists": True}, True),
    ({"field": "data.null", "exists": True}, False),
    ({"field": "data.missing", "exists": False}, True),
    ({"field": "data.blank", "empty": True}, True),
    ({"field": "data.missing", "empty": True}, True),
    ({"field": "data.email", "empty": False}, True),
    # several tests in one condition must all hold
    ({"field": "data.email", "exists": True, "regex": "@other"}, False),
    ({"all": [{"field": "id", "equals": "led_1"}, {"field": "data.size", "in": [250]}]}, True),
    ({"all": [{"field": "id", "equals": "led_1"}, {"field": "data.size", "in": [1]}]}, False),
    ({"any": [{"field": "id", "equals": "x"}, {"field": "data.size", "in": [250]}]}, True),
    ({"any": [{"field": "id", "equals": "x"}, {"field": "id", "equals": "y"}]}, False),
    ({"not": {"field": "data.email", "regex": "@example"}}, False),
    ([{"field": "id", "exists": True}, {"not": {"field": "data.missing", "exists": True}}], True),
]


@pytest.mark.parametrize(("when", "expected"), CASES)
def test_filter(when: Any, expected: bool) -> None:
    assert matches(when) is expected


def test_no_filter_is_none() -> None:
    assert compile_filter(None, path="when") is None


@pytest.mark.parametrize(
    "lead", [{}, {"data": None}, {"data": [1]}, {"id": {"x": 1}}, {"data": "s"}]
)
def test_odd_leads_never_raise(lead: dict[str, Any]) -> None:
    when = {"any": [{"field": "data.country", "equals": "x"}, {"field": "id", "regex": "x"}]}
    assert matches(when, lead) is False
    assert matches({"field": "data.country", "not_in": ["x"]}, lead) is True


def test_every_problem_is_reported_with_its_key_path() -> None:
    when = {
        "all": [
            {"field": "data.a", "regx": "x"},
            {"field": "data.b", "regex": "("},
            {"equals": 1},
            {"field": "data..c", "exists": True},
            {"field": "data.d", "in": "not-a-list"},
            {"field": "data.e", "exists": "yes"},
            {"field": "data.f"},
            {"not": {"field": "data.g", "equals": {"a": 1}}},
            "text",
        ]
    }
    with pytest.raises(ConfigError) as info:
        compile_filter(when, path="destinations[1].when")
    problems = info.value.problems
    assert [p for p, _ in problems] == [
        "destinations[1].when.all[0].regx",
        "destinations[1].when.all[1].regex",
        "destinations[1].when.all[2]",
        "destinations[1].when.all[3].field",
        "destinations[1].when.all[4].in",
        "destinations[1].when.all[5].exists",
        "destinations[1].when.all[6]",
        "destinations[1].when.all[7].not.equals",
        "destinations[1].when.all[8]",
    ]
    assert "did you mean 'regex'?" in problems[0][1]
    assert "invalid regular expression" in problems[1][1]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"all": []}, "non-empty list of conditions"),
        ({"any": {"field": "a"}}, "non-empty list of conditions"),
        ({"all": [], "field": "a"}, "must be the only key"),
        ({"field": "a", "in": []}, "non-empty list"),
        ({"field": "a", "regex": 5}, "regular expression as text"),
        (5, "expected a condition"),
    ],
)
def test_config_errors(when: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_filter(when, path="when")
    assert message in str(info.value)
