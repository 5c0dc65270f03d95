"""The run's HTML page (``report``): well formed, self-contained (every picture embedded, no
URL), its sections there or saying what to run, an ensemble's members, one-line errors."""

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpers import TINY_TRAIN, run_cli
from pipeline.inference import html_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "wbr"}
SECTIONS = ["Configuration", "Training curves", "Scores: default vs tuned",
            "Tuned post-processing", "Score breakdown", "Worst images", "Stability",
            "Examples: truth vs prediction", "Robustness"]
NEW_KEYS = ("breakdown", "gallery", "stability")  # what a newer cv adds to cv.json
INFER = ["--workers", 0, "--quiet"]


class Page(HTMLParser):
    """Parses a page; keeps unbalanced tags, the h2/h3 texts and every <img> src."""

    def __init__(self, text: str):
        super().__init__()
        self.open, self.unbalanced, self.images, self.headings = [], [], [], {}
        self._heading = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in ("h2", "h3"):
            self._heading = tag
            self.headings.setdefault(tag, []).append("")
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.unbalanced.append(tag)
        if tag in ("h2", "h3"):
            self._heading = None

    def handle_data(self, data):
        if self._heading:
            self.headings[self._heading][-1] += data


def check_page(path: Path, root: Path) -> Page:
    """The page at ``path`` parsed; asserts it is balanced, offline and its pictures PNGs."""
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    page = Page(text)
    assert page.open == [] and page.unbalanced == []
    assert not re.search(r"https?://", text)
    assert not re.search(r"<script|<link|@import|url\(", text)
    assert page.images
    for src in page.images:
        if src.startswith("data:"):
            header, _, data = src.partition(",")
            assert header == "data:image/png;base64"
            assert base64.b64decode(data, validate=True).startswith(PNG_MAGIC)
        else:
            assert (root / src).is_file(), src
    return page


def without_new_keys(run: Path) -> dict:
    """The run's cv.json rewritten without what a newer cv adds; returns it."""
    path = run / "reports" / "cv.json"
    report = {k: v for k, v in json.loads(path.read_text()).items() if k not in NEW_KEYS}
    path.write_text(json.dumps(report))
    return report


@pytest.fixture
def cv_run(tiny_run_copy):
    """``(data, run)``: the tiny run after cv."""
    data, run = tiny_run_copy
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    return data, run


def test_the_page_of_a_run_is_self_contained_and_says_what_to_run(cv_run, capsys):
    _, run = cv_run
    without_new_keys(run)
    assert run_cli("report", run) == 0
    path = run / "reports" / "report.html"
    assert f"wrote {path}" in capsys.readouterr().out
    page = check_page(path, path.parent)
    assert page.headings["h2"] == SECTIONS
    text = path.read_text()
    for what in ("score breakdown", "worst images", "stability table"):
        assert f"rerun cv for the {what}: python -m pipeline cv --run-dir {run}" in text
    assert f"python -m pipeline robustness --run-dir {run}" in text  # no robustness.json
    # the config table, scores, the tuned post-processing, the trainer's curves
    config = json.loads((run / "config.json").read_text())
    assert f"<td>model</td><td>{config['model']}</td>" in text
    report = json.loads((run / "reports" / "cv.json").read_text())
    assert f"<td>competition score</td><td>{report['default']['score']:.4f}</td>" in text
    assert "<th>presence gate</th>" in text
    curves = sorted((run / "reports").glob("curves_fold*.png"))
    assert curves and all(f"{p.name}: fold" in text for p in curves)
    # pictures: curves, 2 confusions, min_area, overlays
    assert len(page.images) == len(curves) + 4


def test_missing_pictures_and_curves_say_what_to_run(cv_run, tmp_path):
    _, run = cv_run
    for path in (run / "reports").glob("curves_fold*.png"):
        path.unlink()
    (run / "reports" / "overlays.png").unlink()
    out = tmp_path / "elsewhere" / "page.html"
    assert run_cli("report", run, "--out", out) == 0
    text = out.read_text()
    assert f"`python -m pipeline train --run-dir {run}` draws them" in text
    assert "overlays.png is missing: rerun cv to draw it" in text
    assert not (run / "reports" / "report.html").exists()
    check_page(out, out.parent)


