"""pytest settings shared by the unit tests and the notebook checks (nbval).

* nbval waits a fixed 5 s for each output message of a cell after the kernel has replied; on a
  busy laptop a kernel's output thread can be later than that with nothing wrong, so the course
  waits two minutes (the other nbval limits are set in the Makefile).
* The test pool runs two files at once and hands the next file to whichever worker is free
  (pytest-xdist, ``--dist loadfile --no-loadscope-reorder``). Files start longest first (the
  longest-processing-time rule), so that no worker is left alone with a long notebook at the
  end. The seconds are those a run recorded in ``tests/durations.json`` (``make durations``, or
  ``pytest --store-durations``); a notebook not in it starts first, any other file last. Only the
  order uses them: no test looks at the clock. One exception: chapter 2 starts first and section
  2b third, so that 2b finds the seed-0 runs chapter 2 stored in the cache instead of making them
  again (about 70 s). (xdist hands a worker its next file when its current one is nearly done.)
* At the end of a run, the files that took over 20 s are listed (``--durations`` lists tests).
* Each test process gives its kernels a fresh IPython directory whose history is kept in memory:
  two kernels starting at once never share ``~/.ipython``'s history database, and a reader's own
  profile (startup files, extensions) cannot change what a notebook prints.
* A kernel that does not answer within ``--nbval-kernel-startup-timeout`` is shut down and started
  once more, with a warning; its stderr (which nbval discards) is kept in
  ``.cache/kernels/<notebook>.stderr`` and printed when the second start fails too. Starting a
  kernel is the harness, not the course: a retry tests nothing less.

Being at the root, this file also puts the root on ``sys.path`` (pytest's default "prepend"
import mode), which is how the tests import ``tools``. The measurements behind these choices
are in the book's reproducibility appendix.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
DURATIONS = ROOT / "tests" / "durations.json"  # {file relative to the root: seconds}, committed
NBVAL_OUTPUT_TIMEOUT = 120  # seconds nbval waits for each output message of a cell
SHOWN_SECONDS = 20  # files that took longer are listed at the end of the run
# A notebook that reuses runs another one stored (cache.load_results) and makes them itself when
# they are not there yet: in the pool it runs after the other, on the same worker.
READS_RESULTS_OF = {"notebooks/02b_schedules_seeds.ipynb": "notebooks/02_magnitude_pruning.ipynb"}


KERNEL_LOGS = ROOT / ".cache" / "kernels"  # the stderr of each notebook's kernel
KERNEL_CONFIG = "c.HistoryManager.hist_file = ':memory:'\n"


_current_file = {"name": "kernel"}  # the notebook whose kernel starts next


def pytest_configure(config):
    ipython_dir = Path(tempfile.mkdtemp(prefix="nlprune-ipython-"))
    config.add_cleanup(lambda: shutil.rmtree(ipython_dir, ignore_errors=True))
    (ipython_dir / "profile_default").mkdir()
    (ipython_dir / "profile_default" / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    os.environ["IPYTHONDIR"] = str(ipython_dir)  # the kernels this process starts inherit it
    try:
        import nbval.kernel
    except ImportError:  # the unit tests alone do not need nbval
        return
    if not getattr(nbval.kernel.start_new_kernel, "retries_once", False):
        nbval.kernel.start_new_kernel = _start_kernel_retrying(nbval.kernel.start_new_kernel)


def _start_kernel_retrying(start):
    """nbval's ``start_new_kernel``, keeping the kernel's stderr and trying a second time."""

    def start_new_kernel(*args, **kwargs):
        KERNEL_LOGS.mkdir(parents=True, exist_ok=True)
        log = KERNEL_LOGS / f"{_current_file['name']}.stderr"
        for attempt in (1, 2):
            with open(log, "w") as stderr:
                kwargs["stderr"] = stderr
                try:
                    return start(*args, **kwargs)
                except RuntimeError as error:
                    if attempt == 2:
                        raise RuntimeError(f"{error}, twice; the kernel's stderr:\n"
                                           f"{log.read_text()[-4000:]}") from error
                    warnings.warn(f"{error}; starting the kernel once more (stderr in {log})")

    start_new_kernel.retries_once = True
    return start_new_kernel


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before the runner sets up the item's notebook, which starts its kernel
    _current_file["name"] = Path(file_of(item.nodeid)).stem


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help="record the seconds each file's tests took in tests/durations.json "
                          "(files that failed or did not run keep their old entry)")


def recorded_seconds() -> dict[str, float]:
    """``tests/durations.json``, or nothing where it is missing."""
    try:
        return json.loads(DURATIONS.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as error:
        raise pytest.UsageError(f"{DURATIONS} is not valid JSON ({error}); fix it or delete it")


def file_of(nodeid: str) -> str:
    """The file of a test, relative to the root: ``notebooks/01_what_is_pruning.ipynb``."""
    return nodeid.split("::")[0]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
    seconds = recorded_seconds()

    def expected(item) -> float:
        unknown = math.inf if hasattr(item, "output_timeout") else 0.0  # a new notebook: run it early
        return seconds.get(file_of(item.nodeid), unknown)

    # Longest file first; the sort is stable, so each file's tests keep their order.
    items.sort(key=lambda item: -expected(item))
    files = list(dict.fromkeys(file_of(item.nodeid) for item in items))
    for reader, writer in READS_RESULTS_OF.items():
        if reader in files and writer in files:
            # the writer first, the reader third: the second file goes to the other worker,
            # and the worker that ran the writer takes the reader next
            files.remove(reader)
            files.remove(writer)
            files[:0] = [writer]
            files.insert(min(2, len(files)), reader)
    rank = {name: i for i, name in enumerate(files)}
    items.sort(key=lambda item: rank[file_of(item.nodeid)])


_seconds_per_file: defaultdict[str, float] = defaultdict(float)
_failed_files: set[str] = set()


def pytest_runtest_logreport(report):
    # With xdist this runs in the controller too, for every report a worker sends.
    _seconds_per_file[file_of(report.nodeid)] += report.duration
    if report.failed:
        _failed_files.add(file_of(report.nodeid))


def pytest_sessionfinish(session):
    if not session.config.getoption("store_durations") or hasattr(session.config, "workerinput"):
        return  # only asked for, and only by the controller of an xdist run
    measured = {f: round(s) for f, s in _seconds_per_file.items() if f not in _failed_files}
    seconds = {f: s for f, s in {**recorded_seconds(), **measured}.items() if (ROOT / f).exists()}
    DURATIONS.write_text(json.dumps(dict(sorted(seconds.items())), indent=1) + "\n")


def pytest_terminal_summary(terminalreporter):
    slow = sorted(((s, f) for f, s in _seconds_per_file.items() if s > SHOWN_SECONDS), reverse=True)
    if slow:
        terminalreporter.write_sep("-", f"files that took over {SHOWN_SECONDS} s (sum of their tests)")
        for seconds, path in slow:
            terminalreporter.write_line(f"{seconds:7.0f} s  {path}")
    if terminalreporter.config.getoption("store_durations"):
        terminalreporter.write_line(f"seconds per file recorded in {DURATIONS.relative_to(ROOT)}")
