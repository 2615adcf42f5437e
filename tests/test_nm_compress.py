import itertools

import pytest
import torch
from torch import nn

from nlprune import compress, prune


def brute_force_nm(scores, n, m):
    keep = torch.zeros_like(scores, dtype=torch.bool).reshape(-1, m)
    for g, group in enumerate(scores.reshape(-1, m)):
        best = max(itertools.combinations(range(m), n), key=lambda c: sum(group[list(c)].tolist()))
        keep[g, list(best)] = True
    return keep.view(scores.shape)


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4), (3, 4)])
def test_nm_masks_equal_brute_force(n, m):
    torch.manual_seed(n * 10 + m)
    scores = {"a": torch.randn(6, 16), "b": torch.rand(3, 2, 8)}
    masks = prune.nm_masks(scores, n, m)
    for name, s in scores.items():
        assert masks[name].dtype == torch.bool and masks[name].shape == s.shape
        assert torch.equal(masks[name], brute_force_nm(s, n, m))
        assert (masks[name].reshape(-1, m).sum(1) == n).all()


def test_nm_masks_bad_input():
    with pytest.raises(ValueError, match=r"n must be in \[1, m\)"):
        prune.nm_masks({"a": torch.rand(4, 8)}, 4, 4)
    with pytest.raises(ValueError, match=r"n must be in \[1, m\)"):
        prune.nm_masks({"a": torch.rand(4, 8)}, 0, 4)
    with pytest.raises(ValueError, match="multiple of m=4"):
        prune.nm_masks({"a": torch.rand(4, 6)}, 2, 4)
    with pytest.raises(ValueError, match="NaN"):
        prune.nm_masks({"a": torch.tensor([1.0, float("nan"), 0.0, 2.0])}, 2, 4)
    with pytest.raises(TypeError, match="n must be an integer"):
        prune.nm_masks({"a": torch.rand(4)}, 2.0, 4)


def pruned_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(500, 32), nn.Linear(32, 64), nn.Linear(64, 2))
    masks = prune.compute_masks(prune.magnitude_scores(model, ["0.weight", "1.weight", "2.weight"]), 0.9)
    prune.apply_masks(model, masks)
    model.register_buffer("steps", torch.tensor([3, 4], dtype=torch.long))
    return model


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_save_and_load_compressed_round_trip(tmp_path, bits):
    state = pruned_model().state_dict()
    path = tmp_path / "model.nlpz"
    size = compress.save_compressed(state, path, bits=bits)
    assert size == path.stat().st_size
    back = compress.load_compressed(path)
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].shape == t.shape and back[name].dtype == t.dtype
        if not t.is_floating_point():
            assert torch.equal(back[name], t)
            continue
        assert (back[name][t == 0] == 0).all()  # zeros stay exactly zero
        rows = t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(1, -1)
        step = rows.abs().amax(1) / (2 ** (bits - 1) - 1)
        error = (back[name] - t).abs().reshape(rows.shape)
        assert (error <= step[:, None] / 2 + 1e-7).all()  # within half a step


def test_compressed_file_is_much_smaller_than_torch_save(tmp_path):
    state = pruned_model().state_dict()
    torch.save(state, tmp_path / "dense.pt")
    size = compress.save_compressed(state, tmp_path / "model.nlpz")
    assert size * 8 < (tmp_path / "dense.pt").stat().st_size  # 90% zeros, 8-bit values


def test_save_compressed_bad_input(tmp_path):
    for bits in (1, 9):
        with pytest.raises(ValueError, match=r"bits must be in \[2, 8\]"):
            compress.save_compressed({"w": torch.ones(2)}, tmp_path / "x", bits=bits)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        compress.save_compressed({"w": [1.0]}, tmp_path / "x")
    (tmp_path / "junk").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a file written by save_compressed"):
        compress.load_compressed(tmp_path / "junk")
