"""The DSA implementation table: a name loads its ops, unknown choices refused by name (defaults: test_capabilities)."""

import pytest

from sglang_glm5.dsa.impls import DSA_IMPLS, DSABackendChoiceError, resolve_impl
from sglang_glm5.dsa import reference as dsa_reference


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_reference_loads_the_reference_ops(phase):
    impl = resolve_impl("reference", phase, "cpu")
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
