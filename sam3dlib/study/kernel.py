"""Which Jupyter kernel executes a reproduction's notebook, checked before any work.

By default the notebook runs in a kernel that *is* the running interpreter: a kernel spec for
``sys.executable`` is written on the fly into a private folder put first on ``JUPYTER_PATH``
for the execution (papermill finds kernels by name there), with ``PYTHONPATH`` naming the folder
this sam3dlib is imported from. The kernel named ``python3`` in the user's Jupyter paths may be
another Python (an HPC module, a user's own kernel list) that lacks sam3dlib; it is not used
unless asked for. ``--kernel NAME`` runs another kernel; it is checked first: its Python must
import sam3dlib, else one line names the kernel, its Python and the error.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sam3dlib.utils.errors import UserInputError

#: the seconds a kernel's Python may take to import sam3dlib in the check
IMPORT_CHECK_TIMEOUT_S = 120


class KernelError(UserInputError, RuntimeError):
    """The Jupyter kernel asked for does not exist or cannot import sam3dlib (names it and its Python)."""


def _package_root() -> str:
    """The folder this sam3dlib is imported from (the parent of the ``sam3dlib`` package)."""
    return str(Path(__file__).resolve().parents[2])


def this_python_kernel_name() -> str:
    """The name of the kernel spec for the running interpreter (one per interpreter and checkout)."""
    digest = hashlib.sha256(f"{sys.executable}\0{_package_root()}".encode()).hexdigest()[:10]
    return f"sam3dlib-{digest}"


def _this_python_spec() -> dict:
    env_path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH", "")) if p)
    return {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"sam3dlib ({sys.executable})", "language": "python",
            "env": {"PYTHONPATH": env_path}, "metadata": {"debugger": False}}


@contextlib.contextmanager
def kernel_for(name: str | None) -> Iterator[str]:
    """``with kernel_for(None) as kernel_name:`` the kernel to execute with: ``name`` as given
    (check it first with :func:`check_kernel`), or (None) a kernel spec of the running
    interpreter, findable by its name inside the block."""
    if name is not None:
        yield name
        return
    with tempfile.TemporaryDirectory(prefix="sam3dlib-kernel-") as tmp:
        kernel_name = this_python_kernel_name()
        spec_dir = Path(tmp) / "kernels" / kernel_name
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps(_this_python_spec(), indent=1))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (tmp, old) if p)
        try:
            yield kernel_name
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


def check_kernel(name: str) -> str:
    """Check that the kernel spec ``name`` exists and that its Python imports sam3dlib.

    Returns:
        The kernel's Python (its ``argv[0]``).

    Raises:
        KernelError: one line naming the kernel, its Python and what went wrong.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
    except NoSuchKernel:
        known = ", ".join(sorted(ksm.find_kernel_specs())) or "none"
        raise KernelError(f"--kernel {name}: no Jupyter kernel of that name (installed: {known})") from None
    python = spec.argv[0] if spec.argv else "?"
    env = {**os.environ, **(spec.env or {})}
    try:
        done = subprocess.run([python, "-c", "import sam3dlib"], env=env, capture_output=True, text=True,
                              timeout=IMPORT_CHECK_TIMEOUT_S, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(f"--kernel {name}: its Python {python} cannot be run ({exc})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise KernelError(f"--kernel {name}: its Python {python} cannot import sam3dlib ({last}); install sam3dlib "
                          f"there, or leave --kernel out to run the notebook with this Python ({sys.executable})")
    return python


__all__ = ["KernelError", "check_kernel", "kernel_for", "this_python_kernel_name"]
