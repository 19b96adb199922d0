"""The format/recipe registry is the public contract: names, dtypes, blocks, errors."""

import jax.numpy as jnp
import pytest

import lowbit_jax as lj

TABLE = {  # name: (element dtype, scale dtype, block)
    "int8": (jnp.int8, jnp.float32, (None, 1)),
    "int4-g32": (jnp.int4, jnp.float32, (32, 1)),
    "int4-g64": (jnp.int4, jnp.float32, (64, 1)),
    "int4-g128": (jnp.int4, jnp.float32, (128, 1)),
    "uint4-g32": (jnp.uint4, jnp.float32, (32, 1)),
    "uint4-g64": (jnp.uint4, jnp.float32, (64, 1)),
    "uint4-g128": (jnp.uint4, jnp.float32, (128, 1)),
    "fp8": (jnp.float8_e4m3fn, jnp.float32, (None, 1)),
    "fp8-block128": (jnp.float8_e4m3fn, jnp.float32, (128, 128)),
    "int8-block32": (jnp.int8, jnp.float32, (32, 32)),
    "mxfp8": (jnp.float8_e4m3fn, jnp.float8_e8m0fnu, (32, 1)),
    "mxfp4": (jnp.float4_e2m1fn, jnp.float8_e8m0fnu, (32, 1)),
    "nvfp4": (jnp.float4_e2m1fn, jnp.float8_e4m3fn, (16, 1)),
    "act-int8-token": (jnp.int8, jnp.float32, (None, 1)),
    "act-fp8-token": (jnp.float8_e4m3fn, jnp.float32, (None, 1)),
    "act-fp8-1x128": (jnp.float8_e4m3fn, jnp.float32, (128, 1)),
    "act-int8-1x32": (jnp.int8, jnp.float32, (32, 1)),
    "act-mxfp8": (jnp.float8_e4m3fn, jnp.float8_e8m0fnu, (32, 1)),
}
RECIPES = ["w8a16", "w4a16", "w4a16-g32", "w4a16-g64", "w4a16-uint4", "w4a16-uint4-g32",
           "w4a16-uint4-g64", "w8a8-int8", "w8a8-fp8", "fp8-block", "int8-block", "mxfp8",
           "w8a16-fp8", "mxfp4", "mxfp4-a8", "nvfp4"]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_registry_matches_the_table(name):
    ed, sd, block = TABLE[name]
    f = lj.get_format(name)
    assert (f.element_dtype, f.scale_dtype, f.block) == (jnp.dtype(ed), jnp.dtype(sd), block)
    assert f.kind == ("activation" if name.startswith("act-") else "weight")
    assert lj.get_format(f) is f
    assert lj.QuantFormat.from_json(f.to_json()) == f


def test_asymmetry_and_scale_rules():
    assert not lj.get_format("uint4-g128").symmetric and lj.get_format("int4-g128").symmetric
    assert lj.get_format("mxfp4").scale_rule == "mx-floor"
    assert lj.get_format("mxfp4-up").scale_rule == "mx-up"


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_exist_and_pair_consistently(name):
    r = lj.get_recipe(name)
    assert r.name == name and r.weight.kind == "weight"
    if r.act is not None:
        lj.check_pair(r.weight, r.act)
    assert set(RECIPES) <= set(lj.RECIPES)


def test_unknown_names_list_valid_ones():
    with pytest.raises(lj.UnknownFormatError, match=r"'int3'.*int4-g128"):
        lj.get_format("int3")
    with pytest.raises(lj.UnknownFormatError, match=r"'w3a16'.*w4a16"):
        lj.get_recipe("w3a16")


def test_mismatched_pair_names_both():
    with pytest.raises(ValueError, match="fp8-block128.*act-int8-token"):
        lj.check_pair(lj.get_format("fp8-block128"), lj.get_format("act-int8-token"))
    with pytest.raises(ValueError, match="int8.*act-fp8-1x128"):
        lj.check_pair(lj.get_format("int8"), lj.get_format("act-fp8-1x128"))


@pytest.mark.parametrize("block", [(48, 1), (32, 3), (0, 1)])
def test_user_block_must_be_power_of_two(block):
    with pytest.raises(ValueError, match="power of two"):
        lj.QuantFormat(name="bad", element_dtype=jnp.int8, scale_dtype=jnp.float32, block=block)


def test_user_format_dtype_checks():
    with pytest.raises(ValueError, match="element_dtype"):
        lj.QuantFormat(name="bad", element_dtype=jnp.int16, scale_dtype=jnp.float32, block=(32, 1))
    with pytest.raises(ValueError, match="MX scale rules"):
        lj.QuantFormat(name="bad", element_dtype=jnp.float4_e2m1fn, scale_dtype=jnp.float32,
                       block=(32, 1), scale_rule="mx-floor")
    custom = lj.QuantFormat(name="int4-g16-bf16", element_dtype=jnp.int4, scale_dtype=jnp.bfloat16, block=(16, 1))
    assert lj.register_format(custom) is lj.get_format("int4-g16-bf16")
    with pytest.raises(ValueError, match="already registered"):
        lj.register_format(lj.QuantFormat(name="int4-g16-bf16", element_dtype=jnp.int4,
                                          scale_dtype=jnp.float32, block=(16, 1)))
