import pytest

from sglang_glm5.config import OverrideArgsError, parse_override_args


def test_override_args_object_parses():
    assert parse_override_args('{"index_topk_pattern": "FSSF"}') == {"index_topk_pattern": "FSSF"}


@pytest.mark.parametrize(
    "value,message",
    [
        ('{"index_topk": 8', "--json-model-override-args is not valid JSON: Expecting ',' delimiter at character 16"),
        ("index_topk=8", "--json-model-override-args is not valid JSON: Expecting value at character 0"),
        ('["index_topk", 8]', "--json-model-override-args must be a JSON object of config fields, got list"),
        ('"FSSF"', "--json-model-override-args must be a JSON object of config fields, got str"),
    ],
    ids=["unclosed", "not-json", "list", "string"],
)
def test_override_args_refusals_name_the_flag(value, message):
    with pytest.raises(OverrideArgsError) as err:
        parse_override_args(value)
    assert message in str(err.value) and repr(value) in str(err.value)
