"""nlprune.llm (SmolLM2 read from its GGUF file) and nlprune.oneshot (magnitude, Wanda,
SparseGPT) for section 8.6."""

import copy

import numpy as np
import pytest
import torch

from nlprune import llm, oneshot, prune


def tiny_llama(seed: int = 0) -> llm.Llama:
    torch.manual_seed(seed)
    config = llm.LlamaConfig(vocab_size=50, hidden=16, intermediate=32, layers=2, heads=4, kv_heads=2,
                             rope_theta=10000.0, norm_eps=1e-5)
    model = llm.Llama(config).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model


@pytest.fixture(scope="module")
def smollm2():
    return llm.load_smollm2()


def test_matches_transformers_logits(smollm2):
    """Our forward pass equals transformers' Llama loaded from the same GGUF file."""
    from transformers import AutoModelForCausalLM

    path = llm.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.randint(0, smollm2.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = smollm2(ids), reference(ids).logits
    assert ours.shape == theirs.shape == (2, 40, 49152)
    assert torch.allclose(ours, theirs, atol=1e-3, rtol=0)


def test_config_and_parameter_count(smollm2):
    c = smollm2.config
    assert (c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.head_dim) == (576, 1536, 30, 9, 3, 64)
    kv = c.kv_heads * c.head_dim
    per_block = 2 * c.hidden * c.hidden + 2 * c.hidden * kv + 3 * c.hidden * c.intermediate + 2 * c.hidden
    formula = c.vocab_size * c.hidden + c.layers * per_block + c.hidden
    assert formula == sum(p.numel() for p in smollm2.parameters()) == 134_515_008


def test_unpermute_inverts_the_converter():
    """llama.cpp's converter interleaves the halves of each head's rows; _unpermute undoes it."""
    heads, rows, cols = 3, 12, 5
    hf = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    converted = hf.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)
    assert np.array_equal(llm._unpermute(converted, heads), hf)


def test_weights_are_four_bit_blocks(smollm2):
    """Q4_1: every run of 32 weights along a row takes at most 16 distinct values."""
    blocks = smollm2.blocks[0].down.weight.detach().reshape(-1, 32)
    distinct = torch.tensor([row.unique().numel() for row in blocks[:200]])
    assert distinct.max() <= 16 and distinct.float().mean() > 8


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 37)

    windows = torch.randint(0, 37, (3, 9), generator=torch.Generator().manual_seed(0))
    assert llm.perplexity(Uniform(), windows, batch_size=2) == pytest.approx(37.0)


def test_token_windows():
    ids = torch.arange(25)
    w = llm.token_windows(ids, 4, start=3)
    assert w.shape == (5, 4) and w[0].tolist() == [3, 4, 5, 6] and w[-1, -1] == 22
    with pytest.raises(ValueError, match="count"):
        llm.token_windows(ids, 4, 7)
    with pytest.raises(ValueError, match="1-D"):
        llm.token_windows(ids.view(5, 5), 4)
    with pytest.raises(TypeError, match="length"):
        llm.token_windows(ids, 4.0)


def test_token_windows_check_start():
    ids = torch.arange(10)
    assert llm.token_windows(ids, 4, start=np.int64(2)).tolist() == [[2, 3, 4, 5], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="start must be an integer >= 0, got -1"):
        llm.token_windows(ids, 4, start=-1)
    with pytest.raises(TypeError, match="start must be an integer"):
        llm.token_windows(ids, 4, start=1.0)
    with pytest.raises(ValueError, match="start=7 leaves 3 tokens, fewer than one window of length=4"):
        llm.token_windows(ids, 4, start=7)


