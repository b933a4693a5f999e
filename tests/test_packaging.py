"""pyproject.toml, requirements.lock, environment.yml and the Makefile agree; the CLI is wired;
the wheel ships the table notebooks."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: the extras `make setup` installs and requirements.lock is resolved for
LOCKED_EXTRAS = ("study", "dev", "lab")


def _lock() -> dict[str, str]:
    """``{canonical name: version}`` of requirements.lock."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, f"Makefile has no {name}"
    return m.group(1).strip()


def test_requires_python_allows_what_the_tests_use():
    """tomllib (used here) is 3.11+; compared as versions, not strings ("3.9" >= "3.10" as text)."""
    spec = SpecifierSet(PROJECT["requires-python"])
    assert "3.11" in spec and "3.10" not in spec
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert py.split("=", 1)[1] in spec


def test_lock_pins_every_dependency_within_its_range():
    lock = _lock()
    wanted = PROJECT["dependencies"] + [r for extra in LOCKED_EXTRAS for r in PROJECT["optional-dependencies"][extra]]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock (run make lock)"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock has {name}=={lock[name]}, pyproject wants {req}"


def test_torch_is_pinned_once():
    """The Makefile's TORCH_PINS is what the lock holds; nothing else pins torch."""
    lock = _lock()
    for pin in _makefile_var("TORCH_PINS").split():
        name, version = pin.split("==")
        assert lock[canonicalize_name(name)] == version
    torch_names = {canonicalize_name(p.split("==")[0]) for p in _makefile_var("TORCH_PINS").split()}
    pinned = [r for r in PROJECT["dependencies"] if canonicalize_name(Requirement(r).name) in torch_names]
    assert not any("==" in r for r in pinned), pinned


def test_environment_yml_installs_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip_section == ["-r requirements.lock", f"-e .[{','.join(LOCKED_EXTRAS)}]"]
    header = (ROOT / "requirements.lock").read_text()
    assert all(re.search(rf"--extra[= ]{e}\b", header) for e in LOCKED_EXTRAS)
    assert f"-e '.[{','.join(LOCKED_EXTRAS)}]'" in (ROOT / "Makefile").read_text()


def test_cli_lists_every_subcommand(capsys):
    from sam3dlib.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "phantom", "prepare", "check-data", "train", "predict", "evaluate", "reproduce"):
        assert cmd in out


@pytest.mark.slow
def test_wheel_ships_the_table_notebooks(tmp_path):
    """`sam3d reproduce` outside a checkout finds the notebooks the wheel installed."""
    from sam3dlib.study.registry import NOTEBOOKS

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("sam3dlib-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for nb in NOTEBOOKS.values():
        assert any(n.endswith(f".data/data/share/sam3dlib/notebooks/{nb}") for n in names), nb
