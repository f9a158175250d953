"""Argument values typed by the tool's JSON schema (`sglang_glm5.parsers.arguments.typed_value`)."""

import pytest

from sglang_glm5.parsers.arguments import typed_value

PARAMETERS = {
    "type": "object",
    "$defs": {"count": {"type": "integer"}, "label": {"type": "string"}},
    "properties": {
        "id": {"type": "string"},
        "n": {"type": "integer"},
        "x": {"type": "number"},
        "flag": {"type": "boolean"},
        "obj": {"type": "object"},
        "arr": {"type": "array"},
        "ref_count": {"$ref": "#/$defs/count"},
        "ref_label": {"$ref": "#/$defs/label"},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "nullable": {"type": ["string", "null"]},
        "choice": {"enum": ["7", 8, True]},
        "untyped": {"description": "anything"},
    },
}

CASES = [
    ("id", "123", "123"),
    ("id", "00123", "00123"),
    ("id", "  padded ", "  padded "),
    ("id", '"quoted"', '"quoted"'),
    ("id", "null", "null"),
    ("n", "123", 123),
    ("n", "1.5", "1.5"),
    ("n", "abc", "abc"),
    ("x", "1.5", 1.5),
    ("x", "2", 2),
    ("x", "NaN", "NaN"),
    ("flag", "true", True),
    ("flag", "yes", "yes"),
    ("obj", '{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}),
    ("obj", '{"a": ', '{"a": '),
    ("arr", "[1, 2]", [1, 2]),
    ("ref_count", "42", 42),
    ("ref_label", "42", "42"),
    ("either", "42", 42),
    ("either", "forty-two", "forty-two"),
    ("nullable", "null", None),
    ("nullable", "12", "12"),
    ("choice", "7", "7"),
    ("choice", "8", 8),
    ("choice", "true", True),
    ("untyped", "12", 12),
    ("untyped", "twelve", "twelve"),
    ("undeclared", '{"k": 1}', {"k": 1}),
]


@pytest.mark.parametrize("key,raw,expected", CASES, ids=[f"{k}={raw!r}" for k, raw, _ in CASES])
def test_typed_by_schema(key, raw, expected):
    value = typed_value(raw, PARAMETERS, key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("parameters", [None, {}, {"type": "object"}, {"$ref": "#/missing"}], ids=str)
def test_without_schema_json_literal_rules(parameters):
    assert typed_value("123", parameters, "k") == 123
    assert typed_value("abc", parameters, "k") == "abc"
