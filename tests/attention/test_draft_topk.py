"""GLM-5's EAGLE draft backends serve chain drafts only: a tree (topk > 1) is refused with the flag to use."""

import pytest

from sglang_glm5.attention.draft import EagleTopkError, Glm5DSAMultiStepBackend


@pytest.mark.parametrize("topk", [2, 4], ids=["topk2", "topk4"])
def test_tree_drafts_refused(topk):
    with pytest.raises(EagleTopkError, match=f"--speculative-eagle-topk {topk}: .*use --speculative-eagle-topk 1"):
        Glm5DSAMultiStepBackend(model_runner=None, topk=topk, speculative_num_steps=3)
