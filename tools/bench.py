"""Measure how long every chapter notebook takes to run, cold and warm (``make bench``).

Two passes over the notebooks of the table of contents, in reading order, each notebook in a
fresh kernel:

* **cold**: the first pass starts from an *empty* model cache, as a fresh clone does: each
  notebook trains the base models that no earlier chapter has trained (chapter 1 the review
  classifier, chapter 6 the language model), exactly what a reader working through the course
  waits for;
* **warm**: the second pass, with the cache the first pass filled (every later run).

Each time includes starting the kernel. The notebooks are executed in memory and never written
back. The table (notebook, seconds cold, seconds warm, budget, within budget) and the machine it
ran on are printed and written to ``book/_generated/bench.md``, which the book's
reproducibility appendix includes. A notebook is within budget when both of its runs take at
most 180 s; the course is within budget when the cold pass takes at most 20 minutes. The exit
status is 1 when a budget is exceeded: this is a benchmark, and the test suite never looks at
the clock. The notebooks run with ``NLPRUNE_STRICT_TIMING=1``, so the text's claims about
measured time (:func:`nlprune.measure.check_timing`) must hold on this machine too: a notebook
whose claim fails stops the benchmark with its error.

Usage: ``python -m tools.bench [notebook ...]`` (default: every notebook in ``_toc.yml``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from .toc import toc_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_BUDGET = 180.0  # seconds per notebook on 2 CPU cores
COURSE_BUDGET = 20 * 60.0  # seconds for the whole course
OUTPUT = ROOT / "book" / "_generated" / "bench.md"


def run(path: Path, cache: str) -> float:
    """Seconds to execute ``path`` top to bottom in a new kernel with ``NLPRUNE_CACHE=cache``."""
    os.environ["NLPRUNE_CACHE"] = cache  # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> list[str]:
    packages = ["torch", "tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy", "nbclient"]
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    return [f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- CPU: {cpu_model()}, {os.cpu_count()} cores; {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}; {versions}",
            f"- GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}, "
            f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(default)')}"]


def main(argv: list[str]) -> int:
    notebooks = [Path(a).resolve() for a in argv] or toc_notebooks()
    os.environ.setdefault("NLPRUNE_PROGRESS", "0")  # no progress-bar widgets in the kernels
    os.environ["NLPRUNE_STRICT_TIMING"] = "1"  # the text's timing claims must hold here
    with tempfile.TemporaryDirectory(prefix="nlprune-bench-") as cache:
        cold = {}
        for path in notebooks:
            cold[path] = run(path, cache)
            print(f"{path.name}: cold {cold[path]:.0f} s", flush=True)
        warm = {}
        for path in notebooks:
            warm[path] = run(path, cache)
            print(f"{path.name}: warm {warm[path]:.0f} s", flush=True)
    rows = [(p.name, cold[p], warm[p], max(cold[p], warm[p]) <= NOTEBOOK_BUDGET) for p in notebooks]
    total_cold, total_warm = sum(r[1] for r in rows), sum(r[2] for r in rows)
    total_ok = total_cold <= COURSE_BUDGET and all(r[3] for r in rows)  # the course: first pass
    lines = ["| notebook | seconds cold | seconds warm | budget (s) | within budget |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {name} | {cold:.0f} | {warm:.0f} | {NOTEBOOK_BUDGET:.0f} | {'yes' if ok else 'NO'} |"
              for name, cold, warm, ok in rows]
    lines.append(f"| **total** | {total_cold:.0f} | {total_warm:.0f} | {COURSE_BUDGET:.0f} | "
                 f"{'yes' if total_ok else 'NO'} |")
    report = "\n".join(lines + ["", "Measured on:", "", *machine()]) + "\n"
    print()
    print(report)
    if len(argv) == 0:  # only a full run replaces the table the book shows
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(report)
        print(f"written to {OUTPUT.relative_to(ROOT)}")
    return 0 if total_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
