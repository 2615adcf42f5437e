"""The test harness of the root conftest.py: the kernel start that retries once."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_kernel_that_does_not_answer_is_started_once_more(tmp_path, monkeypatch):
    harness = root_conftest()
    monkeypatch.setattr(harness, "KERNEL_LOGS", tmp_path)
    calls = []

    def start(**kwargs):
        calls.append(kwargs["stderr"].name)
        kwargs["stderr"].write("slow\n")
        if len(calls) == 1:
            raise RuntimeError("Kernel didn't respond in 180 seconds")
        return "km", "kc"

    with pytest.warns(UserWarning, match="once more"):
        assert harness._start_kernel_retrying(start)(cwd="notebooks") == ("km", "kc")
    assert len(calls) == 2 and Path(calls[0]).parent == tmp_path


def test_a_kernel_that_fails_twice_raises_with_its_stderr(tmp_path, monkeypatch):
    harness = root_conftest()
    monkeypatch.setattr(harness, "KERNEL_LOGS", tmp_path)

    def start(**kwargs):
        kwargs["stderr"].write("ImportError: no module named zmq\n")
        kwargs["stderr"].flush()
        raise RuntimeError("Kernel didn't respond in 180 seconds")

    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="twice(.|\n)*no module named zmq"):
        harness._start_kernel_retrying(start)()


def test_the_kernels_of_a_test_run_keep_their_history_in_memory():
    ipython_dir = Path(os.environ["IPYTHONDIR"])
    assert ipython_dir.name.startswith("nlprune-ipython-")
    config = (ipython_dir / "profile_default" / "ipython_kernel_config.py").read_text()
    assert "hist_file = ':memory:'" in config
