"""The README is a manual: short, in the order a newcomer reads it, its CLI table the real
commands; benchmark tables and history live beside it."""

import re
from pathlib import Path

from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_the_sections_come_in_a_newcomers_order():
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings == ["Quick start", "Where things are", "The Kaggle path",
                        "Training with config files", "CV, post-processing and prediction",
                        "Ensembles and pseudo-labels",
                        "CLI reference", "How to extend", "Headline figures"]


def test_the_cli_table_lists_exactly_the_real_commands():
    parser = cli.build_parser()
    real = set(parser._subparsers._group_actions[0].choices)
    listed = set(re.findall(r"^\| `python -m pipeline ([a-z-]+)", README, re.M))
    assert listed == real


def test_linked_files_exist():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).is_file(), target
    for name in ("bench/README.md", "CHANGELOG.md", "docs/reference.md"):
        assert f"]({name}" in README, name
    assert "| shift | score |" in (ROOT / "bench" / "README.md").read_text()
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()


def test_the_readmes_abridged_demo_recipe_is_the_real_one():
    import yaml

    block = re.search(r"# configs/demo\.yaml \(abridged\)\n(.*?)```", README, re.S).group(1)
    shown = yaml.safe_load(block)
    real = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    assert len(shown) >= 8
    assert {key: real.get(key) for key in shown} == shown
