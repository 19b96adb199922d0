"""Compile the weight-only Triton kernels for sm_90a on any machine (no GPU) and report what
the GPU will run: the global-load widths in the PTX, registers and local-memory stack
(`cuobjdump -res-usage` of the cubin), and the size of the main loop in SASS (`nvdisasm`;
"loop": instructions from its label to its backward branch). Each launch is built by the same code the GPU path
uses (`triton_kernel.triton_launch`, the chooser's config for the given device kind) and
specialized as jax-triton 0.3.1 specializes it (pointers 16-byte aligned).

This is how the byte-wide weight loads were found (BENCHMARKS.md): METHOD.md's "read what
costs no device time". Needs `triton` (the dev extra installs it on Linux x86-64).

    ./dev run python -m scripts.ptx_report [--shape 4096x14336] [--ms 1,16,1024]
        [--formats int4-g128,int8] [--layout nk] [--device-kind "NVIDIA H200"]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import subprocess
import tempfile

import jax
import jax.numpy as jnp

from pallas_kernels.weight_only import config as wcfg, testing, triton_kernel

_PTR = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "uint8": "u8", "int8": "i8",
        "uint32": "u32", "int32": "i32"}


def compile_launch(kernel, arrays, out_shape, params, *, num_warps: int, num_stages: int):
    """triton.compile of one launch for sm_90a (pointers: inputs then the output)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptrs = [a.dtype for a in arrays] + [out_shape.dtype]
    names = kernel.arg_names
    sig = {names[i]: "*" + _PTR[jnp.dtype(d).name] for i, d in enumerate(ptrs)}
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(ptrs))}
    sig.update({k: "constexpr" for k in params})
    src = ASTSource(kernel, {n: sig[n] for n in names}, constexprs=dict(params), attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def loop_ops(sass: str) -> collections.Counter:
    """Opcodes (without modifiers) of the largest loop in `nvdisasm -c` output: the
    instructions from a label to the furthest backward branch to it (a kernel's main loop)."""
    labels, ins, pending = {}, [], None
    for line in sass.splitlines():
        if m := re.match(r"\s*(\.L_x_\d+):", line):
            pending = m.group(1)
        elif m := re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line):
            addr = int(m.group(1), 16)
            if pending:
                labels[pending], pending = addr, None
            target = re.search(r"(\.L_x_\d+)", line) if m.group(2) == "BRA" else None
            ins.append((addr, m.group(2), target.group(1) if target else None))
    loops = [(labels[t], a) for a, op, t in ins if t in labels and labels[t] < a]
    if not loops:
        return collections.Counter()
    start, end = max(loops, key=lambda se: se[1] - se[0])
    return collections.Counter(op for a, op, _ in ins if start <= a <= end)


def resources(compiled) -> dict:
    """{'regs', 'stack', 'loads': Counter of global-load forms, 'widest': bytes, 'mma_sync':
    warp-level MMAs, 'shared': shared-memory accesses and barriers, 'loop': Counter of the
    main loop's SASS opcodes} of the PTX and cubin."""
    import triton
    ptx = compiled.asm["ptx"]
    loads = collections.Counter()
    for form in re.findall(r"ld\.global[\w.:]*", ptx):
        vec = re.search(r"\.v(\d)", form)
        bits = re.search(r"\.[bufs](8|16|32|64)$", form)
        loads[(int(vec.group(1)) if vec else 1) * int(bits.group(1)) // 8 if bits else 0] += 1
    for nbytes in re.findall(r"cp\.async\.\w+\.shared\.global(?:\.\w+)*\s+\[[^]]*\], \[[^]]*\], "
                             r"(0x[0-9a-fA-F]+|\d+)", ptx):
        loads[int(nbytes, 0)] += 1
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        res = subprocess.run([os.path.join(bindir, "cuobjdump"), "-res-usage", f.name],
                             capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(bindir, "nvdisasm"), "-c", f.name],
                              capture_output=True, text=True, check=True).stdout
    regs = int(re.search(r"REG:(\d+)", res).group(1))
    stack = int(re.search(r"STACK:(\d+)", res).group(1))
    return dict(regs=regs, stack=stack, loads=loads, widest=max(loads, default=0), loop=loop_ops(sass),
                mma_sync=len(re.findall(r"mma\.sync", ptx)),
                shared=len(re.findall(r"(?:ld|st)\.shared|bar\.sync", ptx)))


def report_case(label: str, k: int, n: int, m: int, layout: str, device_kind: str | None,
                config: wcfg.TileConfig | None = None) -> dict:
    """Compile the launch of (format, K x N, M, layout) with `config` (default: the chooser's
    for `device_kind`; an explicit one gets the chooser's split rule) and report it."""
    case = testing.CASES_BY_LABEL[label]
    w = testing.random_weight(jax.random.key(0), case, k, n, layout=layout)
    spec = testing.weight_spec(w)
    if config is None:
        cfg = wcfg.choose_config(m, spec, device_kind=device_kind)
    else:
        cfg = dataclasses.replace(config, split_k=wcfg.split_for(spec, config, m))
        if (why := cfg.check(spec)) is not None:
            raise ValueError(why)
    x = jnp.zeros((m, k), jnp.bfloat16)  # shapes and dtypes only: nothing is computed
    kernel, arrays, out_shape, _, params = triton_kernel.triton_launch(
        x, w["values"], w["scales"], w["zeros"], w["global_scale"], spec, cfg, jnp.bfloat16)
    compiled = compile_launch(kernel, arrays, out_shape, params, num_warps=cfg.num_warps,
                              num_stages=cfg.num_stages)
    return dict(label=label, m=m, layout=layout, kernel=cfg.kernel,
                tile=f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k}", **resources(compiled))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="4096x14336")
    p.add_argument("--ms", default="1,16,1024")
    p.add_argument("--formats", default="int4-g128,uint4-g128,int8,fp8,mxfp4,nvfp4")
    p.add_argument("--layout", default="nk")
    p.add_argument("--device-kind", default="NVIDIA H200")
    a = p.parse_args(argv)
    k, n = (int(v) for v in a.shape.split("x"))
    print(f"{'format':>10s} {'M':>5s} {'kernel':>7s} {'tile':>11s} {'regs':>4s} {'stack':>5s} {'loop':>5s}  "
          f"loads by width (bytes: count)")
    for label in a.formats.split(","):
        for m in (int(v) for v in a.ms.split(",")):
            r = report_case(label, k, n, m, a.layout, a.device_kind)
            widths = " ".join(f"{b}:{c}" for b, c in sorted(r["loads"].items()))
            print(f"{label:>10s} {m:5d} {r['kernel']:>7s} {r['tile']:>11s} {r['regs']:4d} {r['stack']:5d} "
                  f"{sum(r['loop'].values()):5d}  {widths}")


if __name__ == "__main__":
    main()
