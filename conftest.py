"""pytest settings shared by the unit tests and the notebook checks (nbval).

nbval waits a fixed 5 s for each output message of a cell after the kernel has replied. On a
laptop that is busy with something else, a kernel's output thread can be late by more than
that although nothing is wrong, and the cell fails. The course sets the wait on purpose, here,
instead of relying on an idle machine; the other nbval limits are set in the Makefile.

`make notebooks` runs two notebooks at once, and hands the next notebook to whichever worker
is free (pytest-xdist, ``--dist loadfile --no-loadscope-reorder``). Started by number of cells
(xdist's default order), the run ended with one worker idle for minutes while the other ran a
long notebook: the notebooks took 1,695 s on 2 cores. So they start longest first (the classic
longest-processing-time rule), by the run times below; a notebook not listed starts first.
Measured on a fresh clone: 1,642 s, so the order gains under a minute; running two notebooks at
once is what counts (2,220 s one at a time on two threads).

`make test` puts the unit tests in the same pool, after the notebooks, so that they fill the
time in which one worker would wait for the other. Measured on a fresh clone: unit tests and
notebooks together 1,572 s (1,835 s and 1,862 s in two slower runs), against 163 s + 1,642 s
one after the other. Either way the two workers were busy to within a few seconds of the end:
only less work would make the run shorter. Less work came with nlprune 0.2, whose RNN classifier
trains twice as fast: 1,172 s and 1,312 s for both in two runs on a fresh clone. At the end of a run, the seconds each
notebook and each slow test file took are printed (in that run, on one thread and with an empty
model cache, the notebooks took 67-204 s each: sections 8.4 and 7.3 the longest).
"""

from collections import defaultdict
from pathlib import Path

NBVAL_OUTPUT_TIMEOUT = 120  # seconds nbval waits for each output message of a cell

# Seconds per notebook, one kernel on two threads (the re-executions of 2026-11-26 and, for the
# notebooks that train the RNN classifier, of 2026-11-27 with nlprune 0.2), and per slow
# unit-test file; only their order matters.
FILE_SECONDS = {
    "01_what_is_pruning": 69, "02_magnitude_pruning": 91, "02b_schedules_seeds": 77,
    "03_gradient_pruning": 83, "04_l1_l2": 75, "05_cutting": 77, "06_rnn_math": 77,
    "07_1_sentiment": 68, "07_1b_sentiment_keras": 157, "07_2_generation": 63,
    "07_3_translation": 88, "07_4_transformer_heads": 148, "08_1_sparse_vs_dense": 76,
    "08_1b_recipe_95": 93, "08_2_lottery_tickets": 95, "08_3_nm_compression": 50,
    "08_4_movement_pruning": 170, "08_5_distillation": 62, "08_6_llm_oneshot": 150,
    "test_labs": 107,
}
UNLISTED_NOTEBOOK_SECONDS = 1000  # a new notebook: run it early rather than be the last one waited for
SHOWN_SECONDS = 20  # files that took longer are listed at the end of the run


def expected_seconds(item) -> int:
    """Expected run time of the file a test belongs to: a notebook (nbval cell) not listed counts
    as long, any other file not listed as 0."""
    unlisted = UNLISTED_NOTEBOOK_SECONDS if hasattr(item, "output_timeout") else 0
    return FILE_SECONDS.get(Path(str(item.fspath)).stem, unlisted)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
    # Longest file first; the sort is stable, so each file's tests keep their order.
    items.sort(key=lambda item: -expected_seconds(item))


_seconds_per_file: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    # With xdist this runs in the controller too, for every report a worker sends.
    _seconds_per_file[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    slow = sorted(((s, f) for f, s in _seconds_per_file.items() if s > SHOWN_SECONDS), reverse=True)
    if slow:
        terminalreporter.write_sep("-", f"files that took over {SHOWN_SECONDS} s (sum of their tests)")
        for seconds, path in slow:
            terminalreporter.write_line(f"{seconds:7.0f} s  {path}")