def test_breakdown_gallery_and_stability_render_when_cv_has_them(cv_run, tmp_path):
    _, run = cv_run
    report = without_new_keys(run)
    shutil.copy(run / "reports" / "min_area.png", run / "reports" / "gallery.png")
    report["breakdown"] = {"n_images": 8, "per_class": [
        {"class_id": c, "score": 0.9, "deficit": 0.3, "false_positive": 0.1, "missed": 0.15,
         "partial": 0.05, "n_false_positive": 2, "n_missed": 3, "n_partial": c}
        for c in (1, 2, 3, 4)]}
    report["gallery"] = {"path": "gallery.png", "images": [
        {"image_id": "worst01.jpg", "cost": 1.75, "fold": 1}]}
    report["stability"] = {
        "per_fold": [{"fold": f, "n_images": 4, "threshold": [0.5, None, 0.6, 0.7],
                      "min_area": [0, 100, 200, 300], "presence": [None] * 4,
                      "tuned_score": 0.91, "score_at_chosen": 0.89} for f in (0, 1)],
        "bootstrap": {"level": 0.95, "n": 200, "low": 0.8123, "high": 0.9345, "tuned": 0.88}}
    (run / "reports" / "cv.json").write_text(json.dumps(report))
    path = html_report.write(run)
    text = path.read_text()
    page = check_page(path, path.parent)
    assert "rerun cv" not in text
    assert "<td>class 4</td><td>0.9000</td><td>0.3000</td><td>0.1000</td><td>0.1500</td>" \
           "<td>0.0500</td><td>2</td><td>3</td><td>4</td>" in text
    assert "<td>worst01.jpg</td><td>1.7500</td><td>1</td>" in text
    assert "<td>0.5000, argmax, 0.6000, 0.7000</td><td>0, 100, 200, 300</td>" \
           "<td>off, off, off, off</td>" in text
    assert "95% bootstrap interval of the tuned score (200 resamples): 0.8123 to 0.9345" in text
    # and two more pictures: the deficit chart and the gallery
    assert len(page.images) == len(list((run / "reports").glob("curves_fold*.png"))) + 6


def test_a_run_without_cv_is_a_one_line_error(tiny_run_copy, tmp_path, capsys):
    _, run = tiny_run_copy
    capsys.readouterr()
    assert run_cli("report", run) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {run}/reports/cv.json does not exist: run `python -m pipeline cv "
                   f"--run-dir {run}` first")
    assert run_cli("report", tmp_path / "nowhere") == 1
    assert "nowhere does not exist" in capsys.readouterr().err
    assert run_cli("report", run, "--out", tmp_path) == 1   # a directory
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--out {tmp_path} is a directory" in err


def test_an_ensemble_renders_its_members(cv_run, tmp_path):
    data, first = cv_run
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "folds.csv", second / "folds.csv")
    assert run_cli("train", "--data-dir", data, "--run-dir", second, "--epochs", 1,
                   "--max-steps", 1, "--head", "sigmoid", "--loss", "bce", "--seed", 1,
                   *TINY_TRAIN) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", second, *INFER) == 0
    ensemble = tmp_path / "ens"
    assert run_cli("ensemble", "--run-dir", first, "--run-dir", second, "--weights", "2,1",
                   "--out", ensemble) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", ensemble, *INFER) == 0
    assert run_cli("report", ensemble) == 0
    path = ensemble / "reports" / "report.html"
    page = check_page(path, path.parent)
    assert page.headings["h2"] == SECTIONS[:3] + ["Ensemble members"] + SECTIONS[3:]
    assert page.headings["h3"] == [first.name, second.name]   # each member's curves
    text = path.read_text()
    report = json.loads((ensemble / "reports" / "cv.json").read_text())
    for member, weight, head in zip(report["members"], ("2", "1"), ("softmax", "sigmoid")):
        assert f"<td>{member['name']}</td><td>{weight}</td>" in text   # configuration
        assert f"<td>{member['name']}</td><td>{float(weight):.4f}</td>" \
               f"<td>{member['default']['score']:.4f}</td>" in text        # scores
        assert f"<td>{head}</td>" in text
    curves = [p for r in (first, second) for p in sorted((r / "reports").glob("curves_fold*.png"))]
    assert len(curves) == 4
    for path in curves:
        assert "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() in text
    # this cv writes the breakdown, gallery and stability: the page shows them
    assert "rerun cv" not in text
    assert "bootstrap interval of the tuned score" in text
