"""Every knob of a notebook lives in its tagged ``parameters`` cell, so ``papermill -p`` takes effect."""
from __future__ import annotations

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from sam3dlib.study.reproduce import notebooks_dir

# notebook, parameters given with papermill -p
CASES = [
    ("06_figures.ipynb", {"table": 3, "slices": [2, 5]}),
    ("07_explore_case.ipynb", {"table": 3, "case_id": "lung_001", "slices": [4]}),
    ("01_synapse_table1.ipynb", {"seed": 7, "profile": "quick"}),
]


def _namespace_before_setup(nb: nbformat.NotebookNode) -> dict:
    """Run the cells up to the first library call (the parameters check) and return their globals."""
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "from_namespace" in cell.source:
            return namespace
        exec(compile(cell.source, "<cell>", "exec"), namespace)  # noqa: S102 - our own notebook's plain assignments
    raise AssertionError("no cell calls from_namespace(globals())")


@pytest.mark.parametrize("name, params", CASES, ids=[c[0] for c in CASES])
def test_papermill_parameters_take_effect(name, params):
    nb = load_notebook_node(str(notebooks_dir() / name))
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    injected = parameterize_notebook(nb, params, kernel_name="python3", language="python")
    namespace = _namespace_before_setup(injected)
    for key, value in params.items():
        assert namespace[key] == value, f"{name}: -p {key} {value!r} was overwritten by {namespace[key]!r}"


#: notebooks that are not about a paper table (a user's own dataset, the encoder comparison): no paper
#: dataset, protocol or seed list; their own knobs, under the shared names where they apply
OWN_DATA_NOTEBOOKS = {"08_your_dataset.ipynb": {"raw_dir", "data_dir", "encoder", "encoder_weights", "profile", "fold",
                                                "device", "plan", "overrides", "out_dir"},
                      "09_encoder_comparison.ipynb": {"encoders", "encoder_weights", "profile", "seed", "out_dir"}}


@pytest.mark.parametrize("name", sorted(OWN_DATA_NOTEBOOKS))
def test_own_data_notebook_parameters(name):
    """The own-dataset notebook declares its parameters (typed, with help) under the shared names where they apply."""
    import papermill as pm

    found = pm.inspect_notebook(str(notebooks_dir() / name))
    assert set(found) == OWN_DATA_NOTEBOOKS[name]
    assert all(found[k]["help"] for k in found), [k for k in found if not found[k]["help"]]


@pytest.mark.parametrize("name", sorted(p.name for p in notebooks_dir().glob("[0-9]*.ipynb")
                                        if p.name not in OWN_DATA_NOTEBOOKS))
def test_papermill_reads_every_parameter(name):
    """``papermill --help-notebook`` lists every shared parameter with its type and help."""
    import papermill as pm

    from sam3dlib.study.notebook_params import PARAMETER_NAMES

    found = pm.inspect_notebook(str(notebooks_dir() / name))
    assert set(PARAMETER_NAMES) <= set(found), sorted(set(PARAMETER_NAMES) - set(found))
    assert all(found[k]["help"] for k in PARAMETER_NAMES)
