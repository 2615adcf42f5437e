import os
import tempfile

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture()
def tmp_cache(monkeypatch):
    with tempfile.TemporaryDirectory() as d:
        monkeypatch.setenv("NLPRUNE_CACHE", d)
        yield d
