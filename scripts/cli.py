"""The `lowbit-jax` command line: quantize, generate, eval, bench, demo, finetune.

Every subcommand takes names (models, recipes) only here at the edge and turns them into
objects through one lookup that lists the valid names when it fails. With `--json` a command
prints exactly one JSON object on its last line of stdout; progress goes to stderr.

    lowbit-jax eval --model smollm2-135m --recipe w4a16 --text FILE --ctx 512 --max-windows 2 --json
    lowbit-jax quantize --model smollm2-135m --recipe nvfp4 --out ckpt/nvfp4
    lowbit-jax generate --model smollm2-135m --checkpoint ckpt/nvfp4 --recipe nvfp4 --prompt "Hi"
    lowbit-jax bench --model llama3-8b --recipe w4a16 --batch 8 --new-tokens 64
    lowbit-jax demo
"""

from __future__ import annotations

import argparse
import json
import sys

MODELS_HELP = "model preset: smollm2-135m, minilm-l6 (real weights), llama3-8b, llama3-70b (bench only)"


def _recipe_help() -> str:
    from models.quant import recipe_names
    return "recipe: " + ", ".join(recipe_names())


def _emit(obj: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def cmd_quantize(a) -> None:
    from models import quant
    from scripts.eval import load_model, size_keys
    model, _, _ = load_model(a.model, a.recipe)
    path = quant.save_model(a.out, model, model_name=a.model, recipe=a.recipe)
    _emit({"model": a.model, "recipe": a.recipe, "checkpoint": str(path), **size_keys(model)}, a.json)


def cmd_generate(a) -> None:
    from models.generate import SamplingParams
    from scripts.eval import load_model
    from scripts.generate import generate_text
    params = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                            top_k=a.top_k, top_p=a.top_p, seed=a.seed)
    if not a.prompt:
        from models.generate import GenerateError
        raise GenerateError("no --prompt given")
    for i, p in enumerate(a.prompt):
        if not p.strip():
            from models.generate import GenerateError
            raise GenerateError(f"prompt {i} is empty ({p!r})")
    model, tok, _ = load_model(a.model, a.recipe, a.checkpoint)
    if not hasattr(model, "config") or not hasattr(model.config, "rope_theta"):
        raise ValueError(f"model {a.model!r} is an encoder; generate needs a decoder")
    out = generate_text(model, tok, a.prompt, params, chat=not a.raw, timed=a.timed)
    if a.json:
        print(json.dumps({"model": a.model, "recipe": a.recipe, **out}))
    else:
        for p, t in zip(a.prompt, out["texts"]):
            print(f">>> {p}\n{t}\n")


def cmd_eval(a) -> None:
    from models import config
    from scripts.eval import eval_decoder, eval_encoder
    cfg = config.get_config(a.model)
    if isinstance(cfg, config.BertConfig):
        res = eval_encoder(a.model, a.recipe, checkpoint=a.checkpoint, progress=not a.quiet)
    else:
        if a.text is None:
            raise ValueError("eval of a decoder needs --text FILE (or --text lee for lee_background.cor)")
        text = a.text
        if text == "lee":
            from scripts import data
            text = str(data.lee_background())
        res = eval_decoder(a.model, a.recipe, text, ctx=a.ctx, max_windows=a.max_windows,
                           checkpoint=a.checkpoint, progress=not a.quiet)
    _emit(res, a.json)


def cmd_bench(a) -> None:
    from scripts.generate import bench
    _emit(bench(a.model, a.recipe, batch=a.batch, prompt_len=a.prompt_len, new_tokens=a.new_tokens,
                dtype=a.dtype, seed=a.seed, impl=a.impl, repeats=a.repeats), a.json)


def cmd_demo(a) -> None:
    from scripts.demo import run
    res = run(a.recipes, ctx=a.ctx, windows=a.windows, new_tokens=a.new_tokens, out=a.out,
              keep_checkpoints=a.keep_checkpoints)
    if a.json:
        print(json.dumps(res))


