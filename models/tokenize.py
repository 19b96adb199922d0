"""Tokenizers for the two real models, and the ChatML prompt template.

SmolLM2 (GGUF): byte-level BPE built from the file's own vocabulary and merge list with the
`tokenizers` library. Pre-tokenization as in the Hugging Face release (llama.cpp's "smollm"
pre-tokenizer): every digit is split off on its own first, then the GPT-2 byte-level regex.
No BOS is added. Control tokens (<|im_start|>, <|im_end|>, <|endoftext|>, ...) are special
tokens, matched whole in the text and dropped by `decode(..., skip_special_tokens=True)`.

MiniLM (BERT): the WordPiece `tokenizer.json` shipped with the model, with its padding turned
off and truncation at the sentence-transformers `max_seq_length` (256).
"""

from __future__ import annotations

import pathlib

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CONTROL_TOKEN = 3  # llama.cpp token_type for control tokens

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def tokenizer_from_gguf(reader) -> Tokenizer:
    from models.weights import gguf_field
    model_kind = gguf_field(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {model_kind!r} is not supported (only byte-level BPE 'gpt2')")
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    types = gguf_field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in gguf_field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == CONTROL_TOKEN])
    return tok


def bert_tokenizer(model_dir: str | pathlib.Path, max_len: int = 256) -> Tokenizer:
    tok = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


def chatml(messages: list[dict[str, str]], *, system: str | None = SMOLLM_SYSTEM,
           add_generation_prompt: bool = True) -> str:
    """The SmolLM2-Instruct chat template (ChatML), rendered without Jinja.

    A default system message is inserted when the first message is not a system message.
    """
    out = []
    if system is not None and (not messages or messages[0]["role"] != "system"):
        out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)
