"""The package's shape: imports run one way between its rooms, and its parts stay small."""

import ast
from pathlib import Path

import pytest

from pipeline.kaggle import pack

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
ENTRY = {"cli", "options", "commands", "__main__"}
# room -> the rooms it may import from (its own included)
ALLOWED = {
    "ground": {"ground"},
    "data": {"ground", "data"},
    "models": {"ground", "data", "models"},
    "training": {"ground", "data", "models", "inference", "training"},
    "inference": {"ground", "data", "models", "inference"},
    "kaggle": {"ground", "data", "models", "inference", "kaggle"},
    "entry": {"ground", "data", "models", "training", "inference", "kaggle", "entry"},
}


def modules() -> dict[str, Path]:
    """``pipeline.x.y`` -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def room(module: str) -> str:
    """The room of ``pipeline.<part>...``: a stage folder, the entry point or the ground floor."""
    part = module.split(".")[1] if "." in module else ""
    if part in ENTRY:
        return "entry"
    return part if part in ALLOWED else "ground"


def imports(path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            # ``from pipeline import cli`` imports the module pipeline.cli
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if f"{node.module}.{alias.name}" in known]
    return found


def test_rooms_import_one_way():
    known = modules()
    wrong = []
    for name, path in known.items():
        for line, target in imports(path, known):
            if target.split(".")[0] != "pipeline" or target == "pipeline":
                continue
            if room(target) not in ALLOWED[room(name)]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({room(name)}) "
                             f"imports {target} ({room(target)})")
    assert wrong == []


def test_only_the_entry_point_imports_cli_and_only_the_cli_parses_arguments():
    known = modules()
    for name, path in known.items():
        targets = {target for _, target in imports(path, known)}
        if name != "pipeline.__main__":
            assert "pipeline.cli" not in targets, name
        if room(name) != "entry":
            assert "argparse" not in targets, name


def test_only_the_api_module_imports_the_kaggle_client():
    known = modules()
    users = sorted(name for name, path in known.items()
                   if any(t.split(".")[0] in ("kaggle", "kagglesdk")
                          for _, t in imports(path, known)))
    assert users == ["pipeline.kaggle.api"]


def test_the_kernel_embeds_exactly_what_inference_needs():
    """Every import of a packed file resolves inside the pack; no training, CLI or client."""
    known = modules()
    packed = {name for name, path in known.items() if path in pack.kernel_files(PACKAGE)}
    assert "pipeline.kaggle.kernel" in packed and "pipeline.inference.predict" in packed
    assert not any(room(name) in ("training", "entry") for name in packed)
    assert "pipeline.kaggle.api" not in packed
    for name in packed:
        for line, target in imports(known[name], known):
            if target.startswith("pipeline.") and target in known:
                assert target in packed, f"{name}:{line} imports {target}, not packed"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_modules_and_functions_stay_small(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 300, f"{path.name} has {len(lines)} lines"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{path.name}:{node.lineno} {node.name} has {length} lines"


def test_the_competition_is_named_once():
    named = [path.relative_to(PACKAGE.parent).as_posix() for path in PACKAGE.rglob("*.py")
             if "severstal-steel-defect-detection" in path.read_text()]
    assert named == ["pipeline/config.py"]


def test_messages_go_through_logging():
    """One way to warn: ``logging`` (set up by ``console``); no stderr prints, no warnings.warn."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "console.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            to_stderr = any(k.arg == "file" and "stderr" in ast.unparse(k.value)
                            for k in node.keywords)
            if name == "warnings.warn" or (name == "print" and to_stderr):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


# Modules that may print: the CLI and its command handlers (what the user asked for, on
# stdout), and the kernel's entry point, whose stdout is the kernel's log on Kaggle.
PRINTERS = {"pipeline/cli.py", "pipeline/kaggle/kernel.py"}
PRINTING_ROOMS = ("pipeline/commands/",)
# Outside those, allowed with a reason:
PRINT_ALLOWED = {
    "pipeline/console.py",  # the logging handler itself: it writes each record to stderr
}


def test_libraries_log_and_only_the_cli_prints():
    """Library modules return results and log progress; no ``print(`` outside the CLI."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative in PRINTERS | PRINT_ALLOWED or relative.startswith(PRINTING_ROOMS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("print",
                                                                         "builtins.print"):
                found.append(f"{relative}:{node.lineno}")
    assert found == []


# Suites about a concern that spans modules rather than one module, and why.
CROSS_CUTTING = {
    "test_layout.py": "the package's shape",
    "test_readme.py": "the README's example and targets",
    "test_docs.py": "the README, bench/README.md and CHANGELOG.md",
    "test_faults.py": "bad inputs and interrupted writes across every stage",
    "test_ensemble.py": "ensembles of checkpoints of several scales and heads",
    "test_speed.py": "profiled stages, compiled inference and the decode path",
    "test_kaggle.py": "the real kaggle client against a fake server: download, upload, submit",
    "test_kaggle_flow.py": "the Kaggle path end to end",
    "test_provenance.py": "what checkpoints, postprocess.json and model_info record of their "
                          "origin, and who refuses a mismatch",
    "test_interrupt.py": "Ctrl-C in any command: one line, exit 130, locks released",
}


def test_tests_mirror_the_package():
    """Each test file is named after the module it tests (``test_<module>.py``), unless it is
    one of the cross-cutting suites named above."""
    tests = Path(__file__).resolve().parent
    stems = {path.stem for path in PACKAGE.rglob("*.py")}
    stems |= {path.stem for path in (PACKAGE.parent / "bench").glob("*.py")}
    unmatched = sorted(path.name for path in tests.glob("test_*.py")
                       if path.stem.removeprefix("test_") not in stems
                       and path.name not in CROSS_CUTTING)
    assert unmatched == []