def cmd_finetune(a) -> None:
    from scripts.finetune import run
    _emit(run(model_name=a.model, recipe=a.recipe, text=a.text, steps=a.steps, lr=a.lr,
              seq_len=a.seq_len, batch=a.batch, out=a.out), a.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit-jax", description="Low-bit inference for JAX: quantize, "
                                "generate, evaluate and benchmark Flax models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_):
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(fn=fn)
        s.add_argument("--json", action="store_true", help="print one JSON object on the last line")
        return s

    recipe_help = _recipe_help()
    s = add("quantize", cmd_quantize, "quantize a model by recipe and save an Orbax checkpoint")
    s.add_argument("--model", required=True, help=MODELS_HELP)
    s.add_argument("--recipe", required=True, help=recipe_help)
    s.add_argument("--out", required=True, help="checkpoint directory to write")

    s = add("generate", cmd_generate, "generate text (ChatML-wrapped unless --raw)")
    s.add_argument("--model", default="smollm2-135m", help=MODELS_HELP)
    s.add_argument("--recipe", default="float", help=recipe_help)
    s.add_argument("--checkpoint", help="restore this checkpoint (made by `quantize`) instead of quantizing")
    s.add_argument("--prompt", action="append", help="a prompt; repeat for a batch")
    s.add_argument("--raw", action="store_true", help="plain continuation, no chat template")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=0, help="0 = off")
    s.add_argument("--top-p", type=float, default=1.0, help="in (0, 1]")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--timed", action="store_true", help="run twice and report tokens/s of the second run")

    s = add("eval", cmd_eval, "perplexity (decoder) or Lee similarity correlations (encoder)")
    s.add_argument("--model", required=True, help=MODELS_HELP)
    s.add_argument("--recipe", default="float", help=recipe_help)
    s.add_argument("--checkpoint", help="restore this checkpoint instead of quantizing")
    s.add_argument("--text", help="text file for perplexity ('lee' = lee_background.cor)")
    s.add_argument("--ctx", type=int, default=1024, help="window length in tokens")
    s.add_argument("--max-windows", type=int, default=None, help="score only the first N windows")
    s.add_argument("--quiet", action="store_true", help="no progress bars")

    s = add("bench", cmd_bench, "decode throughput on random weights of any preset")
    s.add_argument("--model", default="smollm2-135m", help=MODELS_HELP)
    s.add_argument("--recipe", default="float", help=recipe_help)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--prompt-len", type=int, default=128)
    s.add_argument("--new-tokens", type=int, default=64)
    s.add_argument("--dtype", default="float32", help="activation / float-leaf dtype (bfloat16 on GPU)")
    s.add_argument("--impl", default="auto", choices=["auto", "pallas", "triton", "xla"])
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)

    s = add("demo", cmd_demo, "the main job: every recipe on real models; one table + plot")
    s.add_argument("--recipes", nargs="+", help="subset of recipes (default: all)")
    s.add_argument("--ctx", type=int, default=512)
    s.add_argument("--windows", type=int, default=2, help="perplexity windows per recipe")
    s.add_argument("--new-tokens", type=int, default=24)
    s.add_argument("--out", default="out/demo", help="directory for demo.json and ppl_vs_bits.png")
    s.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints under OUT/checkpoints")

    s = add("finetune", cmd_finetune, "a few optax steps, training checkpoint, convert, quantize, generate")
    s.add_argument("--model", default="smollm2-135m", help=MODELS_HELP)
    s.add_argument("--recipe", default="w4a16", help=recipe_help)
    s.add_argument("--text", default="lee", help="training text file ('lee' = lee_background.cor)")
    s.add_argument("--steps", type=int, default=3)
    s.add_argument("--lr", type=float, default=1e-5)
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--batch", type=int, default=2)
    s.add_argument("--out", default="out/finetune")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs a subcommand; bad input exits with status 2 and the error's message on stderr."""
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"lowbit-jax {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
