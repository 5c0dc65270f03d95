"""The README's Python example opens a synthetic dataset as `make sample-data` writes it."""

import re
import subprocess
import sys
from pathlib import Path

from pipeline.data import synthetic

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_on_sample_data(tmp_path):
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    synthetic.write_dataset(tmp_path / "data", n_train=6, n_test=1, seed=0, quiet=True,
                            workers=1)
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "6"


def test_readme_lists_every_make_target():
    makefile = (README.parent / "Makefile").read_text()
    targets = re.findall(r"^([a-z-]+):.*## ", makefile, re.M)
    text = README.read_text()
    internal = ("help", "install", "lint", "clean", "test")
    assert [t for t in targets if f"`{t}`" not in text and t not in internal] == []
