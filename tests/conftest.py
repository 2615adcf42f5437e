import os
import tempfile

import matplotlib
import pytest
import torch
from torch.utils.data import DataLoader

from nlprune import data, train

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    torch.set_num_threads(train.thread_count(2))  # 1 in `make test`'s pool (NLPRUNE_THREADS)


@pytest.fixture()
def tmp_cache(monkeypatch):
    with tempfile.TemporaryDirectory() as d:
        monkeypatch.setenv("NLPRUNE_CACHE", d)
        yield d


@pytest.fixture()
def toy_loaders():
    """A learnable toy task (label 1 iff token 5 occurs): a shuffled loader and an ordered one."""
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(96):
        ids = torch.randint(2, 9, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        items.append((ids, int(5 in ids)))
    return (DataLoader(items, batch_size=16, shuffle=True, collate_fn=data.collate_padded),
            DataLoader(items, batch_size=32, collate_fn=data.collate_padded))
