"""nlprune: the helper package of the course *Pruning NLP Models*.

One concept per module: ``data`` (corpora, tokenizers, loaders), ``models``, ``train``
(loops, reproducibility, cache of base models), ``prune`` (scores and masks), ``measure``
(counts, sizes, latency) and ``plot`` (shared figures).
"""

__version__ = "0.1.0"
