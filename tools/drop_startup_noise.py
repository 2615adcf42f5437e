"""Drop the stderr output of notebook cells tagged ``remove-stderr`` (used by ``make execute``).

TensorFlow prints start-up messages on stderr when it is first imported (absl's "log messages
before InitializeLog", oneDNN and CUDA probes), and so does importing ``transformers``, which
loads torchao (its wheel's optional GPU kernels fail to load on a CPU-only machine, and it
warns about deprecated ``torch.compile`` registrations). The cells where that happens carry the tag
``remove-stderr``, which hides them in the book; this removes them from the stored notebooks
too, so a reader who opens a notebook in Jupyter does not see them either. Nothing else changes.

Usage: ``python -m tools.drop_startup_noise notebook.ipynb [...]``
"""

import sys

import nbformat


def main(paths: list[str]) -> int:
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        dropped = 0
        for cell in nb.cells:
            if cell.cell_type == "code" and "remove-stderr" in cell.metadata.get("tags", []):
                kept = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
                dropped += len(cell.outputs) - len(kept)
                cell.outputs = kept
        if dropped:
            nbformat.write(nb, path)
        print(f"{path}: {dropped} stderr outputs dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
