"""Flax NNX models that run on float or quantized weights (floor 3 of lowbit-jax).

Tour:
  config.py    frozen configs + presets: smollm2-135m, minilm-l6, llama3-8b, llama3-70b.
  layers.py    QDense (kernel = float array or QTensor, multiplied by `lowbit_jax.qmatmul`),
               RMSNorm, LayerNorm, Embed, rotate-half RoPE, grouped-query attention.
  llama.py     Llama-family decoder with a functional KV cache.
  bert.py      BERT encoder with mean pooling (sentence embeddings).
  weights.py   GGUF (dequantized to f32, Q/K rows un-permuted) and HF safetensors import.
  tokenize.py  byte-level BPE from a GGUF vocabulary, BERT WordPiece, the ChatML template.
  generate.py  one jitted prefill + while_loop decode; greedy / temperature / top-k / top-p.
  quant.py     quantize / save / restore whole models by recipe (same paths, QTensor leaves).
  evaluate.py  perplexity (non-overlapping windows) and Lee-corpus similarity correlations.

Nothing here downloads or reads files by name; `scripts/` does that and hands us paths.
"""
