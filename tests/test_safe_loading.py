"""Safe loading: the package never runs code from a data or checkpoint file.

* every ``torch.load`` call in the package passes ``weights_only=True`` (a literal);
* no ``eval``/``exec``/``compile`` of strings, and no ``pickle.load(s)``/``pickle.Unpickler``
  outside ``sam3dlib/data/safe_pickle.py`` (the allow-list unpickler for nnU-Net ``.pkl``);
* no ``np.load(..., allow_pickle=True)``; ``yaml.load`` without a safe loader is refused too;
* a malicious checkpoint (a pickle that would run a command) is refused by every loader and
  the command never runs.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "sam3dlib"
SAFE_PICKLE = PACKAGE / "data" / "safe_pickle.py"


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return files


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``torch.load``; ``load`` for a bare name; '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_every_torch_load_is_weights_only():
    found, bad = 0, []
    for path in _sources():
        for call, name in _calls(path):
            if name == "torch.load" or name.endswith(".torch.load"):
                found += 1
                value = _kw(call, "weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}")
        text = path.read_text()
        if "from torch import load" in text or "torch.load as" in text:
            bad.append(f"{path.relative_to(PACKAGE.parent)}: imports torch.load under another name")
    assert found >= 2, "expected the checkpoint readers' torch.load calls"
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_eval_exec_or_raw_pickle():
    bad = []
    for path in _sources():
        rel = f"{path.relative_to(PACKAGE.parent)}"
        for call, name in _calls(path):
            where = f"{rel}:{call.lineno} {name}("
            if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec"):
                bad.append(where)
            if name in ("__import__", "importlib.import_module") and not (
                    call.args and isinstance(call.args[0], (ast.Constant, ast.JoinedStr))):
                bad.append(where + "a computed module name)")
            if path != SAFE_PICKLE and name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load",
                                                "dill.load", "joblib.load", "marshal.load", "marshal.loads",
                                                "shelve.open"):
                bad.append(where)
            if name in ("np.load", "numpy.load"):
                value = _kw(call, "allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    bad.append(where + "allow_pickle=...)")
            if name == "yaml.load" and _kw(call, "Loader") is None:
                bad.append(where)
        if path != SAFE_PICKLE and ("from pickle import load" in path.read_text()):
            bad.append(f"{rel}: imports pickle.load")
    assert not bad, f"unsafe loading calls: {bad}"


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "decoder": {}, "payload": _Exploit(marker)}, path)
    return path, marker


def test_malicious_checkpoints_are_refused(malicious, tmp_path):
    from sam3dlib.modeling.run_checkpoint import load_checkpoint
    from sam3dlib.modeling.weights_file import CheckpointError, read_state_dict

    path, marker = malicious
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_state_dict(path)
    assert not marker.exists(), "the pickle's command ran"


def test_malicious_run_checkpoint_refused_by_predict(malicious, tmp_path, capsys):
    """``sam3d predict`` with a run whose best.pt is a code-running pickle: an error, no code run."""
    import shutil

    from sam3dlib.cli import main

    path, marker = malicious
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    from sam3dlib.study.registry import get_config

    (run / "config.json").write_text(get_config("table1_synapse", "smoke").to_json())
    (run / "dataset_meta.json").write_text("{}")
    (run / "provenance.json").write_text("{}")
    shutil.copy(path, run / "checkpoints" / "best.pt")
    image = tmp_path / "x.nii.gz"
    image.write_bytes(b"")  # never read: the run is refused first
    assert main(["predict", "--run", str(run), "-i", str(image), "-o", str(tmp_path / "o.nii.gz"),
                 "--device", "cpu"]) == 2
    assert "best.pt" in capsys.readouterr().err
    assert not marker.exists()
