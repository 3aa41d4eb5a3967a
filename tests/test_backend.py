"""The Keras backend guard (issue 24): the command line runs on TensorFlow whatever the environment
says, and says so once; the Python API refuses another backend in one line; a .keras file loads
whatever backend saved it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "sequential_mnist.keras"


def _python(code: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | env
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


CLI = (
    "import sys; sys.argv = ['optsearch', 'inspect', {model!r}]; from optsearch.cli.main import main; main()"
)


def test_the_command_line_overrides_another_backend_and_says_so_once() -> None:
    done = _python(CLI.format(model=str(MODEL)), {"KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: optsearch runs on")]
    assert notes == [
        "note: optsearch runs on Keras' TensorFlow backend; KERAS_BACKEND=jax is overridden for this command"
    ]
    assert "15 quantizable layers" in done.stdout


def test_a_keras_json_backend_is_named_too(tmp_path: Path) -> None:
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    done = _python(CLI.format(model=str(MODEL)), {"KERAS_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the backend 'torch' of keras.json is overridden" in done.stderr


def test_no_note_on_tensorflow() -> None:
    done = _python(CLI.format(model=str(MODEL)), {"KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0 and "note: optsearch runs on" not in done.stderr


def test_the_python_api_refuses_another_backend_in_one_line() -> None:
    code = (
        "import optsearch\n"
        "try:\n"
        f"    optsearch.evaluate({str(MODEL)!r}, 'models/default_data.npz')\n"
        "except optsearch.OptsearchError as err:\n"
        "    print('REFUSED', err)\n"
    )
    done = _python(code, {"KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip()
    assert line.startswith("REFUSED") and "\n" not in line
    assert "KERAS_BACKEND=jax" in line and "set KERAS_BACKEND=tensorflow" in line


def test_a_keras_file_loads_whatever_backend_wrote_it(tmp_path: Path) -> None:
    """A .keras file holds no backend-specific data: one whose metadata names another backend (as a
    file written elsewhere may) loads and predicts the same."""
    keras = pytest.importorskip("keras")
    import numpy as np

    from optsearch.model.loading import load_model

    other = tmp_path / "jax_saved.keras"
    with zipfile.ZipFile(MODEL) as source, zipfile.ZipFile(other, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "metadata.json":
                meta = json.loads(data) | {"backend": "jax"}
                data = json.dumps(meta).encode()
            target.writestr(name, data)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.float32)
    original = keras.saving.load_model(MODEL, compile=False)
    loaded = load_model(other)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), original.predict(x, verbose=0))
