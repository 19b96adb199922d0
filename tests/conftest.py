"""Shared fixtures. `interpret`: True when no GPU is present (kernels run in Pallas
interpret mode on CPU), False on a GPU machine (kernels run natively)."""

import jax
import pytest


@pytest.fixture(scope="session")
def interpret() -> bool:
    return jax.default_backend() != "gpu"
