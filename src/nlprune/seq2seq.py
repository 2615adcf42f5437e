"""Section 7.3: a toy translation task, an encoder–decoder with attention, and the parameter
classes of See et al. (2016) with their three magnitude-pruning schemes.

No parallel corpus ships offline, so the task is generated: a date written out in English or
in Chinese (by ``babel``, in several formats) is translated into its ISO form::

    "Tuesday, March 3, 1998"  ->  "1998-03-03"
    "1998年3月3日星期二"        ->  "1998-03-03"

The test is not memorisation: the test dates come from *held-out years* (every year ending in
7), which never occur in training, so the model must copy digits it has seen only in other
years; the ``"unseen"`` split also uses formats that never occur in training.

The model is a character-level GRU encoder–decoder with Luong's "general" attention and input
feeding (:class:`Seq2Seq`). Its weights fall into the six classes that See et al. prune
(:data:`PARAMETER_CLASSES`), and :func:`class_masks` builds their class-blind, class-uniform
and class-distribution masks.
"""

from __future__ import annotations

import copy
import datetime
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from babel.dates import format_date
from torch import nn

from . import __version__, _checks, cut, prune
from .cache import cached_model, recipe_key
from .masks import Pruner, apply_masks, loop_masks, masked_step
from .train import model_device, seeded

__all__ = ["TRAIN_FORMATS", "UNSEEN_FORMATS", "DatePair", "is_held_out_year", "date_pairs", "CharVocab",
           "encode_pairs", "DateTask", "date_task", "Seq2Seq", "PARAMETER_CLASSES", "SCHEMES", "class_masks",
           "attentional_unit_norms", "attentional_unit_masks", "cut_attentional_units", "fit_seq2seq",
           "translate", "exact_match", "TRANSLATOR_RECIPE", "base_translator"]

#: babel date patterns seen in training, per language. ``y`` is the full year (never two digits).
TRAIN_FORMATS: dict[str, tuple[str, ...]] = {
    "en": ("MMMM d, y", "EEEE, MMMM d, y", "d MMMM y", "MMM d, y"),
    "zh": ("y年M月d日", "y年M月d日EEEE", "y年MMMMd日"),
}
#: Patterns never seen in training, made of pieces that are: day-first with a weekday in
#: English ("Tuesday, 3 March 1998"), the Chinese month name with a weekday ("1998年三月3日星期二").
UNSEEN_FORMATS: dict[str, tuple[str, ...]] = {
    "en": ("EEEE, d MMMM y",),
    "zh": ("y年MMMMd日EEEE",),
}
_SPLITS = ("train", "test", "unseen")
_FIRST, _LAST = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)


@dataclass(frozen=True)
class DatePair:
    """One example: the written-out ``source``, the ISO ``target``, the ``language`` and the
    babel ``pattern`` that wrote the source."""

    source: str
    target: str
    language: str
    pattern: str


def is_held_out_year(year: int) -> bool:
    """Whether ``year`` belongs to the test years (those ending in 7), never seen in training."""
    return _checks.integer(year, "year") % 10 == 7


