"""quantize_params / dequantize_params: default skips, ordered rules, reports, NaN checks."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowbit_jax as lj


def params():
    rng = np.random.default_rng(0)
    f = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)  # noqa: E731
    return {
        "embed_tokens": {"embedding": f(100, 64)},
        "layers": {str(i): {"attn": {"q_proj": {"kernel": f(64, 64), "bias": f(64)},
                                     "o_proj": {"kernel": f(64, 64)}},
                            "mlp": {"up": {"kernel": f(64, 128)}, "down": {"kernel": f(128, 64)}},
                            "input_norm": {"scale": f(64)}} for i in range(2)},
        "lm_head": {"kernel": f(64, 100)},
        "count": jnp.arange(3),
    }


def test_default_policy_quantizes_matmul_weights_only():
    q, rep = lj.quantize_params(params(), "w4a16", return_report=True)
    assert isinstance(q["layers"]["0"]["attn"]["q_proj"]["kernel"], lj.QTensor)
    assert isinstance(q["lm_head"]["kernel"], lj.QTensor)
    assert not isinstance(q["embed_tokens"]["embedding"], lj.QTensor)
    assert not isinstance(q["layers"]["1"]["input_norm"]["scale"], lj.QTensor)
    assert not isinstance(q["layers"]["1"]["attn"]["q_proj"]["bias"], lj.QTensor)
    assert q["count"].dtype == jnp.int32
    assert len(rep.formats) == 9 and rep.bytes_after < rep.bytes_before / 2
    assert "embed_tokens/embedding" in rep.skipped


def test_rules_are_ordered_first_match_wins(caplog):
    rules = [(r"lm_head", "skip"), (r"mlp/down", "int8"), (r"mlp", "nvfp4"), (r"nothing_here", "int8")]
    with caplog.at_level(logging.WARNING):
        q, rep = lj.quantize_params(params(), "w4a16", rules, return_report=True)
    assert not isinstance(q["lm_head"]["kernel"], lj.QTensor)
    assert q["layers"]["0"]["mlp"]["down"]["kernel"].fmt.name == "int8"
    assert q["layers"]["0"]["mlp"]["up"]["kernel"].fmt.name == "nvfp4"
    assert q["layers"]["0"]["attn"]["o_proj"]["kernel"].fmt.name == "int4-g128"
    assert rep.unmatched_rules == ("nothing_here",)
    assert "nothing_here" in caplog.text


def test_recipe_layout_and_activation_travel_with_the_weight():
    q = lj.quantize_params(params(), "fp8-block")
    k = q["layers"]["0"]["mlp"]["up"]["kernel"]
    assert k.layout == "nk" and k.act.name == "act-fp8-1x128" and k.shape == (64, 128)


def test_dequantize_params_roundtrip_and_float_recipe():
    p = params()
    d = lj.dequantize_params(lj.quantize_params(p, "w8a16"))
    assert jax.tree_util.tree_structure(d) == jax.tree_util.tree_structure(p)
    w, dw = p["lm_head"]["kernel"], d["lm_head"]["kernel"]
    assert float(jnp.max(jnp.abs(w - dw))) < float(jnp.max(jnp.abs(w))) / 100
    assert lj.quantize_params(p, "float") is p


def test_nan_and_inf_name_the_path():
    p = params()
    p["layers"]["1"]["mlp"]["up"]["kernel"] = p["layers"]["1"]["mlp"]["up"]["kernel"].at[3, 4].set(jnp.nan)
    with pytest.raises(ValueError, match=r"'layers/1/mlp/up/kernel' holds 1 NaN/Inf"):
        lj.quantize_params(p, "w4a16")
    p = params()
    p["lm_head"]["kernel"] = p["lm_head"]["kernel"].at[0, 0].set(jnp.inf)
    with pytest.raises(ValueError, match="lm_head/kernel"):
        lj.quantize_params(p, "nvfp4")


@pytest.mark.parametrize("rules,msg", [
    ([("(", "int8")], "does not compile"),
    ([("mlp", "int7")], "valid formats"),
    ([("mlp", "act-int8-token")], "activation format"),
    (["mlp"], "pair"),
    ([("count", "int8")], "not a float array"),
])
def test_bad_rules(rules, msg):
    with pytest.raises((ValueError, KeyError), match=msg):
        lj.quantize_params(params(), "w4a16", rules)


def test_unknown_recipe():
    with pytest.raises(lj.UnknownFormatError, match="valid recipes"):
        lj.quantize_params(params(), "w2a2")


def test_jit_and_nnx_state():
    from flax import nnx
    model = nnx.Linear(64, 32, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    q = jax.jit(lambda s: lj.quantize_params(s, "mxfp4"))(state)
    kernel = q["kernel"]
    assert isinstance(kernel.get_value() if hasattr(kernel, "get_value") else kernel, lj.QTensor)


def test_rule_format_that_cannot_meet_the_recipe_activations_names_the_path():
    with pytest.raises(ValueError, match=r"'lm_head/kernel'.*int8.*w8a8-fp8"):
        lj.quantize_params(params(), "w8a8-fp8", [("lm_head", "int8")])
