"""DeepSeek Sparse Attention ops, every implementation side by side with the reference it is tested against.

- `reference.py`: the DSA spec in plain torch (indexer logits, top-k positions, sparse MLA prefill/decode); every
  implementation below has these signatures. `static.py`: the same ops with static shapes (the graph-safe reference).
- `triton/`, `tilelang/`: our kernels; `trtllm/`, `flashmla/`: wrappers of vendor kernels (FlashInfer's TRT-LLM-gen,
  FlashMLA + DeepGEMM) converting to and from the reference's arguments.
- `impls.py`: the implementation table (name -> ops); `graph_plan.py`: ops planned once per shape under CUDA graphs;
  `checks.py`: the argument checks the kernel wrappers share; `fp8_latent.py`: SGLang's FP8 656 B latent layout.
Import the module you need (`from sglang_glm5.dsa.reference import sparse_mla`): this package imports nothing,
so the table and the start-up decision stay free of torch (`sglang-glm5 serve` execs launch_server without it).
Which implementation runs where is decided in `attention/capabilities.py` from `configs/dsa-capabilities.json`.
"""
