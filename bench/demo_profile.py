"""Where `make demo`'s time goes, by stage (decode, augmentation, forward, backward, optimizer,
upsampling, post-processing, metric, CV search, plots, ...).

The demo's own command lines are taken from `make -n demo` (so the profile follows the
Makefile), each is run in this process under ``torch.profiler`` and the ranges that the code
marks (``pipeline.stages``) are summed. Time in no marked stage (argument checks, dataset
synthesis, CSV writing, ...) is reported as ``unmarked``.

``--loader serial`` (the default) sets ``--workers 0``: JPEG decode, masks and augmentation
run in the profiled process, one after the other with the model, so every stage is itemised
(an upper bound on their share). ``--loader demo`` keeps the demo's own ``--workers 1``: they
run in a loader process beside the model, as in `make demo`, unseen by the profiler; what the
main process waits for them shows as ``unmarked``.

Run: python bench/demo_profile.py [--dir runs/demo-profile] [--loader serial|demo] [VAR=value ...]
e.g. DEMO_N_TRAIN=40 DEMO_N_TEST=10 for a quick look. Writes DIR/profile.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from pipeline import cli, fileio, stages

ROOT = Path(__file__).resolve().parents[1]


def demo_commands(demo_dir: Path, overrides: list[str],
                  serial: bool = True) -> list[list[str]]:
    """The ``python -m pipeline`` argument lists of `make demo`, in order; ``serial``: loading
    in-process (``--workers 0``)."""
    text = subprocess.run(["make", "-s", "-n", "demo", f"DEMO_DIR={demo_dir}", *overrides],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if "-m" in words and words[words.index("-m") + 1:][:1] == ["pipeline"]:
            argv = words[words.index("-m") + 2:]
            commands.append(_workers_zero(argv) if serial else argv)
    if not commands:
        raise SystemExit(f"`make -n demo` listed no pipeline commands:\n{text}")
    return commands


def _workers_zero(argv: list[str]) -> list[str]:
    if "--workers" in argv:
        argv = list(argv)
        argv[argv.index("--workers") + 1] = "0"
    return argv


def profile_command(argv: list[str]) -> dict:
    """Wall time of one command and the seconds of each marked stage in it."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        status = cli.main(argv)
        wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"`python -m pipeline {shlex.join(argv)}` failed (exit {status})")
    found = {event.key: event.cpu_time_total / 1e6 for event in prof.key_averages()
             if event.key in stages.STAGES}
    return {"command": argv[0], "wall_s": wall,
            "stages": {name: found.get(name, 0.0) for name in stages.STAGES}}


def summarize(results: list[dict]) -> dict:
    """Totals per stage and the model / not-model split of the whole demo's wall time."""
    wall = sum(r["wall_s"] for r in results)
    totals = {name: sum(r["stages"][name] for r in results) for name in stages.STAGES}
    model = sum(totals[name] for name in stages.MODEL)
    return {"wall_s": wall, "stages": totals, "model_s": model,
            "unmarked_s": wall - sum(totals.values()),
            "not_model_fraction": (wall - model) / wall}


def scores(demo_dir: Path) -> dict:
    """The demo's OOF scores (default and tuned), to show a change kept them."""
    cv = json.loads((demo_dir / "reports" / "cv.json").read_text())
    return {"oof_default": cv["default"]["score"], "oof_tuned": cv["tuned"]["score"],
            "oof_nonempty_tuned": cv["tuned"]["nonempty"]}


def report(results: list[dict], summary: dict) -> str:
    lines = [f"{'command':12}{'wall s':>9}{'model s':>9}{'other s':>9}{'unmarked':>10}"]
    for r in results:
        model = sum(r["stages"][name] for name in stages.MODEL)
        marked = sum(r["stages"].values())
        lines.append(f"{r['command']:12}{r['wall_s']:>9.1f}{model:>9.1f}"
                     f"{marked - model:>9.1f}{r['wall_s'] - marked:>10.1f}")
    wall = summary["wall_s"]
    lines += ["", f"{'stage':14}{'seconds':>9}{'% of wall':>11}"]
    rows = sorted(summary["stages"].items(), key=lambda kv: -kv[1])
    rows.append(("unmarked", summary["unmarked_s"]))
    for name, seconds in rows:
        tag = " (model)" if name in stages.MODEL else ""
        lines.append(f"{name:14}{seconds:>9.1f}{100 * seconds / wall:>10.1f}%{tag}")
    lines += ["", f"total wall {wall:.1f} s; forward + backward + optimizer "
              f"{summary['model_s']:.1f} s; everything else "
              f"{100 * summary['not_model_fraction']:.1f}% of the wall time"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "runs" / "demo-profile",
                        help="the demo's directory (deleted first if it holds a profile)")
    parser.add_argument("--loader", choices=("serial", "demo"), default="serial",
                        help="serial: --workers 0, every stage itemised (default); demo: the "
                        "demo's own loader workers")
    parser.add_argument("overrides", nargs="*", metavar="VAR=value",
                        help="make variables, e.g. DEMO_N_TRAIN=40")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if not re.fullmatch(r"[A-Z_]+=.*", o)]
    if bad:
        parser.error(f"{bad[0]!r} is not a make variable (VAR=value)")
    demo_dir = args.dir.resolve()
    if demo_dir.exists():
        if not (demo_dir / "profile.json").is_file() and any(demo_dir.iterdir()):
            parser.error(f"--dir {demo_dir} exists and holds no profile.json: pick a new one")
        shutil.rmtree(demo_dir)
    results = []
    for argv_ in demo_commands(demo_dir, args.overrides, args.loader == "serial"):
        results.append(profile_command(argv_))
        print(f"{argv_[0]}: {results[-1]['wall_s']:.1f} s", flush=True)
    summary = summarize(results)
    out = {"overrides": args.overrides, "loader": args.loader, "commands": results,
           "summary": summary,
           "scores": scores(demo_dir)}
    print(report(results, summary))
    print("scores: " + ", ".join(f"{k} {v:.4f}" for k, v in out["scores"].items()))
    fileio.write_json(demo_dir / "profile.json", out)
    print(f"wrote {demo_dir / 'profile.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
