#!/usr/bin/env bash
# Setup on the GPU machine, then run the given command: `bash scripts/device_run.sh CMD...`.
# The image has jax 0.11.2 (CUDA), triton 3.6 and torch; jax-triton travels as a wheel in
# .device/wheels (pass carry: [".device"]). JAX must not preallocate: torch shares the card.
set -euo pipefail
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/jt .device/wheels/jax_triton-*.whl
export PYTHONPATH="/tmp/jt:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import jax, jax_triton, triton; print('jax', jax.__version__, jax.devices(), 'triton', triton.__version__)"
"$@"
