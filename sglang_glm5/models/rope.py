"""GLM-5's rotary embedding: one builder for both places that rotate (MLA's rope part, the indexer's query and key)."""

from sglang.srt.layers.rotary_embedding import get_rope


def glm5_rope(config, head_size: int, interleave: bool):
    """SGLang's RoPE over the first `qk_rope_head_dim` dims of a `head_size`-wide head, at GLM-5's base and maximum
    position; `interleave` rotates pairs (2i, 2i+1) (the config's *_rope_interleave) instead of halves (NeoX)."""
    return get_rope(
        head_size,
        rotary_dim=config.qk_rope_head_dim,
        max_position=config.max_position_embeddings,
        base=config.rope_theta,
        is_neox_style=not interleave,
    )
