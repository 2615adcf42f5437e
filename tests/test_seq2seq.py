import datetime

import pytest
import torch

from nlprune import prune, seq2seq


def test_date_pairs_are_deterministic_and_correct():
    a, b = seq2seq.date_pairs(50, seed=3), seq2seq.date_pairs(50, seed=3)
    assert a == b and a != seq2seq.date_pairs(50, seed=4)
    for p in a:
        day = datetime.date.fromisoformat(p.target)  # a real ISO date
        assert str(day.year) in p.source  # four-digit year, never two digits
        assert p.pattern in seq2seq.TRAIN_FORMATS[p.language]
    assert {p.language for p in seq2seq.date_pairs(200)} == {"en", "zh"}


def test_train_and_test_are_disjoint_as_designed():
    train = seq2seq.date_pairs(3000, "train")
    test = seq2seq.date_pairs(1000, "test")
    unseen = seq2seq.date_pairs(500, "unseen")
    train_years = {int(p.target[:4]) for p in train}
    held_out_years = {int(p.target[:4]) for p in test + unseen}
    assert not train_years & held_out_years  # no test year is ever seen in training
    assert all(y % 10 == 7 for y in held_out_years)
    assert not {p.target for p in train} & {p.target for p in test}
    train_formats = {(p.language, p.pattern) for p in train}
    unseen_formats = {(p.language, p.pattern) for p in unseen}
    assert train_formats == {(lang, f) for lang, fs in seq2seq.TRAIN_FORMATS.items() for f in fs}
    assert not train_formats & unseen_formats
    assert {p.pattern for p in test} <= {f for fs in seq2seq.TRAIN_FORMATS.values() for f in fs}


def test_date_pairs_bad_input():
    with pytest.raises(ValueError, match="split must be one of"):
        seq2seq.date_pairs(3, "dev")
    with pytest.raises(ValueError, match="n must be >= 1"):
        seq2seq.date_pairs(0)


def test_vocab_and_encoding_round_trip():
    pairs = seq2seq.date_pairs(20)
    sv = seq2seq.CharVocab(p.source for p in pairs)
    tv = seq2seq.CharVocab(p.target for p in pairs)
    src, lengths, tgt = seq2seq.encode_pairs(pairs, sv, tv)
    assert src.shape[0] == tgt.shape[0] == 20 and tgt.shape[1] == 12
    for row, p in enumerate(pairs):
        assert sv.decode(src[row, : lengths[row]]) == p.source
        assert tgt[row, 0] == 1 and tv.decode(tgt[row, 1:]) == p.target


def small_model():
    torch.manual_seed(0)
    return seq2seq.Seq2Seq(20, 9, embed=8, hidden=12)


def test_seq2seq_teacher_forcing_matches_stepwise_decoding():
    model = small_model().eval()
    src = torch.randint(4, 20, (3, 7))
    src[1, 5:] = 0
    lengths = (src != 0).sum(1)
    target_in = torch.randint(1, 9, (3, 4))
    logits = model(src, lengths, target_in)
    assert logits.shape == (3, 4, 9)
    states, mask, state = model.encode(src, lengths)
    feed = torch.zeros(3, 12)
    for t in range(4):
        out, feed, state = model.step(target_in[:, t], feed, state, states, mask)
        torch.testing.assert_close(out, logits[:, t])
    # padding is ignored: extra padding does not change the output
    wider = torch.cat([src, torch.zeros(3, 2, dtype=torch.long)], 1)
    torch.testing.assert_close(model(wider, lengths, target_in), logits)


def test_parameter_classes_cover_every_weight_matrix():
    model = small_model()
    listed = [n for members in seq2seq.PARAMETER_CLASSES.values() for n in members]
    matrices = [n for n, p in model.named_parameters() if p.dim() == 2]
    assert sorted(listed) == sorted(matrices)


