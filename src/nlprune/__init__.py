"""nlprune: the helper package of the course *Pruning NLP Models*.

One concept per module: ``data`` (corpora, tokenizers, loaders), ``models``, ``train``
(loops, reproducibility, cache of base models), ``prune`` (scores and masks), ``cut`` (removing
whole units), ``measure`` (counts, sizes, latency, results tables), ``plot`` (shared figures),
``seq2seq`` (the date-translation task and its encoder–decoder), ``transformer`` (the MiniLM
encoder with head and unit gates), ``compress`` (storing a pruned model compactly), ``distill``
(knowledge distillation as a loss for ``train.fit``), ``llm``
(SmolLM2 read from its GGUF file), ``oneshot`` (magnitude, Wanda and SparseGPT pruning of a
language model without retraining);
``keras_prune`` and ``keras_cut`` are the TensorFlow/Keras counterparts.
"""

__version__ = "0.2.0"
