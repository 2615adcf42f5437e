"""nlprune.measure: counts, sizes, latency (with a fake clock), seeds, tables and text degradation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from nlprune import measure


def test_counts_and_sparsity_table():
    m = nn.Linear(4, 3)
    with torch.no_grad():
        m.weight[0].zero_()
    assert measure.count_parameters(m) == 15
    assert measure.count_nonzero(m) == 15 - 4 - int((m.bias == 0).sum())
    table = measure.sparsity_table(m, ["weight"]).set_index("tensor")
    assert table.loc["weight", "zeros"] == 4 and table.loc["total", "sparsity"] == pytest.approx(4 / 12)
    with pytest.raises(ValueError):
        measure.sparsity_table(m, ["nope"])


def test_size_on_disk_compresses_zeros():
    m = nn.Linear(200, 200)
    dense = measure.size_on_disk(m)
    with torch.no_grad():
        m.weight.mul_(torch.rand_like(m.weight) > 0.9)
    sparse = measure.size_on_disk(m)
    assert abs(sparse["dense"] - dense["dense"]) < 64  # zeros cost the same uncompressed
    assert sparse["compressed"] < 0.4 * dense["compressed"]


class FakeClock:
    """Stands in for ``time.perf_counter``: each timed call of ``fn`` lasts the next of ``durations``
    seconds, and ``fn`` records whether it ran between the two readings of a timing."""

    def __init__(self, durations):
        self.durations, self.now, self.readings, self.timing = list(durations), 0.0, 0, False

    def __call__(self):
        if self.timing:  # the reading after fn: the call took the next duration
            self.now += self.durations.pop(0)
        self.timing = not self.timing
        self.readings += 1
        return self.now


@pytest.mark.parametrize("durations, median", [([5.0, 1.0, 3.0, 2.0, 4.0], 3.0), ([1.0, 4.0, 2.0, 3.0], 2.5)])
def test_median_latency_is_the_median_of_the_timed_calls(monkeypatch, durations, median):
    clock = FakeClock(durations)
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    calls = []
    seconds = measure.median_latency(lambda: calls.append((clock.timing, torch.is_inference_mode_enabled())),
                                     repeats=len(durations), warmup=2)
    assert seconds == median
    assert clock.readings == 2 * len(durations) and not clock.durations  # warm-up calls are not timed
    assert calls == [(False, True)] * 2 + [(True, True)] * len(durations)  # in inference mode


def test_median_latency_checks_its_arguments():
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        measure.median_latency(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup must be an integer >= 0"):
        measure.median_latency(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="threads must be None or an integer >= 1"):
        measure.median_latency(lambda: None, threads=0)
    with pytest.raises(TypeError, match="repeats must be an integer"):
        measure.median_latency(lambda: None, repeats=2.5)
    with pytest.raises(TypeError, match="warmup must be an integer"):
        measure.median_latency(lambda: None, warmup=1.0)
    with pytest.raises(TypeError, match="threads must be an integer"):
        measure.median_latency(lambda: None, threads=1.5)
    assert measure.median_latency(lambda: None, repeats=np.int64(2), warmup=np.int64(0)) >= 0


def test_median_latency_sets_and_restores_threads():
    torch.set_num_threads(2)
    seen = []
    measure.median_latency(lambda: seen.append(torch.get_num_threads()), repeats=2, warmup=0, threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == 2

    def fails():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure.median_latency(fails, threads=1)
    assert torch.get_num_threads() == 2  # restored on the error path too


def test_check_timing_prints_a_note_or_raises_when_strict(monkeypatch, capsys):
    monkeypatch.delenv("NLPRUNE_STRICT_TIMING", raising=False)
    measure.check_timing(True, "fast")
    assert capsys.readouterr().out == ""
    measure.check_timing(False, "fast")
    assert '"fast" does not hold' in capsys.readouterr().out
    monkeypatch.setenv("NLPRUNE_STRICT_TIMING", "1")
    measure.check_timing(np.float64(2.0) > 1.7, "fast")  # NumPy's bool: no error
    with pytest.raises(AssertionError, match="fast"):
        measure.check_timing(False, "fast")
    with pytest.raises(TypeError, match="holds"):
        measure.check_timing(1.7, "fast")
    with pytest.raises(TypeError, match="claim"):
        measure.check_timing(True, 3)


def test_seed_summary_groups_and_measures_spread():
    import pandas as pd

    runs = pd.DataFrame({"schedule": ["g", "g", "g", "o", "o", "o"], "sparsity": [0.9] * 6,
                         "accuracy": [0.76, 0.75, 0.77, 0.70, 0.73, 0.71]})
    table = measure.seed_summary(runs, ["schedule", "sparsity"], "accuracy")
    assert table.loc[("g", 0.9), "mean"] == pytest.approx(0.76)
    assert table.loc[("o", 0.9), "sd"] == pytest.approx(0.0152753, rel=1e-4)  # sample sd (n - 1)
    assert table.loc[("o", 0.9), "min"] == 0.70 and table.loc[("g", 0.9), "max"] == 0.77
    assert list(table["runs"]) == [3, 3]
    assert list(table.index.get_level_values(0)) == ["g", "o"]  # order of first appearance
    with pytest.raises(ValueError, match="acc"):
        measure.seed_summary(runs, "schedule", "acc")
    with pytest.raises(TypeError, match="runs"):
        measure.seed_summary(runs.to_dict(), "schedule", "accuracy")


def test_clearly_above_needs_ranges_that_do_not_overlap():
    assert measure.clearly_above([0.76, 0.75], [0.74, 0.70])
    assert not measure.clearly_above([0.76, 0.75], [0.75, 0.70])  # a tie at the edge is no order
    assert not measure.clearly_above([0.70], [0.80])
    with pytest.raises(ValueError, match="at least one"):
        measure.clearly_above([], [0.5])


def test_results_table_measures_every_model():
    torch.manual_seed(0)
    dense, pruned = nn.Linear(50, 50), nn.Linear(50, 50)
    with torch.no_grad():
        pruned.weight[:, 25:] = 0
    calls = []
    table = measure.results_table({"dense": dense, "pruned": pruned},
                                  lambda m: calls.append(m) or m(torch.ones(1, 50)),
                                  {"dense": 0.9, "pruned": 0.8}, metric_name="exact match", repeats=4)
    assert list(table.index) == ["dense", "pruned"]
    assert table.loc["dense", "nonzeros"] == 2550 and table.loc["pruned", "nonzeros"] == 2550 - 1250
    assert (table["parameters"] == 2550).all()
    assert table.loc["pruned", "gzip (KB)"] < table.loc["dense", "gzip (KB)"]
    assert table.loc["pruned", "exact match"] == 0.8 and (table["latency (ms)"] > 0).all()
    assert len(calls) == 2 * (4 + 3)  # repeats + warm-up calls per model
    with pytest.raises(ValueError, match="metric must have the names"):
        measure.results_table({"dense": dense}, lambda m: m, {"other": 1.0})
    with pytest.raises(ValueError, match="models is empty"):
        measure.results_table({}, lambda m: m, {})


def test_text_degradation_measures():
    scores = measure.text_degradation("the king the king the king <unk>".split(),
                                      "long live the king".split(), n=2)
    assert scores["repeated n-grams"] == 5 / 6  # "the king" x3 and "king the" x2 of 6 bigrams
    assert scores["distinct words"] == 3 / 7 and scores["unknown"] == 1 / 7
    assert scores["copied n-grams"] == 3 / 6  # only "the king" occurs in the training text
    # 6 bigrams, of which 3 distinct: "the king", "king the", "king <unk>"
    assert scores["distinct bigrams"] == 3 / 6
    # "a b c b a": 4 bigrams, all distinct, though only 3 of the 5 words are
    assert measure.text_degradation("a b c b a".split(), ["a"], n=2)["distinct bigrams"] == 1.0
    assert math.isnan(measure.text_degradation(["a"], ["a"], n=1)["distinct bigrams"])
    with pytest.raises(ValueError, match="at least n=3"):
        measure.text_degradation(["a", "b"], ["a"], n=3)


def test_text_degradation_blames_n():
    with pytest.raises(ValueError, match="^n must be an integer >= 1, got 0"):
        measure.text_degradation(["a", "b"], ["a"], n=0)
    with pytest.raises(TypeError, match="^n must be an integer"):
        measure.text_degradation(["a", "b"], ["a"], n=1.5)
    assert measure.text_degradation(["a", "b"], ["a"], n=np.int64(1))["copied n-grams"] == 0.5


def test_style_results_formats_every_column():
    table = measure.results_table({"m": nn.Linear(3000, 1)}, lambda m: m(torch.ones(1, 3000)),
                                  {"m": 0.123456}, repeats=2)
    html = measure.style_results(table, digits=3).to_html()
    assert "3,001" in html and "0.123" in html and "0.1235" not in html


def test_paired_comparison_against_a_hand_computed_case():
    # 100 examples: both right on 70, both wrong on 18, A alone right on 10, B alone right on 2
    a = [True] * 70 + [False] * 18 + [True] * 10 + [False] * 2
    b = [True] * 70 + [False] * 18 + [False] * 10 + [True] * 2
    r = measure.paired_comparison(a, torch.tensor(b))
    assert (r["n"], r["a_only"], r["b_only"]) == (100, 10, 2)
    assert r["accuracy_a"] == pytest.approx(0.80) and r["accuracy_b"] == pytest.approx(0.72)
    assert r["difference"] == pytest.approx(0.08)
    # d = +1 on 10 examples, -1 on 2, 0 on 88: mean 0.08, sample variance (12 - 100 * 0.08**2) / 99
    assert r["se_difference"] == pytest.approx(math.sqrt((12 - 100 * 0.08 ** 2) / 99 / 100))
    # McNemar, exact: 2 * P[Binomial(12, 1/2) <= 2] = 2 * (1 + 12 + 66) / 4096
    assert r["p_mcnemar"] == pytest.approx(2 * 79 / 4096)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert r["p_mcnemar"] == pytest.approx(scipy_stats.binomtest(2, 12, 0.5).pvalue)
    # pairing helps: the two models agree on 88 of 100 examples
    assert r["se_difference"] < r["se_unpaired"]


def test_paired_comparison_checks_its_input():
    assert measure.paired_comparison([True, False], [True, False])["p_mcnemar"] == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="equal length"):
        measure.paired_comparison([True, False], [True])
    with pytest.raises(TypeError, match="booleans"):
        measure.paired_comparison([0.5, 1.0], [1.0, 1.0])


def test_paired_t_test_against_the_closed_forms_of_one_and_two_degrees_of_freedom():
    # three seeds: differences 0.02, 0.01, 0.03 -> mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3)
    r = measure.paired_t_test([0.76, 0.75, 0.77], [0.74, 0.74, 0.74])
    t = 0.02 / (0.01 / math.sqrt(3))
    assert r["df"] == 2 and math.isclose(r["t"], t, rel_tol=1e-9)
    assert math.isclose(r["p"], 1 - t / math.sqrt(t * t + 2), rel_tol=1e-9)  # df = 2
    # two seeds: differences 0.03 and 0.01 -> t = 0.02 / (sqrt(2) * 0.01 / sqrt 2) = 2, Cauchy
    r = measure.paired_t_test([0.78, 0.75], [0.75, 0.74])
    assert r["df"] == 1 and math.isclose(r["t"], 2.0, rel_tol=1e-9)
    assert math.isclose(r["p"], 1 - 2 / math.pi * math.atan(2.0), rel_tol=1e-9)


def test_paired_t_test_p_falls_with_t_and_with_more_seeds():
    ps = [measure._student_two_sided(2.0, df) for df in range(1, 30)]
    assert all(later < earlier for earlier, later in zip(ps, ps[1:]))
    assert abs(ps[-1] - 0.0455) < 0.01  # towards the normal's 2 P(Z > 2) = 0.0455
    assert measure._student_two_sided(0.0, 4) == 1.0


def test_paired_t_test_edge_cases_and_bad_input():
    assert measure.paired_t_test([0.7, 0.8], [0.7, 0.8])["p"] == 1.0  # no difference at all
    same_gain = measure.paired_t_test([0.75, 0.5], [0.5, 0.25])  # exact in binary
    assert same_gain["p"] == 0.0 and same_gain["t"] == math.inf
    with pytest.raises(ValueError, match="same number of results, at least two"):
        measure.paired_t_test([0.7], [0.6])
    with pytest.raises(ValueError, match="same number of results"):
        measure.paired_t_test([0.7, 0.8, 0.9], [0.6, 0.7])
