"""One self-contained HTML page of a run or an ensemble (``report``): its configuration,
training curves, default vs tuned scores, the tuned post-processing, the score breakdown, the
worst images, stability across folds, robustness and, for an ensemble, its members. Pictures
are base64 ``data:`` URIs, the style inline: no network, no JavaScript. What a section lacks,
it names with the command that writes it."""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import re
from pathlib import Path

import numpy as np

from pipeline import fileio, plotting
from pipeline.inference import ensembles

REPORT_FILE = "report.html"
CONFIG_COLUMNS = 3  # a run's config.json, side by side in this many tables
SUMMARY_KEYS = ("model", "encoder", "head", "gate", "scale", "epochs")
PARTS = (("false_positive", "false positive", "#d62728"), ("missed", "missed", "#1f77b4"),
         ("partial", "partial", "#ff9f1c"))  # the deficit's terms, stacked in this order
STYLE = """body{font-family:sans-serif;max-width:1300px;margin:0 auto;padding:1em 2em;color:#222}
h1{border-bottom:2px solid #446}h2{margin-top:1.8em;border-bottom:1px solid #bbc}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.5em 0;font-size:14px}
th,td{border:1px solid #ccd;padding:3px 8px;text-align:right}th{background:#eef}
td:first-child,th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
figure{margin:.5em 0}.row figure{max-width:calc(50% - .5em)}figcaption{font-size:13px;color:#555}
img{max-width:100%;border:1px solid #ddd}
p.missing{background:#fff4d6;border-left:4px solid #e0a000;padding:.4em .8em}"""


def write(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the page of the run or ensemble ``run_dir`` to ``out`` (default
    ``RUN_DIR/reports/report.html``) atomically; return its path."""
    source = ensembles.resolve(run_dir)
    path = Path(out) if out is not None else source.paths.reports / REPORT_FILE
    fileio.write_text(path, build(source))
    return path


def build(source: ensembles.Source) -> str:
    """The page of ``source`` as HTML text; one-line errors when it has no cv."""
    if not source.root.is_dir():
        raise FileNotFoundError(f"{source.root} does not exist: give a run or ensemble folder")
    reports = source.paths.reports
    cv = _read_json(reports / "cv.json", f"python -m pipeline cv --run-dir {source.root}")
    rerun = functools.partial(_rerun, root=source.root)
    sections = [("Configuration", _config(source)), ("Training curves", _curves(source)),
                ("Scores: default vs tuned", _scores(cv, reports))]
    if cv.get("members"):
        sections.append(("Ensemble members", _members(cv["members"])))
    sections += [
        ("Tuned post-processing", _postprocess(cv, reports)),
        ("Score breakdown", _breakdown(cv.get("breakdown")) or rerun("score breakdown")),
        ("Worst images", _gallery(cv.get("gallery"), reports) or rerun("worst images")),
        ("Stability", _stability(cv.get("stability")) or rerun("stability table")),
        ("Examples: truth vs prediction", _image(reports / "overlays.png", "tuned, out of fold")),
        ("Robustness", _robustness(source))]
    described = source.describe(names_only=True)
    title = html.escape(described[:1].upper() + described[1:])
    slug = {name: re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") for name, _ in sections}
    nav = " ".join(f'<a href="#{slug[name]}">{html.escape(name)}</a>' for name, _ in sections)
    body = "\n".join(f'<section id="{slug[name]}">\n<h2>{html.escape(name)}</h2>\n{content}\n'
                     "</section>" for name, content in sections)
    facts = (f"code {cv.get('code_version', '?')}, {cv.get('n_images', '?')} out-of-fold "
             f"images, folds {cv.get('folds', '?')}, TTA {cv.get('tta', '?')}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{title}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n<p>{html.escape(facts)}</p>\n<nav>{nav}</nav>\n{body}\n"
            "</body>\n</html>\n")


def _read_json(path: Path, fix: str) -> dict:
    """``path`` as JSON; a one-line error naming it and the command ``fix`` that writes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `{fix}` first")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not JSON ({error}): write it again with `{fix}`") from None


def _cell(value, fmt: str = ".4f") -> str:
    """A value as table text: floats in ``fmt``, None as a dash, lists joined, others str."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, fmt)
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v, fmt) for v in value)
    return str(value)


def _table(header: list[str], rows: list[list], fmt: str = ".4f") -> str:
    """An HTML table; every cell escaped, floats in ``fmt``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(_cell(v, fmt))}</td>" for v in row)
                     + "</tr>" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _none_as(values: list, text: str) -> list:
    """Per-class values, None (argmax, no gate) as ``text``."""
    return [text if v is None else v for v in values]


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _rerun(what: str, root: Path) -> str:
    """The note of a section that a newer cv writes."""
    return _missing(f"rerun cv for the {what}: python -m pipeline cv --run-dir {root}")


