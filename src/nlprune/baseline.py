"""A linear baseline: logistic regression on bags of word (or character) n-grams.

A pruning result means little on a model that a linear classifier matches: such a model does not
use its capacity, so removing most of it costs nothing. Every classification chapter therefore
reports this baseline on the same split beside the dense network.

The model is ``p(y | x) = softmax(Σ_{g in x} w_g + b)`` over the n-grams ``g`` of a text (counted
with repetition): an ``nn.EmbeddingBag`` in ``"sum"`` mode *is* a linear layer applied to the
n-gram count vector, without building the sparse matrix. It is trained with Adam and an L2
penalty whose strength is chosen on the validation split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from . import _checks
from .data import Example, Splits

__all__ = ["ngrams", "NgramVocab", "LinearNgramClassifier", "fit_ngram_baseline"]


def ngrams(tokens: Sequence[str], orders: Iterable[int] = (1, 2)) -> list[str]:
    """All n-grams of ``tokens`` for each ``n`` in ``orders``, joined by spaces.

    Example:
        >>> ngrams(["not", "bad", "at", "all"], orders=(1, 2))
        ['not', 'bad', 'at', 'all', 'not bad', 'bad at', 'at all']
    """
    out = []
    for n in orders:
        n = _checks.integer(n, "orders")
        if n < 1:
            raise ValueError(f"orders must hold integers >= 1, got {n}")
        out += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return out


class NgramVocab:
    """Index of the n-grams seen at least ``min_freq`` times in the training texts (index 0 is
    reserved for "no known n-gram", so that every text has at least one entry).

    Raises:
        TypeError, ValueError: ``min_freq`` is not an integer >= 1, or ``orders`` (see :func:`ngrams`).
    """

    def __init__(self, texts: Iterable[str], tokenize: Callable[[str], list[str]], *,
                 orders: Iterable[int] = (1, 2), min_freq: int = 2) -> None:
        min_freq = _checks.at_least(min_freq, "min_freq", 1)
        self.tokenize, self.orders = tokenize, tuple(orders)
        counts = Counter(g for t in texts for g in ngrams(tokenize(t), self.orders))
        kept = sorted((g for g, c in counts.items() if c >= min_freq), key=lambda g: (-counts[g], g))
        self.index = {g: i + 1 for i, g in enumerate(kept)}

    def __len__(self) -> int:
        return len(self.index) + 1

    def encode(self, text: str) -> list[int]:
        """The ids of the known n-grams of ``text`` (``[0]`` if none is known)."""
        ids = [self.index[g] for g in ngrams(self.tokenize(text), self.orders) if g in self.index]
        return ids or [0]


class LinearNgramClassifier(nn.Module):
    """Logistic regression on n-gram counts: one weight vector per n-gram, summed, plus a bias."""

    def __init__(self, num_ngrams: int, num_classes: int = 2) -> None:
        super().__init__()
        self.weights = nn.EmbeddingBag(num_ngrams, num_classes, mode="sum")
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.zeros_(self.weights.weight)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.weights(ids, offsets) + self.bias


def _packed(vocab: NgramVocab, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    encoded = [vocab.encode(e.text) for e in examples]
    lengths = torch.tensor([len(e) for e in encoded])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    ids = torch.tensor([i for e in encoded for i in e], dtype=torch.long)
    return ids, offsets, torch.tensor([e.label for e in examples])


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _correct(model: LinearNgramClassifier, data: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One boolean per text: the prediction is right."""
    ids, offsets, labels = data
    with torch.no_grad():
        return model(ids, offsets).argmax(-1) == labels


def _accuracy(model: LinearNgramClassifier, data: tuple[torch.Tensor, ...]) -> float:
    return _correct(model, data).float().mean().item()


def _subset(data: tuple[torch.Tensor, ...], rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids and offsets of the texts in ``rows`` (an EmbeddingBag mini-batch)."""
    ids, offsets, _ = data
    ends = torch.cat([offsets[1:], torch.tensor([ids.numel()])])
    pieces = [ids[offsets[r] : ends[r]] for r in rows.tolist()]
    lengths = torch.tensor([len(p) for p in pieces])
    return torch.cat(pieces), torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])


def fit_ngram_baseline(splits: Splits, tokenize: Callable[[str], list[str]], *, orders: Iterable[int] = (1, 2),
                       min_freq: int = 2, l2_strengths: Sequence[float] = (0.0, 1e-5, 1e-4),
                       epochs: int = 5, lr: float = 0.02, batch_size: int = 64, seed: int = 0) -> dict:
    """Train the n-gram logistic regression on ``splits.train`` and report it.

    For each L2 strength in ``l2_strengths`` a model is trained for ``epochs`` epochs (Adam,
    mini-batches in a seeded order); the strength with the best validation accuracy is kept.

    Args:
        splits: a :class:`nlprune.data.Splits` of :class:`nlprune.data.Example`.
        tokenize: the tokenizer (``data.tokenize_en`` for words, ``data.tokenize_zh`` for characters).
        orders: the n-gram orders, e.g. ``(1, 2)`` for unigrams and bigrams.
        min_freq: n-grams seen fewer times in the training split are ignored.
        l2_strengths: the penalties ``λ Σ w²`` to choose from on the validation split.
        epochs, lr, batch_size, seed: training settings.

    Returns:
        A dict with ``valid_accuracy``, ``test_accuracy``, ``test_correct`` (one boolean per test
        example, in the split's order, for :func:`nlprune.measure.paired_comparison`), the
        chosen ``l2``, the number of n-gram features ``features`` and of parameters
        ``parameters``, and the ``model``.

    Raises:
        ValueError: empty ``l2_strengths``, a negative strength, ``epochs < 1`` or ``batch_size < 1``.
        TypeError: ``epochs`` or ``batch_size`` is not an integer, or a strength not a number.
    """
    if len(l2_strengths) == 0:
        raise ValueError("l2_strengths is empty: give at least one strength (0.0 for none)")
    if any(_checks.real(s, "l2_strengths") < 0 for s in l2_strengths):
        raise ValueError(f"l2_strengths must be >= 0, got {list(l2_strengths)}")
    epochs = _checks.at_least(epochs, "epochs", 1)
    batch_size = _checks.at_least(batch_size, "batch_size", 1)
    vocab = NgramVocab((e.text for e in splits.train), tokenize, orders=orders, min_freq=min_freq)
    train, valid, test = (_packed(vocab, part) for part in (splits.train, splits.valid, splits.test))
    best = None
    for strength in l2_strengths:
        generator = torch.Generator().manual_seed(seed)
        model = LinearNgramClassifier(len(vocab))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            for rows in _batches(len(train[2]), batch_size, generator):
                ids, offsets = _subset(train, rows)
                loss = nn.functional.cross_entropy(model(ids, offsets), train[2][rows])
                loss = loss + strength * model.weights.weight.pow(2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        score = _accuracy(model, valid)
        if best is None or score > best[0]:
            best = (score, strength, model)
    score, strength, model = best
    return {"valid_accuracy": score, "test_accuracy": _accuracy(model, test),
            "test_correct": _correct(model, test), "l2": strength,
            "features": len(vocab) - 1, "parameters": sum(p.numel() for p in model.parameters()),
            "model": model}
