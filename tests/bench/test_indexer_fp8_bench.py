"""bench/indexer_fp8.py on CPU: its DeepGEMM arguments (weights folded with q_scale * D**-0.5, key ranges ks/ke) give
the reference's logits through SGLang's own torch fallback of fp8_mqa_logits, so a GPU run compares like with like."""

import pytest
import torch

from bench import indexer_fp8
from sglang_glm5.dsa import reference as dsa_reference

BF16_TOL = 2e-2  # SGLang's fallback rounds each head's q.k to bf16 before the relu


@pytest.mark.parametrize("ctx,tokens", [(37, 37), (130, 9)], ids=["prefill-L37", "chunk-L130-T9"])
def test_deepgemm_arguments_give_the_reference_logits(ctx, tokens):
    from sglang.srt.layers.attention.dsa.utils import _fp8_mqa_logits_torch

    problem = indexer_fp8.make_problem(ctx, tokens, torch.device("cpu"), seed=ctx)
    args = indexer_fp8.quantized(problem, torch.float8_e4m3fn)
    ref = dsa_reference.indexer_logits_fp8(*args)
    theirs = _fp8_mqa_logits_torch(*indexer_fp8.deepgemm_args(args))
    visible = torch.arange(ctx) <= problem["q_pos"][:, None]
    assert theirs.shape == (tokens, ctx) and (theirs[~visible] == 0).all()  # masked as DeepGEMM's clean_logits
    scale = ref[visible].abs().max()
    torch.testing.assert_close(theirs[visible], ref[visible], atol=BF16_TOL * scale, rtol=BF16_TOL)


def test_check_catches_a_wrong_diagonal_and_a_missing_mask():
    problem = indexer_fp8.make_problem(20, 20, torch.device("cpu"), seed=1)
    ref = dsa_reference.indexer_logits_fp8(*indexer_fp8.quantized(problem, torch.float8_e4m3fn))
    indexer_fp8.check(ref.clone(), ref, problem["q_pos"], "tilelang")
    off = ref.clone()
    off.diagonal().add_(ref.abs().max())
    with pytest.raises(AssertionError, match="tilelang"):
        indexer_fp8.check(off, ref, problem["q_pos"], "tilelang")
    unmasked = torch.nan_to_num(ref, neginf=0.0)
    with pytest.raises(AssertionError, match="positions past q_pos are not -inf"):
        indexer_fp8.check(unmasked, ref, problem["q_pos"], "triton")
    indexer_fp8.check(unmasked, ref, problem["q_pos"], "deepgemm")  # DeepGEMM is compared on visible positions only


def test_without_a_gpu_it_says_so_and_writes_nothing(capsys, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: bench/gpu_check.sh runs this benchmark for real")
    monkeypatch.setattr(indexer_fp8.common, "update_section", lambda *a, **k: pytest.fail("wrote RESULTS.md"))
    indexer_fp8.main(["--context", "64"])
    assert "no GPU" in capsys.readouterr().out