def _figure(png: bytes, caption: str) -> str:
    """A PNG embedded as a base64 data: URI, with its caption."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    text = html.escape(caption)
    return f'<figure><img src="{uri}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _image(path: Path, caption: str, fix: str = "rerun cv to draw it") -> str:
    """The picture at ``path`` embedded, or a note that it is missing and how to make it."""
    if not path.is_file():
        return _missing(f"{path} is missing: {fix}")
    return _figure(path.read_bytes(), f"{path.name}: {caption}")


def _config(source: ensembles.Source) -> str:
    """A run: config.json as a table; an ensemble: its members, weights and their recipes."""
    if not source.is_ensemble:
        path = source.paths.config_json
        if not path.is_file():
            return _missing(f"{path} is missing: `python -m pipeline train --run-dir "
                            f"{source.root}` writes it")
        items = sorted(json.loads(path.read_text()).items())
        per_column = -(-len(items) // CONFIG_COLUMNS)
        return '<div class="row">' + "".join(
            _table(["setting", "value"], items[i:i + per_column], fmt="g")
            for i in range(0, len(items), per_column)) + "</div>"
    rows = []
    for member in source.members:
        path = member.run.config_json
        values = json.loads(path.read_text()) if path.is_file() else {}
        rows.append([member.name, member.weight, str(member.run.root),
                     *(values.get(key) for key in SUMMARY_KEYS)])
    return (f"<p>{html.escape(source.describe(names_only=True))} "
            f"({ensembles.ENSEMBLE_FILE})</p>\n"
            + _table(["member", "weight", "run folder", *SUMMARY_KEYS], rows, fmt="g"))


def _curves(source: ensembles.Source) -> str:
    """The trainer's ``reports/curves_fold<k>.png``, member by member for an ensemble."""
    parts = []
    for member in source.members:
        found = [(int(m.group(1)), path) for path in member.run.reports.glob("curves_fold*.png")
                 if (m := re.fullmatch(r"curves_fold(\d+)\.png", path.name))]
        if source.is_ensemble:
            parts.append(f"<h3>{html.escape(member.name)}</h3>")
        if not found:
            parts.append(_missing(f"no training curves in {member.run.reports}: `python -m "
                                  f"pipeline train --run-dir {member.run.root}` draws them"))
            continue
        parts.append('<div class="row">' + "".join(
            _image(path, f"fold {fold}") for fold, path in sorted(found)) + "</div>")
    return "\n".join(parts)


def _scores(cv: dict, reports: Path) -> str:
    """Default vs tuned: the competition score, baselines, per-class Dice, the confusions."""
    default, tuned = cv["default"], cv["tuned"]
    rows = [[name, default[key], tuned[key]] for name, key in (
        ("competition score", "score"), ("all-empty baseline", "all_empty_baseline"),
        ("Dice on non-empty pairs", "nonempty"))]
    for key, what in (("per_class", "all pairs"), ("nonempty_per_class", "non-empty pairs")):
        rows += [[f"class {c + 1}, {what}", default[key][c], tuned[key][c]]
                 for c in range(len(default[key]))]
    pictures = "".join(_image(reports / f"confusion_{which}.png",
                              f"true vs predicted number of defect classes, {which}")
                       for which in ("default", "tuned"))
    return (_table(["", "default", "tuned"], rows) + f'\n<div class="row">{pictures}</div>')


def _members(members: list[dict]) -> str:
    """An ensemble's members' own out-of-fold scores (cv.json ``members``)."""
    rows = [[m["name"], m.get("weight"), m.get("default", {}).get("score"),
             m.get("tuned", {}).get("score"), m.get("default", {}).get("nonempty"),
             m.get("tuned", {}).get("nonempty")] for m in members]
    return _table(["member", "weight", "score default", "score tuned",
                   "non-empty Dice default", "non-empty Dice tuned"], rows)


