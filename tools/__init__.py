"""The course's build and classroom tools, run from the repository root as modules.

- ``python -m tools.bench``: run time of every notebook, cold and warm (``make bench``)
- ``python -m tools.check_browser``: every page of the built book in headless Chromium (``make check-browser``)
- ``python -m tools.labs build|grade``: the student labs and their grading (``make labs``, ``make grade``)
- ``python -m tools.drop_startup_noise``: drop start-up messages from stored notebooks (``make execute``)
- ``tools.toc``: the pages and notebooks of ``_toc.yml`` in reading order
"""