def test_perplexity_checks_its_arguments():
    class Uniform(torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 5)

    windows = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        llm.perplexity(Uniform(), windows, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        llm.perplexity(Uniform(), windows, batch_size=1.5)
    with pytest.raises(ValueError, match="windows must be a 2-D tensor"):
        llm.perplexity(Uniform(), windows[0])
    with pytest.raises(ValueError, match="windows must be a 2-D tensor"):
        llm.perplexity(Uniform(), windows[:, :1])  # one token per window: nothing to predict
    with pytest.raises(ValueError, match="windows must be a 2-D tensor"):
        llm.perplexity(Uniform(), windows[:0])


def random_layer(seed=0, out=24, inputs=32, tokens=200):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(inputs, inputs, generator=g) / inputs**0.5
    x = (torch.randn(tokens, inputs, generator=g) @ mixing) * torch.linspace(0.1, 3.0, inputs)  # correlated, uneven
    w = torch.randn(out, inputs, generator=g)
    return w, x, (x.T @ x).double()


def test_wanda_scores_and_row_masks():
    w, x, h = random_layer()
    norms = x.norm(dim=0)
    scores = oneshot.wanda_scores(w, norms)
    assert torch.allclose(scores, w.abs() * norms)
    keep = oneshot.row_masks(scores, 0.25)
    assert (keep.sum(1) == 24).all()  # 8 of 32 removed in every row
    assert (scores[~keep].view(24, 8).max(1).values <= scores[keep].view(24, 24).min(1).values).all()
    with pytest.raises(ValueError, match="input_norms"):
        oneshot.wanda_scores(w, norms[:-1])
    with pytest.raises(ValueError, match="sparsity"):
        oneshot.row_masks(scores, 1.0)


def test_reconstruction_error_from_the_hessian():
    w, x, h = random_layer()
    pruned = w * (torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) > 0.5)
    direct = float(((x @ (w - pruned).T) ** 2).sum())
    assert oneshot.reconstruction_error(w, pruned, h) == pytest.approx(direct, rel=1e-5)


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n_m": (2, 4)}])
def test_sparsegpt_pattern_and_update(pattern):
    """The pattern holds exactly, pruned weights are exactly zero, and the weight update lowers
    the output error below that of zeroing the same weights."""
    w, x, h = random_layer()
    new, keep = oneshot.sparsegpt(w, h, block=16, **pattern)
    assert (new[~keep] == 0).all() and keep.float().mean() == 0.5
    if "n_m" in pattern:
        assert (keep.view(24, 8, 4).sum(-1) == 2).all()
    else:
        assert keep[:, :16].sum() == keep[:, 16:].sum() == 24 * 8  # half of every 16-column block
    assert oneshot.reconstruction_error(w, new, h) < oneshot.reconstruction_error(w, w * keep, h)


def test_sparsegpt_is_the_obs_update_for_one_weight():
    """Pruning the first column of a row: the update of the others is the exact least-squares
    optimum (Optimal Brain Surgeon) for the damped Hessian."""
    _, _, h = random_layer(inputs=4)
    w = torch.tensor([[0.01, 1.0, -2.0, 1.5]])
    new, keep = oneshot.sparsegpt(w, h, n_m=(3, 4), block=4)
    assert keep.tolist() == [[False, True, True, True]]
    damped = h + 0.01 * h.diagonal().mean() * torch.eye(4, dtype=h.dtype)
    best = w.double()[0, 1:] + torch.linalg.solve(damped[1:, 1:], damped[1:, 0]) * w[0, 0]
    assert torch.allclose(new[0, 1:].double(), best, atol=1e-6)


def test_sparsegpt_with_uncorrelated_inputs_only_masks():
    """With a diagonal Hessian no update reaches other columns: SparseGPT keeps, in each block,
    the largest w^2 * (H_jj + damping), i.e. Wanda's score over the block, and changes nothing else."""
    w, x, _ = random_layer()
    h = torch.diag((x**2).sum(0)).double()
    new, keep = oneshot.sparsegpt(w, h, sparsity=0.25, block=16)
    assert torch.equal(new, w * keep)
    damped = h.diagonal() + 0.01 * h.diagonal().mean()
    for start in (0, 16):
        score = (w[:, start:start + 16] ** 2 * damped[start:start + 16].float()).flatten()
        expected = torch.ones_like(score, dtype=torch.bool)
        expected[torch.topk(score, 96, largest=False).indices] = False
        assert torch.equal(keep[:, start:start + 16].flatten(), expected)


def test_sparsegpt_rejects_bad_arguments():
    w, _, h = random_layer()
    with pytest.raises(ValueError, match="exactly one"):
        oneshot.sparsegpt(w, h)
    with pytest.raises(ValueError, match="exactly one"):
        oneshot.sparsegpt(w, h, sparsity=0.5, n_m=(2, 4))
    with pytest.raises(ValueError, match="hessian"):
        oneshot.sparsegpt(w, h[:-1, :-1], sparsity=0.5)
    with pytest.raises(ValueError, match="n_m"):
        oneshot.sparsegpt(w, h, n_m=(4, 4))
    with pytest.raises(TypeError, match="n_m"):
        oneshot.sparsegpt(w, h, n_m=[2, 4])
    with pytest.raises(ValueError, match="block"):
        oneshot.sparsegpt(w, h, n_m=(2, 4), block=6)


def test_sparsegpt_refuses_an_input_width_that_is_not_a_multiple_of_m():
    """As nm_masks does: a last partial group of 2 columns cannot hold a 2:4 pattern (it used to
    lose both columns silently)."""
    w, _, h = random_layer(out=3, inputs=6)
    with pytest.raises(ValueError, match=r"weight has 6 input columns, not a multiple of m=4 of n_m=\(2, 4\)"):
        oneshot.sparsegpt(w, h, n_m=(2, 4), block=4)
    with pytest.raises(ValueError, match="multiple of m=4"):
        prune.nm_masks({"w": w}, 2, 4)  # the same rule
    new, keep = oneshot.sparsegpt(w, h, n_m=(1, 3), block=3)  # 6 columns: two groups of 3
    assert (keep.view(3, 2, 3).sum(-1) == 1).all() and (new[~keep] == 0).all()
    assert oneshot.sparsegpt(w, h, sparsity=0.5, block=4)[1].sum() == 9  # unstructured: any width


