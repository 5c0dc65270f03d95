"""``export``: one checkpoint -> a single file another runtime reads (``--format onnx``), checked
against PyTorch on an image in the same command."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import config, options
from pipeline.models.onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE, FORMATS, OPSETS


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``export``."""
    export = commands.add_parser(
        "export", help="a checkpoint -> an ONNX file, checked with onnxruntime",
        description="Export one model: input `image` (N, 3, h, w) RGB in [0, 1] at the model's "
                    "input scale, outputs `probs` (N, 4, h, w) and, gated, `presence` (N, 4); "
                    "any batch size, the model's h x w (in the file's metadata). Written only "
                    "when onnxruntime's probabilities match PyTorch's on --image.")
    export.add_argument("--format", required=True, choices=list(FORMATS),
                        help="the file format")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", default=None, help="the checkpoint to export (a .pt)")
    source.add_argument("--run-dir", default=None,
                        help="a run folder: its fold's best.pt (see --fold)")
    export.add_argument("--fold", type=int, default=None,
                        help="with --run-dir: the fold (default: the first with a best.pt)")
    export.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {OPSETS[0]} to {OPSETS[-1]} (default "
                             f"{DEFAULT_OPSET}: the exporter's own)")
    export.add_argument("--image", default=None,
                        help="a 1600x256 JPEG to check the export on (default: the first of "
                             "DATA_DIR/test_images, else a synthetic image)")
    options.add_data_dir(export)
    export.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest max |onnxruntime - PyTorch| probability accepted "
                             f"(default {DEFAULT_TOLERANCE:g})")
    export.set_defaults(handler=export_command)


def checkpoint_path(args: argparse.Namespace) -> Path:
    """The ``--checkpoint``, or the ``--fold`` (default: first) best.pt of ``--run-dir``."""
    if args.checkpoint:
        if args.fold is not None:
            raise ValueError("--fold goes with --run-dir: with --checkpoint, drop --fold")
        return Path(args.checkpoint)
    run = config.resolve_run_dir(args.run_dir)
    if args.fold is not None:
        path = run.fold_dir(args.fold) / "best.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--fold {args.fold}: {path} does not exist: train that "
                                    "fold or pick another")
        return path
    found = run.find_checkpoints()
    if not found:
        raise FileNotFoundError(f"--run-dir {run.root} has no checkpoints/fold<k>/best.pt: "
                                "train first, or pass --checkpoint")
    return found[0]


def export_command(args: argparse.Namespace) -> int:
    """Export the checkpoint to ``--out``; print what was written and how close it came."""
    from pipeline import checkpoint, fileio
    from pipeline.models import onnx_export, registry
    from pipeline.training import lock

    out = Path(args.out)
    fileio.check_writable(out, "--out")  # before the export, which takes a while
    if not args.tolerance >= 0:
        raise ValueError(f"--tolerance {args.tolerance} must be >= 0, e.g. 1e-3")
    path = checkpoint_path(args)
    lock.check_not_training([path.parent])   # a best.pt being replaced is not exported
    model = registry.rebuild(checkpoint.load(path), path)
    image, source = onnx_export.check_image(
        Path(args.image) if args.image else None,
        config.resolve_data_dir(args.data_dir).test_images)
    done = FORMATS[args.format](model, out, image, source, opset=args.opset,
                                tolerance=args.tolerance)
    info, (height, width) = done.info, done.size
    print(f"wrote {done.path} ({done.n_bytes / 2**20:.1f} MiB, opset {done.opset}): "
          f"{info.name} on {info.encoder}, {info.head} head{', gated' if info.gate else ''}")
    print(f"input image (N, 3, {height}, {width}) RGB in [0, 1]; outputs "
          f"{', '.join(done.outputs)}")
    diffs = ", ".join(f"{name} {diff:.1e}" for name, diff in done.max_abs_diff.items())
    print(f"onnxruntime vs PyTorch on {source}: max abs difference {diffs} "
          f"(bound {args.tolerance:g})")
    return 0