def date_pairs(n: int, split: str = "train", *, seed: int = 0) -> list[DatePair]:
    """``n`` date pairs, deterministic for a given ``seed``.

    Each pair picks a language (English or Chinese) with equal probability, a pattern of that
    language, and a day between 1900-01-01 and 2099-12-31 from the allowed years.

    Args:
        n: how many pairs, >= 1.
        split: ``"train"`` (years not ending in 7, :data:`TRAIN_FORMATS`), ``"test"`` (the
            held-out years, the training formats) or ``"unseen"`` (the held-out years,
            :data:`UNSEEN_FORMATS`).
        seed: the seed of the generator.

    Raises:
        ValueError: ``n < 1`` or an unknown ``split``.

    Example:
        >>> [(p.source, p.target) for p in date_pairs(2, "test", seed=1)]
        [('Saturday, August 3, 2097', '2097-08-03'), ('1997年11月28日星期五', '1997-11-28')]
    """
    n = _checks.integer(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    formats = UNSEEN_FORMATS if split == "unseen" else TRAIN_FORMATS
    held_out = split != "train"
    rng = random.Random(f"{split}-{seed}")
    span = (_LAST - _FIRST).days
    pairs = []
    while len(pairs) < n:
        day = _FIRST + datetime.timedelta(days=rng.randrange(span + 1))
        if is_held_out_year(day.year) != held_out:
            continue
        language = rng.choice(sorted(formats))
        pattern = rng.choice(formats[language])
        pairs.append(DatePair(format_date(day, pattern, locale=language), day.isoformat(), language, pattern))
    return pairs


class CharVocab:
    """Characters to ids, with ``<pad>`` = 0, ``<s>`` = 1 (start), ``</s>`` = 2 (end) and
    ``<unk>`` = 3; the other characters in sorted order."""

    SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")

    def __init__(self, texts: Iterable[str]) -> None:
        chars = sorted({c for t in texts for c in t})
        self.itos: list[str] = list(self.SPECIALS) + chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (unknown ones as ``<unk>``), without start or end."""
        return [self.stoi.get(c, 3) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` up to the first ``</s>``, skipping ``<pad>`` and ``<s>``."""
        out = []
        for i in map(int, ids):
            if i == 2:
                break
            if i >= 3:
                out.append(self.itos[i])
        return "".join(out)


def encode_pairs(pairs: Sequence[DatePair], source_vocab: CharVocab, target_vocab: CharVocab
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded tensors ``(source [N, S], source_lengths [N], target [N, T + 2])``; each target
    row is ``<s>``, the characters, ``</s>`` (ISO dates all have ``T = 10``)."""
    if len(pairs) == 0:
        raise ValueError("pairs is empty")
    sources = [source_vocab.encode(p.source) for p in pairs]
    targets = [[1] + target_vocab.encode(p.target) + [2] for p in pairs]
    width, t_width = max(map(len, sources)), max(map(len, targets))
    src = torch.zeros(len(pairs), width, dtype=torch.long)
    tgt = torch.zeros(len(pairs), t_width, dtype=torch.long)
    for row, (s, t) in enumerate(zip(sources, targets)):
        src[row, : len(s)] = torch.tensor(s)
        tgt[row, : len(t)] = torch.tensor(t)
    return src, torch.tensor([len(s) for s in sources]), tgt


Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class DateTask:
    """The date task as tensors (see :func:`encode_pairs`) with its pairs and vocabularies."""

    pairs: dict[str, list[DatePair]]
    source_vocab: CharVocab
    target_vocab: CharVocab
    train: Tensors
    test: Tensors
    unseen: Tensors


def date_task(train: int = 20000, test: int = 2000, unseen: int = 1000, *, seed: int = 0) -> DateTask:
    """The course's date task: ``train`` training pairs, ``test`` pairs from the held-out years
    in the training formats and ``unseen`` pairs in the unseen formats (:func:`date_pairs`);
    the vocabularies are built from the training pairs only."""
    pairs = {"train": date_pairs(train, "train", seed=seed), "test": date_pairs(test, "test", seed=seed),
             "unseen": date_pairs(unseen, "unseen", seed=seed)}
    source_vocab = CharVocab(p.source for p in pairs["train"])
    target_vocab = CharVocab(p.target for p in pairs["train"])
    tensors = {k: encode_pairs(v, source_vocab, target_vocab) for k, v in pairs.items()}
    return DateTask(pairs, source_vocab, target_vocab, tensors["train"], tensors["test"], tensors["unseen"])


class Seq2Seq(nn.Module):
    """A GRU encoder–decoder with Luong's "general" attention and input feeding.

    Encoder: ``h_1..h_S = GRU(E_src x)``. Decoder step ``t``, with the previous target
    character ``y`` and the previous attentional vector ``h̃_{t-1}`` (input feeding):

    ``s_t = GRU([E_tgt y; h̃_{t-1}], s_{t-1})``, scores ``e_i = s_t^T W_a h_i`` (padding masked),
    ``α = softmax(e)``, context ``c_t = Σ α_i h_i``, ``h̃_t = tanh(W_c [c_t; s_t])``, logits
    ``W_o h̃_t + b_o``.

    Args:
        source_size, target_size: the two vocabulary sizes.
        embed: embedding width; hidden: GRU width (encoder and decoder).
    """

    def __init__(self, source_size: int, target_size: int, *, embed: int = 64, hidden: int = 192) -> None:
        super().__init__()
        self.hidden, self.embed, self.feed_size = hidden, embed, hidden
        self.src_embedding = nn.Embedding(source_size, embed, padding_idx=0)
        self.encoder = nn.GRU(embed, hidden, batch_first=True)
        self.tgt_embedding = nn.Embedding(target_size, embed, padding_idx=0)
        self.decoder = nn.GRU(embed + hidden, hidden, batch_first=True)
        self.attention = nn.Linear(hidden, hidden, bias=False)  # W_a
        self.combine = nn.Linear(2 * hidden, hidden)  # W_c
        self.out = nn.Linear(hidden, target_size)  # W_o, the softmax layer

    def encode(self, source: torch.Tensor, lengths: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder states ``[B, S, H]``, the padding mask ``[B, S]`` and the last state ``[1, B, H]``."""
        packed = nn.utils.rnn.pack_padded_sequence(self.src_embedding(source), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        states, last = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=source.shape[1])
        return states, source != 0, last

    def step(self, previous: torch.Tensor, feed: torch.Tensor, state: torch.Tensor, states: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder step: ``(logits [B, V], h̃_t [B, H], s_t [1, B, H])``."""
        x = torch.cat([self.tgt_embedding(previous), feed], dim=-1).unsqueeze(1)
        output, state = self.decoder(x, state)
        s = output.squeeze(1)
        scores = torch.einsum("bh,bsh->bs", self.attention(s), states).masked_fill(~mask, float("-inf"))
        context = torch.einsum("bs,bsh->bh", torch.softmax(scores, dim=-1), states)
        feed = torch.tanh(self.combine(torch.cat([context, s], dim=-1)))
        return self.out(feed), feed, state

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, V]`` for the target inputs ``target_in`` (``<s>`` first)."""
        states, mask, state = self.encode(source, lengths)
        feed = states.new_zeros(source.shape[0], self.feed_size)
        logits = []
        for t in range(target_in.shape[1]):
            out, feed, state = self.step(target_in[:, t], feed, state, states, mask)
            logits.append(out)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, lengths: torch.Tensor, max_len: int = 11) -> torch.Tensor:
        """Greedy decoding: ``[B, max_len]`` ids, each step feeding back the most likely character."""
        states, mask, state = self.encode(source, lengths)
        feed = states.new_zeros(source.shape[0], self.feed_size)
        previous = torch.ones(source.shape[0], dtype=torch.long, device=source.device)  # <s>
        outputs = []
        for _ in range(max_len):
            out, feed, state = self.step(previous, feed, state, states, mask)
            previous = out.argmax(-1)
            outputs.append(previous)
        return torch.stack(outputs, dim=1)


#: The weight matrices of each parameter class of See et al. (2016); biases are not pruned.
PARAMETER_CLASSES: dict[str, tuple[str, ...]] = {
    "source embedding": ("src_embedding.weight",),
    "encoder": ("encoder.weight_ih_l0", "encoder.weight_hh_l0"),
    "target embedding": ("tgt_embedding.weight",),
    "decoder": ("decoder.weight_ih_l0", "decoder.weight_hh_l0"),
    "attention": ("attention.weight", "combine.weight"),
    "softmax": ("out.weight",),
}
SCHEMES = ("class-blind", "class-uniform", "class-distribution")


def class_masks(model: nn.Module, sparsity: float, scheme: str,
                classes: Mapping[str, Sequence[str]] = PARAMETER_CLASSES) -> dict[str, torch.Tensor]:
    """Magnitude keep-masks for the weights of ``classes`` under one of See et al.'s schemes.

    * ``"class-blind"``: one threshold for all weights: the ``sparsity`` smallest ``|w|`` overall.
    * ``"class-uniform"``: the ``sparsity`` smallest ``|w|`` within each class.
    * ``"class-distribution"``: in class ``c`` the weights with ``|w| < λ σ_c`` go, ``σ_c`` the
      standard deviation of the class's weights and ``λ`` the one value that prunes
      ``sparsity`` of all weights; i.e. the smallest ``|w| / σ_c`` overall.

    Each scheme prunes exactly ``round(sparsity * n)`` of the ``n`` weights (class-uniform: per
    class), via :func:`nlprune.prune.compute_masks`.

    Raises:
        ValueError: a ``sparsity`` outside [0, 1], an unknown ``scheme``, or class members that
            are not parameters of ``model``.
    """
    sparsity = _checks.fraction(sparsity, "sparsity")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    params = dict(model.named_parameters())
    names = [n for members in classes.values() for n in members]
    _checks.known_names(names, params, argument="classes")
    if scheme == "class-blind":
        return prune.compute_masks({n: params[n].detach().abs() for n in names}, sparsity, scope="global")
    masks: dict[str, torch.Tensor] = {}
    if scheme == "class-uniform":
        for members in classes.values():
            scores = {n: params[n].detach().abs() for n in members}
            masks.update(prune.compute_masks(scores, sparsity, scope="global"))
        return masks
    scores = {}
    for members in classes.values():
        sigma = torch.cat([params[n].detach().flatten() for n in members]).std()
        scores.update({n: params[n].detach().abs() / sigma for n in members})
    return prune.compute_masks(scores, sparsity, scope="global")


def attentional_unit_norms(model: Seq2Seq) -> torch.Tensor:
    """The L2 norm of everything each unit of the attentional vector ``h̃`` owns: its row of
    ``W_c`` (and bias), its column of the softmax layer ``W_o`` and its input column of the
    decoder GRU (input feeding)."""
    e = model.embed
    parts = [model.combine.weight.pow(2).sum(1), model.combine.bias.pow(2), model.out.weight.pow(2).sum(0),
             model.decoder.weight_ih_l0[:, e:].pow(2).sum(0)]
    return torch.stack(parts).sum(0).sqrt().detach()


def attentional_unit_masks(model: Seq2Seq, keep: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Keep-masks that silence the units of ``h̃`` not in ``keep``: their rows of ``W_c``, their
    columns of ``W_o`` and their input columns of the decoder (for masked fine-tuning), on the
    model's device."""
    keep = cut.keep_index(keep, model.feed_size)
    unit = torch.zeros(model.feed_size, dtype=torch.bool, device=model.decoder.weight_ih_l0.device)
    unit[keep] = True
    decoder = torch.ones_like(model.decoder.weight_ih_l0, dtype=torch.bool)
    decoder[:, model.embed:] = unit
    return {"combine.weight": unit[:, None].expand_as(model.combine.weight).clone(),
            "out.weight": unit[None, :].expand_as(model.out.weight).clone(),
            "decoder.weight_ih_l0": decoder}


@torch.no_grad()
def cut_attentional_units(model: Seq2Seq, keep: Sequence[int] | torch.Tensor) -> Seq2Seq:
    """A copy of ``model`` whose attentional vector ``h̃`` has only the units in ``keep``: ``W_c``
    loses rows, ``W_o`` and the decoder's input matrix lose columns. When the dropped units
    are silenced (:func:`attentional_unit_masks`), the cut model computes the same outputs. The
    copy has the model's device and dtype.

    Raises:
        ValueError, TypeError: ``keep`` is empty, has repeats, indices outside ``[0, feed_size)``
            or is not a sequence of integers (as :func:`nlprune.cut.cut_rnn_hidden`).
    """
    keep = cut.keep_index(keep, model.feed_size).sort().values
    new = copy.deepcopy(model)
    new.combine = cut.cut_linear_outputs(model.combine, keep)
    new.out = cut.cut_linear_inputs(model.out, keep)
    e, h = model.embed, model.hidden
    weight = model.decoder.weight_ih_l0
    columns = torch.cat([torch.arange(e), e + keep]).to(weight.device)
    new.decoder = nn.GRU(e + len(keep), h, batch_first=True, device=weight.device, dtype=weight.dtype)
    new.decoder.weight_ih_l0.copy_(weight[:, columns])
    for name in ("weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        getattr(new.decoder, name).copy_(getattr(model.decoder, name))
    new.feed_size = len(keep)
    return new.train(model.training)


def fit_seq2seq(model: Seq2Seq, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, steps: int,
                batch_size: int = 64, lr: float = 3e-3, masks: Mapping[str, torch.Tensor] | None = None,
                pruner: Pruner | None = None, seed: int = 0) -> list[float]:
    """Train with teacher forcing for ``steps`` mini-batches drawn in a seeded order (cycling
    over the data), with Adam and a learning rate that decays linearly from ``lr`` to zero, on
    the model's device. ``masks`` (fixed) or ``pruner`` (changing, called with the step number
    before each step) keep pruned weights at zero, as in :func:`nlprune.train.fit`; the dropout
    masks draw from torch's global generator seeded with ``seed``, restored afterwards
    (:func:`nlprune.train.seeded`).

    Returns:
        The training loss of every step.

    Raises:
        TypeError: ``pruner`` is not an :class:`nlprune.masks.Pruner`.
        ValueError: ``steps < 1``, ``batch_size < 1``, or both ``masks`` and ``pruner``.
    """
    steps = _checks.at_least(steps, "steps", 1)
    batch_size = _checks.at_least(batch_size, "batch_size", 1)
    current = loop_masks(masks, pruner)
    device = model_device(model)
    source, lengths, target = (t.to(device) for t in data)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    if current() is not None:
        apply_masks(model, current())
    model.train()
    order, position, losses = torch.randperm(len(source), generator=generator), 0, []
    with seeded(seed, device):
        for step in range(steps):
            if pruner is not None:
                pruner(step)
            if position + batch_size > len(order):
                order, position = torch.randperm(len(source), generator=generator), 0
            rows = order[position: position + batch_size].to(device)
            position += batch_size
            logits = model(source[rows], lengths[rows], target[rows, :-1])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), target[rows, 1:].flatten(), ignore_index=0)
            masked_step(model, optimizer, loss, current(), 1.0)
            schedule.step()
            losses.append(loss.item())
    model.eval()
    return losses


def translate(model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, *, width: int = 11,
              batch_size: int = 512) -> torch.Tensor:
    """Greedy decoding of every source row, ``batch_size`` rows at a time, on the model's device.

    Args:
        model: the translator (put in evaluation mode).
        source, lengths: as :func:`encode_pairs` gives them.
        width: decoding steps per row; the default 11 fits the date task (10 characters of an
            ISO date and the end mark).
        batch_size: rows decoded together.

    Returns:
        The output ids ``[N, width]``, on the model's device.

    Raises:
        ValueError, TypeError: ``width`` or ``batch_size`` is not an integer >= 1.
    """
    width = _checks.at_least(width, "width", 1)
    batch_size = _checks.at_least(batch_size, "batch_size", 1)
    model.eval()
    device = model_device(model)
    return torch.cat([model.greedy(source[i: i + batch_size].to(device), lengths[i: i + batch_size], width)
                      for i in range(0, len(source), batch_size)])


def exact_match(model: Seq2Seq, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """``exact match`` (share of outputs equal to the whole reference, end mark included) and
    ``character accuracy`` (share of the reference's characters, end mark included, predicted
    at their position) of greedy decoding, as many steps as the reference is wide."""
    source, lengths, target = data
    reference = target[:, 1:]
    output = translate(model, source, lengths, width=reference.shape[1])
    reference = reference.to(output.device)
    real = reference != 0
    correct = (output == reference) | ~real
    return {"exact match": float(correct.all(dim=1).float().mean()),
            "character accuracy": float((correct & real).sum() / real.sum())}


# The recipe of the course's date translator. Changing it changes the cache key.
TRANSLATOR_RECIPE = {"embed": 64, "hidden": 192, "steps": 600, "batch_size": 64, "lr": 3e-3, "seed": 0}


def base_translator(task: DateTask) -> tuple[Seq2Seq, dict]:
    """The course's trained :class:`Seq2Seq` for ``task`` (:data:`TRANSLATOR_RECIPE`), trained
    once deterministically and then loaded from the cache (:func:`nlprune.cache.cached_model`)."""
    r = TRANSLATOR_RECIPE
    recipe = {"model": "Seq2Seq", **r, "source_vocab": task.source_vocab.itos,
              "target_vocab": task.target_vocab.itos, "train_pairs": len(task.pairs["train"]),
              "first_pair": [task.pairs["train"][0].source, task.pairs["train"][0].target],
              "nlprune": __version__}

    def build() -> Seq2Seq:
        torch.manual_seed(r["seed"])
        return Seq2Seq(len(task.source_vocab), len(task.target_vocab), embed=r["embed"], hidden=r["hidden"])

    def train_fn(model: Seq2Seq) -> list[float]:
        losses = fit_seq2seq(model, task.train, steps=r["steps"], batch_size=r["batch_size"], lr=r["lr"],
                             seed=r["seed"])
        return losses[-10:]

    model, info = cached_model(recipe_key("seq2seq-dates", recipe), build, train_fn, recipe=recipe)
    return model.eval(), info
