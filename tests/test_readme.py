"""The README's Python example runs as written (on the session's smoke run and one of its scans)."""
from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_readme_python_example_runs(smoke_run, synapse_store, tmp_path, one_thread):
    from sam3dlib.data.store import PreparedDataset

    code = python_example()
    for name in ("runs/my_run", "scan.nii.gz", "seg.nii.gz"):  # the example's placeholders, each once
        assert code.count(f'"{name}"') == 1, name
    case = PreparedDataset(synapse_store).case_ids[0]
    scan = PreparedDataset(synapse_store).properties(case)["image_files"][0]
    out = tmp_path / "seg.nii.gz"
    code = (code.replace('"runs/my_run"', repr(str(smoke_run["run"]))).replace('"scan.nii.gz"', repr(str(scan)))
            .replace('"seg.nii.gz"', repr(str(out))))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    assert nib.load(out).shape == nib.load(scan).shape
    assert namespace["model"].decoder is not None
