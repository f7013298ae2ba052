"""Rule forms, the rule pipeline, unmapped keys, pass-through and config errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.errors import ConfigError, MappingError
from bridge.mapping import compile_mapping
from tests.mapping.helpers import MISSING

LEAD: dict[str, Any] = {
    "id": "led_1",
    "url": "https://example.com/form/",
    "created": "2018-07-12T16:29:42Z",
    "data": {
        "first_name": "John",
        "last_name": "Doe",
        "blank": "  ",
        "empty": "",
        "zero": 0,
        "no": False,
        "size": "101-250",
        "items": [{"name": "a"}, {"name": "b"}],
        "tags": ["x", "y"],
    },
}


def one(rule: Any, lead: dict[str, Any] = LEAD) -> Any:
    record = compile_mapping({"out": rule}, unmapped="ignore", path="m").apply(lead).record
    return record.get("out", MISSING)


RULES: list[tuple[Any, Any]] = [
    # source paths
    ("id", "led_1"),
    ("data.first_name", "John"),
    ({"source": "data.last_name"}, "Doe"),
    ("data.items[1].name", "b"),
    ("data.tags", ["x", "y"]),
    ("data.missing", MISSING),
    ("data.first_name.deeper", MISSING),
    ("data.items[9].name", MISSING),
    ("data.blank", MISSING),
    ("data.zero", 0),
    ("data.no", False),
    # value
    ({"value": "Web"}, "Web"),
    ({"value": 0}, 0),
    ({"value": ""}, MISSING),
    # template
    ({"template": "{data.first_name} {data.last_name}"}, "John Doe"),
    ({"template": "{ data.missing } {data.last_name}"}, "Doe"),
    ({"template": "{{literal}} {id}"}, "{literal} led_1"),
    ({"template": "{data.zero}/{data.no}/{data.tags}"}, '0/false/["x", "y"]'),
    ({"template": "{data.missing}"}, MISSING),
    # first_of
    ({"first_of": ["data.empty", "data.blank", "data.last_name", "id"]}, "Doe"),
    ({"first_of": ["data.missing", "data.empty"]}, MISSING),
    # join
    ({"join": ["data.first_name", "data.empty", "data.last_name"]}, "John, Doe"),
    ({"join": ["data.first_name", "data.last_name"], "separator": " "}, "John Doe"),
    ({"join": ["data.missing"]}, MISSING),
    # map
    ({"source": "data.size", "map": {"101-250": 250}}, 250),
    ({"source": "data.first_name", "map": {" JOHN ": "j"}}, "j"),
    ({"source": "data.zero", "map": {"0": "none"}}, "none"),
    ({"source": "data.no", "map": {False: "n"}}, "n"),
    ({"source": "data.size", "map": {"1-10": 10}}, MISSING),
    ({"source": "data.size", "map": {"1-10": 10}, "default": 1}, 1),
    ({"source": "data.tags", "map": {"x": 1}}, MISSING),
    # default and required
    ({"source": "data.missing", "default": "[none]"}, "[none]"),
    ({"source": "data.blank", "default": "[none]", "required": True}, "[none]"),
    ({"source": "data.first_name", "default": "[none]"}, "John"),
    ({"source": "data.missing", "default": "Keep Case", "transform": ["lower"]}, "Keep Case"),
    ({"source": "data.first_name", "required": True}, "John"),
]


@pytest.mark.parametrize(("rule", "expected"), RULES)
def test_rule(rule: Any, expected: Any) -> None:
    assert one(rule) == expected


@pytest.mark.parametrize(
    "rule",
    [
        {"source": "data.missing", "required": True},
        {"source": "data.blank", "required": True},
        {"source": "data.size", "map": {"1-10": 10}, "required": True},
        {"first_of": ["data.empty", "data.missing"], "required": True},
    ],
)
def test_required_empty_result_is_a_mapping_error_naming_the_field(rule: Any) -> None:
    with pytest.raises(MappingError) as info:
        one(rule)
    assert info.value.field == "out"
    assert str(info.value).startswith("out: required, but the lead has no value")


def test_constants_are_not_shared_between_records() -> None:
    compiled = compile_mapping({"out": {"value": {"a": [1]}}}, unmapped="ignore", path="m")
    first = compiled.apply(LEAD).record
    first["out"]["a"].append(2)
    assert compiled.apply(LEAD).record == {"out": {"a": [1]}}


def test_record_follows_mapping_order_and_omits_empty_results() -> None:
    rules = {"B": "data.last_name", "Empty": "data.empty", "A": "data.first_name"}
    record = compile_mapping(rules, unmapped="ignore", path="m").apply(LEAD).record
    assert list(record.items()) == [("B", "Doe"), ("A", "John")]


def test_mapping_odd_leads_does_not_crash() -> None:
    compiled = compile_mapping(
        {"a": "data.x", "b": {"template": "{data.x}"}}, unmapped="ignore", path="m"
    )
    for lead in ({}, {"data": None}, {"data": [1, 2]}, {"data": "text"}):
        assert compiled.apply(lead).record == {}


# --------------------------------------------------------------------------- unmapped


def test_unmapped_keys_are_listed_in_lead_order() -> None:
    compiled = compile_mapping(
        {"n": {"template": "{data.first_name}"}, "s": {"first_of": ["data.size"]}},
        unmapped="ignore",
        path="m",
    )
    result = compiled.apply(LEAD)
    assert result.unmapped_keys == ["last_name", "blank", "empty", "zero", "no", "items", "tags"]
    assert "Description" not in result.record


def test_collect_into_appends_non_empty_unmapped_values_as_lines() -> None:
    rules = {"Description": "data.first_name", "Size": "data.size"}
    lead = {
        "id": "led_1",
        "data": {"first_name": "Hi", "size": "5", "new_key": "v", "e": "", "n": 3},
    }
    compiled = compile_mapping(rules, unmapped={"collect_into": "Description"}, path="m")
    result = compiled.apply(lead)
    assert result.record["Description"] == "Hi\n\nnew_key: v\nn: 3"
    assert result.unmapped_keys == ["new_key", "e", "n"]
    assert compiled.targets == ("Description", "Size")


def test_collect_into_a_field_no_rule_fills() -> None:
    compiled = compile_mapping({"a": "data.a"}, unmapped={"collect_into": "Notes"}, path="m")
    assert compiled.targets == ("a", "Notes")
    lead = {"data": {"a": 1, "b": {"deep": ["x"]}}}
    assert compiled.apply(lead).record == {"a": 1, "Notes": 'b: {"deep": ["x"]}'}
    assert compiled.apply({"data": {"a": 1}}).record == {"a": 1}


def test_a_rule_reading_all_of_data_leaves_nothing_unmapped() -> None:
    compiled = compile_mapping({"all": "data"}, unmapped={"collect_into": "all"}, path="m")
    result = compiled.apply(LEAD)
    assert result.unmapped_keys == []
    assert result.record["all"] == LEAD["data"]


# --------------------------------------------------------------------------- pass-through


def test_no_rules_and_no_default_passes_the_lead_through_as_a_copy() -> None:
    compiled = compile_mapping(None, unmapped="ignore", path="m")
    assert compiled.passthrough and compiled.targets == ()
    lead = copy.deepcopy(LEAD)
    result = compiled.apply(lead)
    assert result.record == LEAD and result.unmapped_keys == []
    result.record["data"]["first_name"] = "changed"
    assert lead == LEAD


def test_default_rules_are_used_when_the_destination_has_none() -> None:
    compiled = compile_mapping(None, unmapped="ignore", path="m", default={"n": "data.last_name"})
    assert compiled.apply(LEAD).record == {"n": "Doe"}
    explicit = compile_mapping({"x": "id"}, unmapped="ignore", path="m", default={"n": "id"})
    assert explicit.apply(LEAD).record == {"x": "led_1"}


# --------------------------------------------------------------------------- config errors


def problems_of(rules: Any, unmapped: Any = "ignore") -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        compile_mapping(rules, unmapped=unmapped, path="destinations[0].mapping")
    return info.value.problems


def test_every_problem_of_a_mapping_is_reported_with_its_key_path() -> None:
    problems = problems_of(
        {
            "A": "data..email",
            "B": {"source": "data.x", "transform": ["lwoer", "truncate(x)"]},
            "C": {"value": 1, "template": "{id}"},
            "D": {"templat": "{id}"},
            "E": {"template": "{id"},
            "F": {"first_of": []},
            "G": {"source": "id", "map": ["a"], "required": "yes"},
            "H": {"source": "id", "separator": ","},
            "I": 42,
        }
    )
    paths = [p for p, _ in problems]
    assert paths == [
        "destinations[0].mapping.A",
        "destinations[0].mapping.B.transform[0]",
        "destinations[0].mapping.B.transform[1]",
        "destinations[0].mapping.C",
        "destinations[0].mapping.D.templat",
        "destinations[0].mapping.D",
        "destinations[0].mapping.E.template",
        "destinations[0].mapping.F.first_of",
        "destinations[0].mapping.G.map",
        "destinations[0].mapping.G.required",
        "destinations[0].mapping.H.separator",
        "destinations[0].mapping.I",
    ]
    messages = dict(problems)
    assert "malformed source path 'data..email'" in problems[0][1]
    assert "did you mean 'lower'?" in problems[1][1]
    assert "exactly one source, found value and template" in messages["destinations[0].mapping.C"]
    assert "did you mean 'template'?" in messages["destinations[0].mapping.D.templat"]
    assert "unmatched '{'" in messages["destinations[0].mapping.E.template"]


@pytest.mark.parametrize(
    ("rules", "path", "message"),
    [
        ({}, "destinations[0].mapping", "empty mapping"),
        ({"": "id"}, "destinations[0].mapping", "target field names are non-empty text"),
        (
            {"x": {"template": "{data.}"}},
            "destinations[0].mapping.x.template",
            "placeholder {data.}",
        ),
        ({"x": {"template": "a}b"}}, "destinations[0].mapping.x.template", "unmatched '}'"),
        ({"x": {"template": "x" * 10_001}}, "destinations[0].mapping.x.template", "longer than"),
        ({"x": {"template": 5}}, "destinations[0].mapping.x.template", "expected text"),
        ({"x": {"join": "data.a"}}, "destinations[0].mapping.x.join", "non-empty list"),
        (
            {"x": {"first_of": ["ok", "bad path"]}},
            "destinations[0].mapping.x.first_of[1]",
            "malformed",
        ),
        (
            {"x": {"join": ["a"], "separator": 1}},
            "destinations[0].mapping.x.separator",
            "expected text",
        ),
        (
            {"x": {"source": "a", "map": {"A": 1, "a": 2}}},
            "destinations[0].mapping.x.map.a",
            "duplicate",
        ),
        ({"x": {"source": "a", "map": {}}}, "destinations[0].mapping.x.map", "non-empty mapping"),
        ({"x": {"default": 1}}, "destinations[0].mapping.x", "needs a source"),
        ({"x": {"source": 5}}, "destinations[0].mapping.x.source", "expected a source path"),
    ],
)
def test_config_errors(rules: Any, path: str, message: str) -> None:
    [(found_path, found)] = problems_of(rules)
    assert found_path == path
    assert message in found


def test_bad_unmapped_policy_is_reported() -> None:
    [(path, message)] = problems_of({"a": "id"}, unmapped="drop")
    assert path == "destinations[0].unmapped"
    assert "collect_into" in message


def test_problems_in_a_default_mapping_name_it() -> None:
    with pytest.raises(ConfigError) as info:
        compile_mapping(None, unmapped="ignore", path="d.mapping", default={"a": {"sorce": "id"}})
    assert info.value.problems[0][0].startswith("d.mapping (the connector's default mapping).a")
