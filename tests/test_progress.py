"""Progress bars: shown where a reader can see them, hidden everywhere by ``TQDM_DISABLE``."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from convexlab._progress import bars_disabled, show_bars, tqdm_disable


@pytest.mark.parametrize("value, disabled", [("1", True), ("True", True), ("yes", True), ("0", False),
                                             ("false", False), ("", False), (None, False)])
def test_tqdm_disable_follows_the_environment_when_progress_is_none(monkeypatch, value, disabled):
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    assert bars_disabled() is disabled
    assert tqdm_disable(None) is (True if disabled else None)
    assert show_bars(None) is (not disabled)
    # An explicit choice wins over the environment.
    assert tqdm_disable(True) is False and tqdm_disable(False) is True
    assert show_bars(True) is True and show_bars(False) is False


# Two library calls that show bars: convexity over layers (the library's own tqdm) and loading a
# checkpoint folder (transformers' "Loading weights" bar).
_CELL = """
import numpy as np
from convexlab.convexity import layerwise_convexity
from convexlab.models import load_model
rng = np.random.default_rng(0)
labels = np.repeat(np.arange(3), 10)
embeddings = rng.normal(size=(2, 30, 4)) + labels[None, :, None]
table = layerwise_convexity(embeddings, labels, n_neighbors=4, max_pairs=20, n_bootstrap=0)
model = load_model({folder!r})
print(len(table), model.config.num_hidden_layers)
"""


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory) -> str:
    from convexlab.models import load_model

    folder = tmp_path_factory.mktemp("random-mini-hubert")
    load_model("mini-hubert", pretrained=False, seed=0).save_pretrained(folder)
    return str(folder)


def _run_in_kernel(monkeypatch, folder: str, tqdm_disable_value: str | None) -> list[dict]:
    # An interactive user's kernel: none of the runner's quieting (the root conftest sets it for nbval).
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    if tqdm_disable_value is not None:
        monkeypatch.setenv("TQDM_DISABLE", tqdm_disable_value)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_CELL.format(folder=folder))])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # "python3" is ipykernel's native kernel: this interpreter, with this process's environment.
    client = NotebookClient(notebook, timeout=300, kernel_name="python3")
    client.execute()
    return notebook.cells[0].outputs


def _widget_outputs(outputs: list[dict]) -> list[dict]:
    return [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


@pytest.mark.slow
def test_a_notebook_shows_the_library_bars_as_widgets(monkeypatch, checkpoint_folder):
    outputs = _run_in_kernel(monkeypatch, checkpoint_folder, None)
    bars = [o["data"]["text/plain"] for o in _widget_outputs(outputs)]
    assert len(bars) == 2 and bars[0].startswith("convexity") and "Loading weights" in bars[1], bars


@pytest.mark.slow
def test_tqdm_disable_keeps_executed_notebooks_free_of_bars(monkeypatch, checkpoint_folder):
    outputs = _run_in_kernel(monkeypatch, checkpoint_folder, "1")
    assert _widget_outputs(outputs) == [] and not [o for o in outputs if o.get("name") == "stderr"], outputs
    assert [o["text"] for o in outputs if o.get("name") == "stdout"] == ["2 6\n"]
