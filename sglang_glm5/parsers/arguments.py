"""Typing GLM-5's raw `<arg_value>` text by the tool's JSON schema.

GLM-5 writes a string argument verbatim and any other value as JSON. So: a property the schema types as string alone
keeps its text exactly ("00123" stays "00123"); a value whose JSON reading has a type the schema allows becomes that
JSON value ("123" for an integer becomes 123), an `enum` member is matched as written first ("1" in ["1", 2]
stays "1"); a property without schema follows JSON literal rules (JSON if the text
parses as JSON, else the text); anything else keeps its text, for the client to validate against its own schema.
"""

import json
from typing import Any

_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}
_UNION_KEYWORDS = ("anyOf", "oneOf")


def json_type(value: Any) -> str:
    return _JSON_TYPES[type(value)]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def json_literal(raw: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return False, None


def _resolve(schema: Any, root: Any, seen: frozenset[int]) -> tuple[Any, frozenset[int]]:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and id(schema) not in seen:
        seen = seen | {id(schema)}
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return None, seen
        target = root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        schema = target
    return schema, seen


def allowed_types(schema: Any, root: Any, seen: frozenset[int] = frozenset()) -> set[str] | None:
    """The JSON types `schema` admits, or None where it does not restrict the type."""
    schema, seen = _resolve(schema, root, seen)
    if not isinstance(schema, dict) or id(schema) in seen:
        return None
    seen = seen | {id(schema)}
    declared = schema.get("type")
    if isinstance(declared, str):
        types = {declared}
    elif isinstance(declared, list):
        types = set(declared)
    elif "const" in schema or isinstance(schema.get("enum"), list):
        values = [schema["const"]] if "const" in schema else schema["enum"]
        types = {json_type(v) for v in values if type(v) in _JSON_TYPES}
    else:
        branches = next((schema[k] for k in _UNION_KEYWORDS if isinstance(schema.get(k), list)), None)
        if branches is None:
            return None
        branch_types = [allowed_types(b, root, seen) for b in branches]
        if any(t is None for t in branch_types):
            return None
        types = set().union(*branch_types)
    if "number" in types:
        types.add("integer")
    return types


def property_schema(parameters: Any, key: str) -> Any:
    resolved, _ = _resolve(parameters, parameters, frozenset())
    if not isinstance(resolved, dict) or not isinstance(resolved.get("properties"), dict):
        return None
    return resolved["properties"].get(key)


def _enum_choice(raw: str, schema: Any, root: Any) -> tuple[bool, Any]:
    """An `enum`/`const` member `raw` stands for: the string itself first, else its JSON reading."""
    schema, _ = _resolve(schema, root, frozenset())
    if not isinstance(schema, dict) or not ("const" in schema or isinstance(schema.get("enum"), list)):
        return False, None
    members = [schema["const"]] if "const" in schema else schema["enum"]
    is_json, value = json_literal(raw)
    for candidate, ok in ((raw, True), (value, is_json)):
        if ok and any(type(m) is type(candidate) and m == candidate for m in members):
            return True, candidate
    return False, None


def typed_value(raw: str, parameters: Any, key: str) -> Any:
    """The JSON value of argument `key` written as `raw`, typed by the tool's `parameters` schema."""
    schema = property_schema(parameters, key)
    is_member, member = _enum_choice(raw, schema, parameters)
    if is_member:
        return member
    types = allowed_types(schema, parameters)
    is_json, value = json_literal(raw)
    if types is None:
        return value if is_json else raw
    if types == {"string"}:
        return raw
    if is_json and json_type(value) in types and json_type(value) != "string":
        return value
    return raw
