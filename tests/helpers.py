"""Shared helpers of the end-to-end tests: the CLI in-process, a tiny trained run, and the
benchmark scripts as modules."""

import importlib.util
from pathlib import Path
from types import ModuleType

from pipeline import cli

TINY_TRAIN = ["--encoder-weights", "none", "--scale", "0.25", "--crop", "none",
              "--batch-size", "4", "--workers", "0", "--lr", "1e-3", "--background-prior", "0.95",
              "--quiet"]


BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_script(name: str) -> ModuleType:
    """``bench/<name>.py`` imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*argv) -> int:
    """``python -m pipeline ...`` in-process; paths and numbers are passed as they are."""
    return cli.main([str(a) for a in argv])


def train_tiny(root: Path, n_train: int, n_test: int, seed: int,
               max_steps: int) -> tuple[Path, Path]:
    """``(data dir, run dir)``: a synthetic set and 2 folds trained for max_steps steps each."""
    data, run = root / "data", root / "run"
    assert run_cli("synth", "--out", data, "--n-train", n_train, "--n-test", n_test,
                   "--seed", seed, "--workers", 1, "--quiet") == 0
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--epochs", 1,
                   "--max-steps", max_steps, *TINY_TRAIN) == 0
    return data, run
