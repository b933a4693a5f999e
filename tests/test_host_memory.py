"""reuse_freed_host_memory: a freed 64 MB tensor's pages are reused, not faulted in again."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import importlib.util, json, resource, sys, torch
spec = importlib.util.spec_from_file_location("host_memory", sys.argv[2])  # without the package's imports
host_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_memory)
applied = host_memory.reuse_freed_host_memory() if sys.argv[1] == "on" else None

def faults_in_steady_state():
    def cycle():  # 64 MB (above glibc's 32 MB mmap limit), allocated, written and freed, like a training step's activations
        x = torch.ones(16 * 2**20)
        del x

    for _ in range(16):  # glibc settles its heap within a few rounds (measured: at most ~8)
        cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        cycle()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(json.dumps({"applied": applied, "faults": faults_in_steady_state()}))
"""


def _probe(setting: str) -> dict:
    module = Path(__file__).resolve().parents[1] / "sam3dlib" / "utils" / "host_memory.py"
    out = subprocess.run([sys.executable, "-c", _PROBE, setting, str(module)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_tensor_memory_is_reused_without_page_faults():
    default, reused = _probe("off"), _probe("on")
    assert reused["applied"] is True
    assert default["faults"] > 4 * 15_000  # every round faults its 64 MB (16384 pages of 4 KiB) in again
    assert reused["faults"] < 1_000
