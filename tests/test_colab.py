"""colab/quickstart.ipynb executes end to end: a shortened variant set through its parameters cell."""
import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes_and_shows_its_figures(tmp_path, monkeypatch):
  notebook = nbformat.read(os.path.join(ROOT, "colab", "quickstart.ipynb"), as_version=4)
  parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
  assert len(parameters) == 1
  parameters[0].source = (f"WORKDIR = {str(tmp_path / 'run')!r}\nSFT_STEPS = 3\nGRPO_STEPS = 2\nEVAL_SIZE = 4\n"
                          "REPO = ''")
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # The kernel sees one CPU device, as on Colab.
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()

  outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  assert "wall time" in text and text.count("in_view") >= 2 and "cross_view" in text
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # The curves and the example pair.
  assert os.path.isfile(tmp_path / "run" / "grpo" / "hf" / "config.json")
