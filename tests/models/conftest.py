"""Shared fixtures for the model tests: tiny random models (fast) and the real ones (slow)."""

import pytest

from models import config, weights


@pytest.fixture(scope="module")
def tiny_llama():
    return weights.build_model(config.tiny_llama(), seed=1)


@pytest.fixture(scope="module")
def tiny_llama_tied():
    return weights.build_model(config.tiny_llama(tie_embeddings=True, n_kv_heads=4), seed=2)


@pytest.fixture(scope="module")
def tiny_bert():
    return weights.build_model(config.tiny_bert(), seed=3)
