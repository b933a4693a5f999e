"""``sam3d``: the project's error types become one line (exit 2); anything else keeps its traceback."""
from __future__ import annotations

import errno

import pytest

from sam3dlib.cli import main
from sam3dlib.data.io import DataFileError
from sam3dlib.data.store import StoreError
from sam3dlib.inference.predictor import RunError
from sam3dlib.modeling.weights_file import CheckpointError
from sam3dlib.study.notebook_params import ParameterError
from sam3dlib.utils.errors import ConfigError, UnknownCaseError, UserInputError


def _failing_demo(monkeypatch, exc: BaseException) -> None:
    """``sam3d demo`` raising ``exc`` (the command's body is replaced)."""
    import sam3dlib.cli.demo as demo

    def run(args):
        raise exc

    monkeypatch.setattr(demo, "run", run)


@pytest.mark.parametrize("exc", [
    DataFileError("scan.nii.gz: not a NIfTI file"),
    CheckpointError("sam.pth: not a SAM checkpoint"),
    ConfigError("setting 'lr' must be a number"),
    ParameterError("notebook parameter 'seed' must be an integer"),
    StoreError("data/x: not a prepared store"),
    RunError("runs/x: no checkpoint"),
    UnknownCaseError("case 'img0099' is not in the store data/synapse"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "data/missing.nii.gz"),
], ids=lambda e: type(e).__name__)
def test_project_errors_are_one_line(monkeypatch, capsys, exc):
    _failing_demo(monkeypatch, exc)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam3d demo: error: ") and err.count("\n") == 1 and "Traceback" not in err
    expected = exc.filename if isinstance(exc, OSError) and exc.errno else exc.args[0]
    assert str(expected) in err


@pytest.mark.parametrize("exc", [
    ValueError("operands could not be broadcast together"),
    KeyError("decoder.weight"),
    TypeError("unsupported operand type(s)"),
    FileNotFoundError("run_experiment finished without writing summary.csv"),  # our own code's message: a bug
], ids=lambda e: type(e).__name__)
def test_other_errors_keep_their_traceback(monkeypatch, exc):
    _failing_demo(monkeypatch, exc)
    with pytest.raises(type(exc)):
        main(["demo"])


def test_project_errors_keep_their_builtin_types():
    """Callers that catch the built-in types keep working."""
    assert issubclass(DataFileError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(StoreError, FileNotFoundError) and issubclass(RunError, FileNotFoundError)
    assert issubclass(UnknownCaseError, KeyError) and issubclass(ConfigError, ValueError)
    for t in (DataFileError, CheckpointError, StoreError, RunError, UnknownCaseError, ConfigError, ParameterError):
        assert issubclass(t, UserInputError)


def test_bad_set_value_is_one_line(capsys, tmp_path):
    assert main(["train", "table1_synapse", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--set", "lr=fast"]) == 2
    err = capsys.readouterr().err
    assert "setting 'lr' for table1_synapse must be a number" in err and "Traceback" not in err


@pytest.mark.parametrize("command", [["predict", "--run", "r", "-i", "x.nii.gz", "-o", "y.nii.gz"], ["reproduce", "1"]])
def test_device_option_is_checked_by_the_one_rule(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([*command, "--device", "cuda:x"])
    assert info.value.code == 2 and "unknown device 'cuda:x'; use auto, cpu, cuda or cuda:N" in capsys.readouterr().err