@pytest.mark.parametrize("method", oneshot.METHODS)
def test_prune_llm_on_a_tiny_model(method):
    model = tiny_llama()
    calibration = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    before = copy.deepcopy(model)
    masks = oneshot.prune_llm(model, calibration, method, sparsity=0.5)
    assert len(masks) == 2 * 7 and prune.overall_sparsity(masks) == pytest.approx(0.5)
    for name, keep in masks.items():
        weight = model.get_parameter(name)
        assert (weight[~keep] == 0).all()
        if method != "sparsegpt":  # only SparseGPT changes the weights it keeps
            assert torch.equal(weight[keep], before.get_parameter(name)[keep])
    assert torch.equal(model.embed.weight, before.embed.weight)  # only the blocks' linears are pruned
    nm = oneshot.prune_llm(copy.deepcopy(before), calibration, method, n_m=(2, 4))
    assert all((keep.view(keep.shape[0], -1, 4).sum(-1) == 2).all() for keep in nm.values())


def test_input_statistics_are_the_gram_matrices_of_each_layers_inputs():
    model = tiny_llama()
    ids = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    x, (cos, sin) = model.embed(ids), model.rotary(10)
    block = model.blocks[0]
    inputs = {}
    handles = [getattr(block, n).register_forward_hook(
        lambda m, i, o, n=n: inputs.__setitem__(n, i[0].reshape(-1, i[0].shape[-1]).double()))
        for n in oneshot.LINEARS]
    with torch.no_grad():
        block(x, cos, sin)
    for h in handles:
        h.remove()
    stats = oneshot.input_statistics(block, x, cos, sin)
    assert set(stats) == set(oneshot.LINEARS)
    for name, flat in inputs.items():
        torch.testing.assert_close(stats[name], flat.T @ flat)
    assert stats["q"] is stats["k"] is stats["v"] and stats["gate"] is stats["up"]  # computed once
    assert stats["o"] is not stats["q"] and stats["down"].shape == (32, 32)


def test_prune_llm_rejects_bad_arguments():
    model = tiny_llama()
    with pytest.raises(ValueError, match="method"):
        oneshot.prune_llm(model, None, "movement", sparsity=0.5)
    with pytest.raises(ValueError, match="calibration"):
        oneshot.prune_llm(model, None, "wanda", sparsity=0.5)
    with pytest.raises(ValueError, match="sparsity"):
        oneshot.prune_llm(model, None, "magnitude", sparsity=1.5)
    with pytest.raises(ValueError, match="compare"):
        oneshot.prune_llm(model, None, "magnitude", sparsity=0.5, compare="column")
    with pytest.raises(ValueError, match="compare"):
        oneshot.prune_llm(model, None, "magnitude", n_m=(2, 4), compare="row")
    with pytest.raises(ValueError, match="compare"):
        calibration = torch.zeros(2, 4, dtype=torch.long)
        oneshot.prune_llm(model, calibration, "sparsegpt", sparsity=0.5, compare="row")


def test_prune_llm_compare_chooses_the_group_that_competes():
    before = tiny_llama()
    calibration = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    per_row = oneshot.prune_llm(copy.deepcopy(before), None, "magnitude", sparsity=0.5, compare="row")
    default = oneshot.prune_llm(copy.deepcopy(before), None, "magnitude", sparsity=0.5)
    for name, keep in per_row.items():
        weight = before.get_parameter(name).detach()
        half = weight.shape[1] - round(0.5 * weight.shape[1])
        assert (keep.sum(1) == half).all()  # every output row keeps the same number
        assert torch.equal(keep, oneshot.row_masks(weight.abs(), 0.5))
        assert torch.equal(default[name], prune.compute_masks({"w": weight.abs()}, 0.5)["w"])
    # some matrix, compared as a whole, keeps unequal numbers per row: the two groups differ
    assert any(not torch.equal(default[n], per_row[n]) for n in per_row)
    wanda_matrix = oneshot.prune_llm(copy.deepcopy(before), calibration, "wanda", sparsity=0.5,
                                     compare="matrix")
    wanda_row = oneshot.prune_llm(copy.deepcopy(before), calibration, "wanda", sparsity=0.5)
    assert all((keep.sum(1) == keep.shape[1] // 2).all() for keep in wanda_row.values())
    assert any(len(set(keep.sum(1).tolist())) > 1 for keep in wanda_matrix.values())
    assert all(keep.sum() == keep.numel() // 2 for keep in wanda_matrix.values())
