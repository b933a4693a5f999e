"""The layer rule of docs/DESIGN.md: lower layers never import higher ones (at module level or inside functions)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sam3dlib"
#: layer -> the sam3dlib layers it may import (docs/DESIGN.md, "Layers")
ALLOWED = {
    "utils": set(),
    "data": {"utils"},
    "modeling": {"utils", "data"},
    "config": {"utils", "data", "modeling"},
    "training": {"utils", "data", "modeling", "config"},
    "inference": {"utils", "data", "modeling", "config"},
    "evaluation": {"utils", "data"},
    "pipeline": {"utils", "data", "modeling", "config", "training", "inference", "evaluation"},
    "study": {"utils", "data", "modeling", "config", "training", "inference", "evaluation", "pipeline"},
    "cli": {"utils", "data", "modeling", "config", "training", "inference", "evaluation", "pipeline", "study"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0] if len(rel.parts) > 1 else rel.parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("sam3dlib.") and len(n.split(".")) > 1}
    return found


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in ALLOWED),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lower_layers_never_import_higher_ones(path):
    layer = _layer(path)
    wrong = _imports(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


#: the words of a branch on the kind of dataset (the plan reader, data/plans.py, is the one place
#: that tells a paper dataset's committed plan from a planned one)
KIND_WORDS = ("is_user_dataset", "is_user_meta", "is_phantom", "is_paper_dataset")


def test_no_branch_on_the_kind_of_dataset_outside_the_plan_reader():
    hits = [f"{p.relative_to(PACKAGE)}: {w}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "plans.py"
            for w in KIND_WORDS if w in p.read_text()]
    assert not hits, hits
