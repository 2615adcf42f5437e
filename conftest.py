"""pytest settings shared by the unit tests and the notebook checks (nbval).

nbval waits a fixed 5 s for each output message of a cell after the kernel has replied. On a
laptop that is busy with something else, a kernel's output thread can be late by more than
that although nothing is wrong, and the cell fails. The course sets the wait on purpose, here,
instead of relying on an idle machine; the other nbval limits are set in the Makefile.
"""

NBVAL_OUTPUT_TIMEOUT = 120  # seconds nbval waits for each output message of a cell


def pytest_collection_modifyitems(config, items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT
