import itertools
import lzma
import math

import numpy as np
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


@pytest.mark.parametrize("bits", [8, 5, 3])
def test_the_payload_is_exactly_the_byte_formula(tmp_path, bits):
    state = pruned_model().state_dict()
    sizes = compress.parts(state, bits=bits)
    floats = {n: t for n, t in state.items() if t.is_floating_point()}
    assert sizes["bitmask"] == sum(math.ceil(t.numel() / 8) for t in floats.values())
    assert sizes["values"] == sum(math.ceil(int((t != 0).sum()) * bits / 8) for t in floats.values())
    assert sizes["scales"] == sum(4 * (t.shape[0] if t.dim() >= 2 else 1) for t in floats.values())
    assert sizes["other tensors"] == 2 * 8  # the int64 buffer of two entries
    path = tmp_path / "model.nlpz"
    compress.save_compressed(state, path, bits=bits)
    assert len(lzma.decompress(path.read_bytes())) == sum(sizes.values())


def test_odd_tensors_come_back_byte_for_byte(tmp_path):
    state = {"flag": torch.tensor([True, False, True]), "count": torch.tensor(7),
             "empty": torch.zeros(0, 3), "scalar": torch.tensor(0.5),
             "half": torch.tensor([[0.0, 1.5], [-2.0, 0.0]], dtype=torch.bfloat16)}
    compress.save_compressed(state, tmp_path / "odd.nlpz", bits=8)
    back = compress.load_compressed(tmp_path / "odd.nlpz")
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
    assert torch.equal(back["flag"], state["flag"]) and torch.equal(back["count"], state["count"])
    assert torch.equal(back["half"], state["half"]) and float(back["scalar"]) == 0.5


def test_bit_packing_round_trips_every_value_at_every_width():
    for bits in range(2, 9):
        values = np.arange(2 ** bits - 1, dtype=np.uint8).repeat(3)  # 0 .. 2^b - 2, as stored
        packed = compress._pack_bits(values, bits)
        assert len(packed) == math.ceil(len(values) * bits / 8)
        assert (compress._unpack_bits(packed, bits, len(values)) == values).all()


def test_one_step_per_tensor_stores_one_scale_per_tensor_and_stays_within_half_a_step(tmp_path):
    state = pruned_model().state_dict()
    floats = {n: t for n, t in state.items() if t.is_floating_point()}
    sizes = compress.parts(state, bits=4, scale="tensor")
    assert sizes["scales"] == 4 * len(floats)
    assert sizes["scales"] < compress.parts(state, bits=4)["scales"]
    compress.save_compressed(state, tmp_path / "t.nlpz", bits=4, scale="tensor")
    back = compress.load_compressed(tmp_path / "t.nlpz")
    for name, t in floats.items():
        step = float(t.abs().max()) / (2 ** 3 - 1)
        assert (back[name][t == 0] == 0).all()
        assert float((back[name] - t).abs().max()) <= step / 2 + 1e-7
    with pytest.raises(ValueError, match="scale must be 'row' or 'tensor'"):
        compress.parts(state, scale="column")