def test_class_masks_schemes():
    model = small_model()
    params = dict(model.named_parameters())
    classes = seq2seq.PARAMETER_CLASSES
    total = sum(params[n].numel() for ms in classes.values() for n in ms)
    for scheme in seq2seq.SCHEMES:
        masks = seq2seq.class_masks(model, 0.8, scheme)
        pruned = sum(int((~m).sum()) for m in masks.values())
        if scheme != "class-uniform":
            assert pruned == round(0.8 * total)
    # class-uniform: 80% within every class
    masks = seq2seq.class_masks(model, 0.8, "class-uniform")
    for members in classes.values():
        n = sum(params[m].numel() for m in members)
        assert sum(int((~masks[m]).sum()) for m in members) == round(0.8 * n)
    # class-blind: one threshold, every kept |w| above every pruned |w|
    masks = seq2seq.class_masks(model, 0.8, "class-blind")
    kept = torch.cat([params[n].detach().abs()[masks[n]] for n in masks])
    gone = torch.cat([params[n].detach().abs()[~masks[n]] for n in masks])
    assert kept.min() >= gone.max()
    # class-distribution: a threshold lambda * sigma_c per class, one lambda
    masks = seq2seq.class_masks(model, 0.8, "class-distribution")
    ratios_kept, ratios_gone = [], []
    for members in classes.values():
        sigma = torch.cat([params[n].detach().flatten() for n in members]).std()
        for n in members:
            ratio = params[n].detach().abs() / sigma
            ratios_kept.append(ratio[masks[n]])
            ratios_gone.append(ratio[~masks[n]])
    assert torch.cat(ratios_kept).min() >= torch.cat(ratios_gone).max()
    with pytest.raises(ValueError, match="scheme must be one of"):
        seq2seq.class_masks(model, 0.5, "class-random")
    with pytest.raises(ValueError, match="sparsity"):
        seq2seq.class_masks(model, 1.5, "class-blind")


def test_fit_keeps_masks_and_exact_match_counts():
    pairs = seq2seq.date_pairs(64)
    sv = seq2seq.CharVocab(p.source for p in pairs)
    tv = seq2seq.CharVocab(p.target for p in pairs)
    data = seq2seq.encode_pairs(pairs, sv, tv)
    torch.manual_seed(0)
    model = seq2seq.Seq2Seq(len(sv), len(tv), embed=8, hidden=16)
    masks = seq2seq.class_masks(model, 0.5, "class-blind")
    losses = seq2seq.fit_seq2seq(model, data, steps=30, batch_size=16, masks=masks)
    assert len(losses) == 30 and losses[-1] < losses[0]
    prune.check_masks(model, masks)
    scores = seq2seq.exact_match(model, data)
    assert 0 <= scores["exact match"] <= scores["character accuracy"] <= 1
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        seq2seq.fit_seq2seq(model, data, steps=0)


def test_cutting_silenced_attentional_units_keeps_the_outputs():
    model = small_model().eval()
    keep = torch.tensor([0, 2, 3, 7, 11])
    masks = seq2seq.attentional_unit_masks(model, keep)
    prune.apply_masks(model, masks)
    small = seq2seq.cut_attentional_units(model, keep)
    assert small.feed_size == 5 and small.combine.out_features == 5
    assert small.decoder.input_size == 8 + 5 and small.out.in_features == 5
    src = torch.randint(4, 20, (4, 6))
    lengths = torch.full((4,), 6)
    target_in = torch.randint(1, 9, (4, 5))
    torch.testing.assert_close(small(src, lengths, target_in), model(src, lengths, target_in))
    assert torch.equal(small.greedy(src, lengths, 5), model.greedy(src, lengths, 5))
    norms = seq2seq.attentional_unit_norms(model)
    assert norms.shape == (12,) and (norms[keep] > 0).all()
    with pytest.raises(ValueError, match="duplicate"):
        seq2seq.cut_attentional_units(model, [0, 0, 1])
    with pytest.raises(ValueError, match=r"indices in \[0, 11\]"):
        seq2seq.cut_attentional_units(model, [12])


class FixedAnswers(torch.nn.Module):
    """A stand-in translator: source row ``i`` (its first id is ``i``) is answered with
    ``answers[i]``, cut to the number of steps asked for."""

    def __init__(self, answers):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # where the model lives
        self.answers = torch.tensor(answers)
        self.steps = []

    def greedy(self, source, lengths, max_len):
        self.steps.append(max_len)
        return self.answers[source[:, 0]][:, :max_len]


