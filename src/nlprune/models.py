"""Small NLP models used throughout the course.

Every classifier takes ``(ids [B, T], lengths [B])`` and returns logits ``[B, num_classes]``,
so the same training loop serves all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import _checks

if TYPE_CHECKING:  # for the type hints only: nlprune.data does not import this module
    from .data import Vocab

__all__ = ["BowMLP", "RNNClassifier", "LSTMLanguageModel", "sample_text", "valid_steps", "gate_count",
           "unit_layers"]

_RNN_KINDS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
_POOLS = ("last", "max", "mean")


def valid_steps(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Boolean ``[B, steps]``: ``True`` at the time steps that hold a token of each sequence
    (the first ``lengths[b]``), ``False`` at the padding after them.

    Example:
        >>> valid_steps(torch.tensor([1, 3]), 3)
        tensor([[ True, False, False],
                [ True,  True,  True]])
    """
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class BowMLP(nn.Module):
    """Bag-of-words classifier: mean of word embeddings → hidden ReLU layer → logits."""

    def __init__(self, vocab_size: int, *, embed_dim: int = 64, hidden: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.hidden = nn.Linear(embed_dim, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        words = self.embedding(ids)
        mask = (ids != 0).unsqueeze(-1).to(words.dtype)
        counts = lengths.to(words.device).clamp(min=1).unsqueeze(-1).to(words.dtype)  # loaders give CPU lengths
        mean = (words * mask).sum(1) / counts
        return self.out(torch.relu(self.hidden(mean)))


class RNNClassifier(nn.Module):
    """Embedding → unidirectional RNN/GRU/LSTM → one vector per sequence → logits.

    ``pool`` chooses the vector: ``"last"`` (default) the top layer's final hidden state,
    ``"max"`` or ``"mean"`` the elementwise maximum or mean of the top layer's hidden states
    over the sequence's own time steps (padding excluded).

    ``dropout`` is applied to the word embeddings and to the pooled vector during training.

    Padding comes after each sequence's last token, and an RNN's state at step ``t`` depends only
    on steps ``1..t``: the RNN runs over the padded batch, and each sequence's vector is read
    from its own time steps only (step ``length`` for ``"last"``, steps ``1..length`` for the
    pools). The padded positions therefore never reach the result, nor its gradient. (This
    gives the same numbers as packed sequences up to float rounding, and trains twice as fast on
    a CPU: the backward pass of PyTorch's packed LSTM fills a zero tensor of the whole batch for
    every time step.)
    """

    def __init__(self, vocab_size: int, *, kind: str = "lstm", embed_dim: int = 64, hidden: int = 128,
                 num_layers: int = 1, num_classes: int = 2, dropout: float = 0.0,
                 pool: str = "last") -> None:
        super().__init__()
        if kind not in _RNN_KINDS:
            raise ValueError(f"kind must be one of {sorted(_RNN_KINDS)}, got {kind!r}")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {list(_POOLS)}, got {pool!r}")
        self.kind = kind
        self.pool = pool
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = _RNN_KINDS[kind](embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pooled vector ``[B, hidden]`` (see ``pool``)."""
        if lengths.shape != ids.shape[:1] or int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]:
            raise ValueError(f"lengths must hold one length per sequence, each between 1 and {ids.shape[1]} "
                             f"(the padded length of ids), got {lengths.tolist()}")
        outputs, _ = self.rnn(self.dropout(self.embedding(ids)))  # [B, T, hidden], top layer
        lengths = lengths.to(outputs.device)
        if self.pool == "last":
            return outputs[torch.arange(len(lengths), device=outputs.device), lengths - 1]
        valid = valid_steps(lengths, outputs.shape[1])[:, :, None]
        if self.pool == "max":
            return outputs.masked_fill(~valid, float("-inf")).max(dim=1).values
        return outputs.masked_fill(~valid, 0.0).sum(dim=1) / lengths[:, None].to(outputs.dtype)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.features(ids, lengths)))


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model: embedding → LSTM → linear layer over the vocabulary."""

    def __init__(self, vocab_size: int, *, embed_dim: int = 128, hidden: int = 256, num_layers: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits ``[B, T, vocab]`` and the final ``(h, c)`` to carry into the next window."""
        y, state = self.rnn(self.dropout(self.embedding(ids)), state)
        return self.out(self.dropout(y)), state


@torch.no_grad()
def sample_text(model: LSTMLanguageModel, vocab: Vocab, prompt: Sequence[str], *, words: int = 30,
                temperature: float = 0.8, seed: int = 0) -> list[str]:
    """Generate ``words`` tokens after ``prompt`` by sampling from ``softmax(logits / temperature)``.

    The sampling uses its own ``torch.Generator`` seeded with ``seed``, so two models given the
    same prompt and seed draw the same random numbers, and any difference between their
    passages comes from the models. The model runs on its own device; the generator, and so
    the draw, stays on the CPU.

    Args:
        model: a word-level language model (``forward(ids, state) -> (logits, state)``).
        vocab: its :class:`nlprune.data.Vocab` (``encode`` and ``itos``).
        prompt: the prompt's tokens (at least one).
        words: how many tokens to generate, >= 1.
        temperature: > 0; lower is greedier, 1 samples the model's own distribution.
        seed: the sampling seed.

    Returns:
        The generated tokens (without the prompt).

    Raises:
        ValueError: an empty prompt, ``words < 1`` or ``temperature <= 0``.
        TypeError: ``words`` is not an integer or ``temperature`` not a number.
    """
    if len(prompt) == 0:
        raise ValueError("prompt must hold at least one token")
    words = _checks.at_least(words, "words", 1)
    temperature = _checks.positive(temperature, "temperature")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(seed)
        logits, state = model(torch.tensor([vocab.encode(list(prompt))], device=device))
        out = []
        for _ in range(words):
            probs = torch.softmax(logits[0, -1] / temperature, dim=-1).cpu()  # the generator's device
            token = int(torch.multinomial(probs, 1, generator=generator))
            out.append(vocab.itos[token])
            logits, state = model(torch.tensor([[token]], device=device), state)
    finally:
        model.train(was_training)
    return out


_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def gate_count(rnn: nn.RNNBase) -> int:
    """Number of gate blocks stacked in the weights: 1 (``nn.RNN``), 3 (``nn.GRU``), 4 (``nn.LSTM``).

    Raises:
        TypeError: ``rnn`` is not an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``.
        ValueError: a bidirectional layer or an LSTM with projections (``proj_size > 0``),
            which the course's unit scores and cuts do not handle.

    Example:
        >>> gate_count(nn.LSTM(3, 5)), gate_count(nn.GRU(3, 5)), gate_count(nn.RNN(3, 5))
        (4, 3, 1)
    """
    if type(rnn) not in _GATES:
        raise TypeError(f"rnn must be an nn.RNN, nn.GRU or nn.LSTM, got {type(rnn).__name__}")
    if rnn.bidirectional:
        raise ValueError("bidirectional RNNs are not supported: cut each direction's weights yourself")
    if getattr(rnn, "proj_size", 0) > 0:
        raise ValueError(f"LSTMs with projections are not supported (proj_size={rnn.proj_size})")
    return _GATES[type(rnn)]


def unit_layers(model: nn.Module, *, single_layer: bool = True) -> tuple[nn.Module, nn.Linear, int]:
    """The ``rnn``, the ``out`` layer and the gate count of a model whose hidden units are scored,
    masked or cut (such as :class:`RNNClassifier` and :class:`LSTMLanguageModel`).

    Args:
        model: a model with an ``rnn`` (``nn.RNN``/``GRU``/``LSTM``) and an ``out`` ``nn.Linear``
            that reads its hidden state.
        single_layer: also require one layer whose ``hidden_size`` is what ``out`` reads (unit
            scores and masks need it; cutting handles stacks).

    Raises:
        TypeError: no ``rnn`` or no ``out`` ``nn.Linear``, or ``rnn`` is not a recurrent layer.
        ValueError: with ``single_layer``, several layers or an ``out`` of another width.

    Example:
        >>> rnn, out, gates = unit_layers(RNNClassifier(10, kind="gru", embed_dim=4, hidden=3))
        >>> rnn.hidden_size, out.in_features, gates
        (3, 3, 3)
    """
    rnn, out = getattr(model, "rnn", None), getattr(model, "out", None)
    if not isinstance(rnn, nn.Module) or not isinstance(out, nn.Linear):
        raise TypeError(f"model must have an `rnn` (nn.RNN/GRU/LSTM) and an `out` nn.Linear, "
                        f"got {type(model).__name__}")
    gates = gate_count(rnn)
    if single_layer:
        if rnn.num_layers != 1:
            raise ValueError(f"unit scores and masks need a single-layer RNN, got num_layers={rnn.num_layers}")
        if out.in_features != rnn.hidden_size:
            raise ValueError(f"out reads {out.in_features} features but the RNN has {rnn.hidden_size} units")
    return rnn, out, gates
