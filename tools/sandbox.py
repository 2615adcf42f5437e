"""Execute one student's notebook in a sandbox: the runner that :mod:`tools.labs` starts for
every submission it grades.

    unshare -rnmpf --kill-child --mount-proc PYTHON tools/sandbox.py SPEC_JSON

The runner is started by ``unshare`` in new user, network, mount and PID namespaces, as the
namespace's first process, and then:

1. brings up the loopback interface of the new network namespace (the kernel and the runner talk
   over it; there is no other interface, so no network);
2. covers every folder of ``spec["hide"]`` with an empty in-memory file system (the course with
   its solutions, the gradebook, the other students' submissions, the home folder, ``/tmp``),
   puts back the folders of ``spec["keep"]`` (the Python environment and ``nlprune``'s source)
   and the scratch folder that holds only this notebook, then makes every file system read-only
   except the scratch folder and the empty ones;
3. makes itself impossible to trace or inspect by another process (``PR_SET_DUMPABLE``), and
   starts the notebook's kernel through ``setpriv`` with no capabilities at all, so the
   student's code can neither undo a mount nor read or change the runner;
4. executes the notebook with nbgrader's own ``Execute`` preprocessor (errors recorded as
   outputs, a per-cell timeout) and writes the executed notebook, as JSON, to the file
   descriptor ``spec["result_fd"]``, which no child process inherits.

When the runner exits, the PID namespace ends and the kernel dies with every process the
student's code started. Only the standard library, nbformat and nbgrader are used here: this
file is run by path, and the folder it lives in is hidden from the moment the mounts are made.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path

PR_SET_DUMPABLE = 4
# the kernel: no capabilities in any set, and none to be gained by executing a program
NO_PRIVILEGES = ["setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
                 "--ambient-caps=-all"]
KERNEL_NAME = "sandboxed-python3"


def _run(*command: str, **kwargs) -> None:
    done = subprocess.run(list(command), capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"sandbox: {' '.join(command)} failed: {done.stderr.strip()}")


def _mount_points() -> list[str]:
    """Every mount point of this mount namespace, from /proc/self/mountinfo."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # spaces and other special characters appear as octal escapes: \040
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]))
    return points


def confine(hide: list[str], keep: list[str], scratch: str) -> None:
    """Steps 1 and 2 of the module docstring."""
    _run("ip", "link", "set", "lo", "up")
    # an open descriptor of each folder to put back: its path is about to be covered
    kept = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in [*keep, scratch]}
    writable = set()
    for path in sorted(set(hide), key=len):
        if os.path.isdir(path):
            _run("mount", "-t", "tmpfs", "-o", "mode=0755", "hidden", path)
            writable.add(path)
    for path, fd in kept.items():
        os.makedirs(path, exist_ok=True)
        _run("mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{fd}", path, pass_fds=(fd,))
        os.close(fd)
    # read-only everywhere but the scratch folder and the empty file systems just made
    for point in _mount_points():
        if point in writable or point == scratch or point == "/proc" or point.startswith("/proc/"):
            continue
        _run("mount", "-o", "remount,bind,ro", point)


def kernel_spec(scratch: str) -> str:
    """A kernel spec, in the scratch folder, that starts IPython with no privileges; the folder
    to put on JUPYTER_PATH."""
    folder = Path(scratch) / ".jupyter" / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    argv = [*NO_PRIVILEGES, sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (folder / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "Python 3 (sandboxed)", "language": "python"}))
    return str(Path(scratch) / ".jupyter")


def execute(notebook: str, scratch: str, timeout: int) -> dict:
    """Step 4: the notebook executed by nbgrader's Execute preprocessor, as a dict."""
    import nbformat
    from nbgrader.preprocessors import Execute

    nb = nbformat.read(notebook, as_version=4)
    executor = Execute(timeout=timeout, kernel_name=KERNEL_NAME)
    nb, _ = executor.preprocess(nb, {"metadata": {"path": scratch}})
    return dict(nb)


def main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    scratch = spec["scratch"]
    out = os.fdopen(spec["result_fd"], "w")
    os.set_inheritable(out.fileno(), False)
    try:
        confine(spec["hide"], spec["keep"], scratch)
        home = Path(scratch) / ".home"
        home.mkdir(exist_ok=True)
        os.environ.update({
            "HOME": str(home), "TMPDIR": scratch, "JUPYTER_PATH": kernel_spec(scratch),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
            "MPLCONFIGDIR": str(home / "matplotlib"), "JUPYTER_PLATFORM_DIRS": "1"})
        os.environ.pop("NLPRUNE_CACHE", None)
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise RuntimeError("sandbox: prctl(PR_SET_DUMPABLE) failed")
        os.chdir(scratch)
        result = {"notebook": execute(spec["notebook"], scratch, spec["timeout"])}
    except Exception as error:  # the reason goes into the student's row
        result = {"error": f"{type(error).__name__}: {error}"}
    json.dump(result, out)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