def test_exact_match_counts_by_hand():
    target = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0], [1, 5, 5, 5, 2]])  # <s> chars </s> pad
    answers = [[5, 6, 2, 9, 9, 9, 9, 9, 9, 9, 9],   # right, then anything after the end mark: exact
               [7, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # 1 of 2 (the end mark is missing)
               [5, 5, 4, 2, 0, 0, 0, 0, 0, 0, 0]]   # 3 of 4
    source = torch.arange(3)[:, None]
    scores = seq2seq.exact_match(FixedAnswers(answers), (source, torch.ones(3, dtype=torch.long), target))
    assert scores == {"exact match": pytest.approx(1 / 3), "character accuracy": pytest.approx(7 / 9)}


def test_exact_match_decodes_references_longer_than_a_date():
    """The reference decides how many steps to decode, not the date task's 11."""
    width = 13
    target = torch.tensor([[1] + [4] * (width - 1) + [2], [1] + [5] * (width - 1) + [2]])
    model = FixedAnswers([[4] * (width - 1) + [2], [5] * (width - 2) + [6, 2]])
    scores = seq2seq.exact_match(model, (torch.arange(2)[:, None], torch.ones(2, dtype=torch.long), target))
    assert scores == {"exact match": 0.5, "character accuracy": pytest.approx((2 * width - 1) / (2 * width))}
    assert model.steps == [width]


def test_translate_width_and_batches():
    model = small_model().eval()
    source = torch.randint(4, 20, (5, 6))
    lengths = torch.tensor([6, 3, 5, 6, 2])
    source[1, 3:], source[2, 5:], source[4, 2:] = 0, 0, 0
    whole = seq2seq.translate(model, source, lengths)
    assert whole.shape == (5, 11)  # the date task's width by default
    assert torch.equal(seq2seq.translate(model, source, lengths, batch_size=2), whole)
    assert torch.equal(seq2seq.translate(model, source, lengths, width=4), whole[:, :4])
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"):
        seq2seq.translate(model, source, lengths, width=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        seq2seq.translate(model, source, lengths, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        seq2seq.translate(model, source, lengths, batch_size=2.0)


def test_class_masks_names_classes_for_unknown_members():
    with pytest.raises(ValueError, match=r"classes contains parameters the model does not have: \['nope'\]"):
        seq2seq.class_masks(small_model(), 0.5, "class-blind", {"x": ("out.weight", "nope")})


def test_class_masks_are_the_masks_of_torch_prune():
    """Section 7.3's reading of See et al.'s schemes in ``torch.nn.utils.prune`` terms: class-blind
    is one ``global_unstructured`` call (``L1Unstructured``) over all class tensors, class-uniform
    that call once per class, class-distribution the global call with ``|w| / σ_c`` as
    ``importance_scores``. Each gives exactly the masks of ``seq2seq.class_masks``."""
    from torch.nn.utils import prune as torch_prune

    classes = seq2seq.PARAMETER_CLASSES
    for sparsity in (0.5, 0.8, 0.9):
        for scheme in seq2seq.SCHEMES:
            ours = seq2seq.class_masks(small_model(), sparsity, scheme)
            model = small_model()
            params = dict(model.named_parameters())

            def target(name):
                module_name, attribute = name.rsplit(".", 1)
                return model.get_submodule(module_name), attribute

            if scheme == "class-uniform":
                groups = [list(members) for members in classes.values()]
            else:
                groups = [[n for members in classes.values() for n in members]]
            scores = None
            if scheme == "class-distribution":
                scores = {}
                for members in classes.values():
                    sigma = torch.cat([params[n].detach().flatten() for n in members]).std()
                    scores.update({target(n): params[n].detach().abs() / sigma for n in members})
            for group in groups:
                torch_prune.global_unstructured([target(n) for n in group],
                                                pruning_method=torch_prune.L1Unstructured,
                                                amount=sparsity, importance_scores=scores)
            for name, mask in ours.items():
                module, attribute = target(name)
                theirs = getattr(module, f"{attribute}_mask").bool()
                assert torch.equal(theirs, mask), (scheme, sparsity, name)
