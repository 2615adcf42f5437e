"""Every function follows the model's device and dtype.

The course runs on CPUs, so a tensor made on the CPU by mistake shows only next to a GPU. Two
stand-ins catch it here: float64 models (a weight made in float32 changes the dtype, and the
outputs of a cut model equal the original's to float64 precision, not float32's), and the
``meta`` device (a CPU tensor mixed with meta tensors raises as it would next to CUDA ones)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nlprune import cut, llm, models, oneshot, seq2seq, train
from nlprune import transformer as tr

F64 = torch.float64
META = torch.device("meta")
TIGHT = {"rtol": 1e-12, "atol": 1e-12}  # float64 precision; float32 would be off by about 1e-7


def dtypes(module: nn.Module) -> set[torch.dtype]:
    return {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}


def devices(module: nn.Module) -> set[torch.device]:
    return {t.device for t in [*module.parameters(), *module.buffers()]}


CLASSIFIERS = {"bow": lambda: models.BowMLP(10, embed_dim=4, hidden=6),
               "gru": lambda: models.RNNClassifier(10, kind="gru", embed_dim=4, hidden=6)}


@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_fit_and_evaluate_keep_a_float64_model_in_float64(kind, toy_loaders):
    loader, ordered = toy_loaders
    model = CLASSIFIERS[kind]().double()
    history = train.fit(model, loader, ordered, epochs=1, progress=False)
    assert dtypes(model) == {F64} and devices(model) == {torch.device("cpu")}
    metrics = train.evaluate(model, ordered)
    with torch.no_grad():
        logits = torch.cat([model(ids, lengths) for ids, lengths, _ in ordered])
    labels = torch.cat([labels for *_, labels in ordered])
    assert logits.dtype == F64
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-12)
    assert metrics["accuracy"] == (logits.argmax(-1) == labels).double().mean().item()
    assert history[-1]["valid_loss"] == pytest.approx(metrics["loss"], rel=1e-12)


@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_classifiers_read_cpu_lengths_on_the_model_device(kind):
    """A loader yields ``lengths`` on the CPU; the model moves them where it computes."""
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    model = CLASSIFIERS[kind]().to(META)
    logits = model(ids.to(META), lengths)
    assert logits.device == META and logits.shape == (2, 2)


def test_bow_mlp_computes_in_the_model_dtype():
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 0, 0, 0]])
    model = models.BowMLP(10, embed_dim=4, hidden=6).double()
    words = model.embedding(ids)
    mean = torch.stack([words[0, :3].mean(0), words[1, :2].mean(0)])  # over each text's own words
    expected = model.out(torch.relu(model.hidden(mean)))
    torch.testing.assert_close(model(ids, torch.tensor([3, 2])), expected, **TIGHT)


class OnMeta(nn.Module):
    """A stand-in model whose weight lives on ``meta``: it records the device of every input and
    answers with uniform CPU logits over ``vocab`` tokens (and the state it was given, when
    ``with_state``), so that the code around it can finish."""

    def __init__(self, vocab: int, *, with_state: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, device=META))
        self.with_state = with_state
        self.seen: list[torch.device] = []

    def forward(self, ids: torch.Tensor, state=None):
        self.seen.append(ids.device)
        logits = torch.zeros(*ids.shape, self.weight.shape[0])
        return (logits, state) if self.with_state else logits


def test_sample_text_feeds_the_model_on_its_device():
    from nlprune import data

    _, vocab = data.lm_stream("to be or not to be", min_freq=1)
    model = OnMeta(len(vocab), with_state=True)
    words = models.sample_text(model, vocab, ["to", "be"], words=3)
    assert len(words) == 3 and model.seen == [META] * 4  # the prompt, then one token at a time


def test_cut_rnn_hidden_in_float64():
    torch.manual_seed(0)
    rnn = nn.LSTM(3, 6, num_layers=2, batch_first=True).double()
    keep = [0, 2, 5]
    dropped = [1, 3, 4]
    with torch.no_grad():
        rnn.weight_hh_l0[:, dropped] = 0
        rnn.weight_ih_l1[:, dropped] = 0
        rnn.weight_hh_l1[:, dropped] = 0
    small = cut.cut_rnn_hidden(rnn, keep)
    assert dtypes(small) == {F64}
    x = torch.randn(2, 5, 3, dtype=F64)
    torch.testing.assert_close(small(x)[0], rnn(x)[0][..., keep], **TIGHT)


def test_cut_linear_units_in_float64():
    torch.manual_seed(0)
    first, second = nn.Linear(4, 6).double(), nn.Linear(6, 3).double()
    keep, dropped = [1, 2, 5], [0, 3, 4]
    with torch.no_grad():
        second.weight[:, dropped] = 0
    a, b = cut.cut_linear_units(first, second, keep)
    assert dtypes(a) == dtypes(b) == {F64}
    x = torch.randn(5, 4, dtype=F64)
    torch.testing.assert_close(b(torch.relu(a(x))), second(torch.relu(first(x))), **TIGHT)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_cut_model_hidden_in_float64(kind):
    torch.manual_seed(0)
    model = models.RNNClassifier(10, kind=kind, embed_dim=4, hidden=6).double().eval()
    keep, dropped = [0, 2, 5], [1, 3, 4]
    with torch.no_grad():
        model.rnn.weight_hh_l0[:, dropped] = 0
        model.out.weight[:, dropped] = 0
    small = cut.cut_model_hidden(model, keep)
    assert dtypes(small) == {F64}
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 2, 3]])
    lengths = torch.tensor([3, 5])
    torch.testing.assert_close(small(ids, lengths), model(ids, lengths), **TIGHT)


def silenced_seq2seq(keep: list[int]) -> seq2seq.Seq2Seq:
    torch.manual_seed(0)
    model = seq2seq.Seq2Seq(20, 9, embed=8, hidden=12).double().eval()
    with torch.no_grad():
        for name, mask in seq2seq.attentional_unit_masks(model, keep).items():
            model.get_parameter(name).mul_(mask)
    return model


def test_cut_attentional_units_in_float64():
    keep = [0, 2, 3, 7, 11]
    model = silenced_seq2seq(keep)
    small = seq2seq.cut_attentional_units(model, keep)
    assert dtypes(small) == {F64} and small.decoder.input_size == 8 + 5
    source = torch.randint(4, 20, (3, 6))
    lengths = torch.tensor([6, 4, 5])
    target_in = torch.randint(1, 9, (3, 4))
    torch.testing.assert_close(small(source, lengths, target_in), model(source, lengths, target_in), **TIGHT)


def tiny_minilm() -> tr.MiniLM:
    torch.manual_seed(0)
    return tr.MiniLM(vocab=50, hidden=16, layers=2, heads=4, ffn=8).double().eval()


def gated(model: tr.MiniLM, layer: int, gate: str, dropped: list[int]) -> tr.MiniLM:
    model = copy.deepcopy(model)
    with torch.no_grad():
        getattr(model.layers[layer], gate)[dropped] = 0
    return model


def test_cut_heads_and_ffn_units_in_float64():
    model = tiny_minilm()
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    heads = tr.cut_heads(model, {1: [0, 3]})
    units = tr.cut_ffn_units(model, {0: [1, 4, 6]})
    assert dtypes(heads) == dtypes(units) == {F64}  # the new gates too
    with torch.no_grad():
        torch.testing.assert_close(heads(ids, mask), gated(model, 1, "head_gate", [1, 2])(ids, mask), **TIGHT)
        torch.testing.assert_close(units(ids, mask), gated(model, 0, "ffn_gate", [0, 2, 3, 5, 7])(ids, mask),
                                   **TIGHT)


def test_cuts_keep_the_model_on_its_device():
    model = seq2seq.Seq2Seq(20, 9, embed=8, hidden=12).to(META)
    assert devices(seq2seq.cut_attentional_units(model, [0, 2])) == {META}
    masks = seq2seq.attentional_unit_masks(model, [0, 2])
    assert {m.device for m in masks.values()} == {META}
    minilm = tr.MiniLM(vocab=50, hidden=16, layers=2, heads=4, ffn=8).to(META)
    assert devices(tr.cut_heads(minilm, {0: [1, 2]})) == {META}
    assert devices(tr.cut_ffn_units(minilm, {1: [0, 5]})) == {META}
    classifier = models.RNNClassifier(10, kind="lstm", embed_dim=4, hidden=6).to(META)
    assert devices(cut.cut_model_hidden(classifier, [1, 3])) == {META}


def tiny_llama() -> llm.Llama:
    torch.manual_seed(0)
    config = llm.LlamaConfig(vocab_size=50, hidden=16, intermediate=32, layers=2, heads=4, kv_heads=2,
                             rope_theta=10000.0, norm_eps=1e-5)
    return llm.Llama(config).eval()


def test_llama_builds_its_positions_on_the_model_device_and_dtype():
    model = tiny_llama().to(META)
    cos, sin = model.rotary(7)
    assert cos.device == sin.device == META and cos.shape == (7, 4)
    assert model(torch.zeros(2, 7, dtype=torch.long, device=META)).device == META
    reference = tiny_llama()
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    for dtype in (F64, torch.bfloat16):
        model = tiny_llama().to(dtype)
        cos, _ = model.rotary(7)
        assert cos.dtype == dtype
        torch.testing.assert_close(cos.float(), reference.rotary(7)[0], rtol=1e-2, atol=1e-2)
        with torch.no_grad():
            logits = model(ids)
        assert logits.dtype == dtype
        torch.testing.assert_close(logits.float(), reference(ids), rtol=0.1, atol=0.1)


def test_llm_perplexity_feeds_the_model_on_its_device():
    model = OnMeta(37)
    windows = torch.randint(0, 37, (3, 9), generator=torch.Generator().manual_seed(0))
    assert llm.perplexity(model, windows, batch_size=2) == pytest.approx(37.0)
    assert model.seen == [META, META]


def test_prune_llm_runs_the_calibration_on_the_model_device():
    """Wanda with an unstructured sparsity is the method whose masks can be chosen on ``meta``
    (N:M masks and global thresholds read values, which meta tensors do not have)."""
    model = tiny_llama().to(META)
    calibration = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    masks = oneshot.prune_llm(model, calibration, "wanda", sparsity=0.5)
    assert len(masks) == 2 * 7 and {m.device for m in masks.values()} == {META}