def _postprocess(cv: dict, reports: Path) -> str:
    """The tuned threshold, presence gate, min_area and min_component of each class."""
    pp = cv["postprocess"]
    rows = [[f"class {c + 1}", *row] for c, row in enumerate(zip(
        _none_as(pp["threshold"], "argmax"), _none_as(pp["presence"], "off"), pp["min_area"],
        pp.get("min_component", [0] * len(pp["min_area"]))))]
    inference = pp.get("inference", {})
    facts = (f"head {pp.get('head', '?')}, decode {inference.get('decode', '?')}, "
             f"TTA {inference.get('tta', '?')}")
    return (f"<p>{html.escape(facts)}</p>\n"
            + _table(["", "threshold", "presence gate", "min_area", "min_component"], rows)
            + "\n" + _image(reports / "min_area.png", "OOF score of each class vs min_area"))


def _breakdown(breakdown: dict | None) -> str:
    """Per class: the score's deficit split into false positives, misses and partial masks
    ("" when cv.json has no breakdown)."""
    if not breakdown:
        return ""
    per_class = breakdown["per_class"]
    rows = [[f"class {c['class_id']}", c["score"], c["deficit"], c["false_positive"],
             c["missed"], c["partial"], c["n_false_positive"], c["n_missed"], c["n_partial"]]
            for c in per_class]
    note = (f"{breakdown.get('n_images', '?')} images; deficit = 1 - the class's mean Dice = "
            "false positives + missed + partial overlap, each a share of the class's pairs "
            "(n: how many pairs)")
    return (f"<p>{html.escape(note)}</p>\n" + _table(
        ["", "score", "deficit", "false positive", "missed", "partial", "n false positive",
         "n missed", "n partial"], rows) + "\n" + _figure(_breakdown_chart(per_class),
                                                          "the deficit of each class"))


def _breakdown_chart(per_class: list[dict]) -> bytes:
    """A PNG of one stacked horizontal bar per class: false positive, missed, partial."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(per_class) + 1.4))
    labels = [f"class {c['class_id']}" for c in per_class]
    left = np.zeros(len(per_class))
    for key, name, colour in PARTS:
        values = np.array([float(c[key]) for c in per_class])
        ax.barh(labels, values, left=left, label=name, color=colour)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("deficit: share of the class's pairs (1 - mean Dice)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _gallery(gallery: dict | None, reports: Path) -> str:
    """The costliest out-of-fold images: the gallery picture and their ids ("" without)."""
    if not gallery:
        return ""
    rows = [[g["image_id"], g["cost"], g["fold"]] for g in gallery.get("images", [])]
    if not rows:
        return "<p>No out-of-fold image lost score: nothing to show.</p>"
    picture = (_image(reports / gallery["path"], "truth beside prediction by the image's own "
                      "fold") if gallery.get("path") else
               _missing("cv drew no gallery picture (no model was loaded): rerun cv"))
    header = ["image", "cost (sum over classes of 1 - Dice)", "fold"]
    return picture + "\n" + _table(header, rows)


def _stability(stability: dict | None) -> str:
    """Post-processing tuned on each fold alone, and the bootstrap interval of the score
    ("" without)."""
    if not stability:
        return ""
    rows = [[f["fold"], f["n_images"], _none_as(f["threshold"], "argmax"), f["min_area"],
             _none_as(f["presence"], "off"), f["tuned_score"], f["score_at_chosen"]]
            for f in stability.get("per_fold", [])]
    table = _table(["fold", "images", "threshold", "min_area", "presence", "tuned alone",
                    "at the values tuned on all folds"], rows)
    boot = stability.get("bootstrap")
    if not boot:
        return table
    level = boot["level"] * 100 if boot["level"] <= 1 else boot["level"]
    text = (f"{level:g}% bootstrap interval of the tuned score ({boot['n']} resamples): "
            f"{boot['low']:.4f} to {boot['high']:.4f} (tuned {boot['tuned']:.4f})")
    return f"{table}\n<p>{html.escape(text)}</p>"


def _robustness(source: ensembles.Source) -> str:
    """The shifts table of ``reports/robustness.json`` and its picture."""
    path = source.paths.reports / "robustness.json"
    if not path.is_file():
        return _missing(f"{path} is missing: run `python -m pipeline robustness --run-dir "
                        f"{source.root}` for scores under shifted images")
    report = json.loads(path.read_text())
    rows = [[s["name"], s["score"], s["all_empty_baseline"], s["margin"], s["nonempty"],
             s["below_baseline"]] for s in report.get("shifts", [])]
    return (_table(["shift", "score", "all-empty baseline", "margin", "non-empty Dice",
                    "below baseline"], rows)
            + "\n" + _image(source.paths.reports / "robustness.png", "score under each shift",
                            "rerun robustness to draw it"))
