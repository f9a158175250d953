"""The DSA implementation table: defaults per device, the user's flag honoured, unknown choices refused by name."""

import pytest

from sglang_glm5.attention.impls import DSA_IMPLS, DSABackendChoiceError, resolve_impl
from sglang_glm5.ops import dsa_reference


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_cpu_default_is_the_reference(phase):
    impl = resolve_impl(None, phase, "cpu")
    assert impl.name == "reference"
    assert impl.indexer_logits is dsa_reference.indexer_logits
    assert impl.topk_positions is dsa_reference.topk_positions
    assert impl.sparse_mla is getattr(dsa_reference, f"sparse_mla_{phase}")


def test_unknown_flag_value_names_flag_and_choices():
    with pytest.raises(DSABackendChoiceError) as err:
        resolve_impl("flashmla_sparse", "decode", "cpu")
    message = str(err.value)
    assert "--dsa-decode-backend flashmla_sparse" in message
    for name in DSA_IMPLS:
        assert name in message


def test_no_default_on_a_device_without_one():
    with pytest.raises(DSABackendChoiceError, match="--dsa-prefill-backend"):
        resolve_impl(None, "prefill", "xpu")
