"""Shared test set-up. Tests run on CPU; `@pytest.mark.gpu` tests skip without a CUDA GPU."""

import pytest
import torch

import kernels  # noqa: F401  (selects the Triton interpreter on CPU before any kernel import)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def db_url(tmp_path):
    """A fresh SQLite database for one test."""
    return f"sqlite:///{tmp_path / 'results.db'}"


# PostgreSQL fixtures (pg_server, pg_url, pg_server_factory): a private server per session.
pytest_plugins = ["tests.pg"]
