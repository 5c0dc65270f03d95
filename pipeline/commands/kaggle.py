"""Kaggle commands: ``download`` the competition data, ``upload-weights``, build (``kernel``)
and ``push-kernel`` the offline kernel, ``kernel-status``, and ``submit`` a kernel version."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import config, options
from pipeline.inference.config import InferenceConfig


def register(commands: argparse._SubParsersAction) -> None:
    """Add the Kaggle commands."""
    _register_data(commands)
    _register_kernel(commands)


def _register_data(commands: argparse._SubParsersAction) -> None:
    download = commands.add_parser("download", help="download + check the competition data")
    options.add_data_dir(download)
    options.add_quiet(download)

    submit = commands.add_parser(
        "submit", help="submit a kernel version (code competitions, this one), or a file")
    submit.add_argument("--kernel-dir", default=None,
                        help="the kernel folder push-kernel pushed: submit the version it "
                             "recorded (default mode)")
    submit.add_argument("--kernel", default=None, help="owner/slug: submit this kernel")
    submit.add_argument("--kernel-version", type=int, default=None,
                        help="its version number (default: the last one pushed)")
    submit.add_argument("--kernel-file", default="submission.csv", help="the file it writes")
    submit.add_argument("--file", default=None,
                        help="upload this submission.csv instead (only for competitions that "
                             "accept files; Severstal does not)")
    submit.add_argument("--message", default=None, help="description (code version + CV added)")
    submit.add_argument("--wait", action="store_true", help="wait for the public score")
    submit.add_argument("--poll-seconds", type=float, default=60.0,
                        help="seconds between checks")
    submit.add_argument("--timeout", type=float, default=12 * 3600.0,
                        help="longest wait in seconds (a code submission reruns the kernel: "
                             "hours); after it the submission stays queued on Kaggle")
    options.add_data_dir(submit)
    options.add_run_dir(submit)
    options.add_quiet(submit)

    download.set_defaults(handler=download_command)
    submit.set_defaults(handler=submit_command)


def _register_kernel(commands: argparse._SubParsersAction) -> None:
    upload = commands.add_parser("upload-weights", help="weights + post-processing -> dataset")
    upload.add_argument("--dataset", required=True, help="owner/slug of the Kaggle dataset")
    upload.add_argument("--checkpoints", nargs="+", default=None,
                        help="checkpoint files (default RUN_DIR/checkpoints/fold*/best.pt)")
    upload.add_argument("--title", default=None, help="dataset title (default from the slug)")
    upload.add_argument("--message", default=None, help="version notes")
    upload.add_argument("--public", action="store_true", help="make a new dataset public")
    upload.add_argument("--wait-seconds", type=float, default=1800.0,
                        help="longest wait for Kaggle to process the upload")
    options.add_run_dir(upload)
    options.add_quiet(upload)

    kernel = commands.add_parser("kernel", help="build the offline Kaggle kernel")
    kernel.add_argument("--kernel", required=True, help="owner/slug of the kernel")
    kernel.add_argument("--weights-dataset", required=True,
                        help="owner/slug of the Kaggle dataset holding the weights")
    kernel.add_argument("--title", default=None,
                        help="kernel title; must slugify to the slug (default made from it)")
    kernel.add_argument("--out-dir", default=None,
                        help="the kernel folder to write (default kernels/<slug>)")
    options.add_settings_flags(kernel, InferenceConfig, skip=("tta", "decode", "device", "quiet"))
    options.add_run_dir(kernel)

    push = commands.add_parser("push-kernel", help="push a built kernel (internet off)")
    push.add_argument("--kernel-dir", required=True, help="holds kernel-metadata.json + script")
    options.add_quiet(push)

    status = commands.add_parser("kernel-status", help="a kernel version's run status")
    status.add_argument("--kernel", required=True,
                        help="owner/slug (its latest version) or owner/slug/N (version N)")
    upload.set_defaults(handler=upload_weights_command)
    kernel.set_defaults(handler=kernel_command)
    push.set_defaults(handler=push_kernel_command)
    status.set_defaults(handler=kernel_status_command)


def download_command(args: argparse.Namespace) -> int:
    """Download and check the competition data."""
    from pipeline.kaggle import transfer

    transfer.download(config.resolve_data_dir(args.data_dir), quiet=args.quiet)
    return 0


def submit_command(args: argparse.Namespace) -> int:
    """Submit a kernel version (or a file) and optionally wait for the score."""
    from pipeline.kaggle import actions

    run = config.resolve_run_dir(args.run_dir)
    timing = {"wait": args.wait, "poll_seconds": args.poll_seconds, "timeout": args.timeout,
              "quiet": args.quiet}
    if args.file and (args.kernel or args.kernel_dir or args.kernel_version):
        raise ValueError("--file uploads a file; --kernel-dir/--kernel/--kernel-version submit "
                         "a kernel version: pass one or the other")
    if args.file:
        actions.submit(Path(args.file), config.resolve_data_dir(args.data_dir), run,
                       args.message, **timing)
    else:
        actions.submit_kernel_version(args.kernel, args.kernel_version,
                                      Path(args.kernel_dir) if args.kernel_dir else None,
                                      args.kernel_file, args.message, run, **timing)
    return 0


def upload_weights_command(args: argparse.Namespace) -> int:
    """Stage and upload the weights dataset."""
    from pipeline.kaggle import datasets

    checkpoints = [Path(p) for p in args.checkpoints] if args.checkpoints else None
    datasets.upload_weights(config.resolve_run_dir(args.run_dir), checkpoints, args.dataset,
                            args.title, args.message, args.public, args.quiet,
                            args.wait_seconds)
    return 0


def kernel_command(args: argparse.Namespace) -> int:
    """Build the offline kernel folder."""
    from pipeline.kaggle import api, pack

    api.check_ref(args.kernel, "--kernel", "kernel")
    out_dir = Path(args.out_dir or Path("kernels") / args.kernel.split("/")[1])
    script = pack.build(out_dir, args.kernel, args.title, args.weights_dataset,
                        config.code_version(), options.settings_from_args(InferenceConfig, args))
    print(f"wrote {script} ({script.stat().st_size / 1024:.0f} KiB) and "
          f"{out_dir / 'kernel-metadata.json'}")
    _print_recorded(config.resolve_run_dir(args.run_dir))
    return 0


def _print_recorded(run: config.RunPaths) -> None:
    """What the kernel will take from the uploaded postprocess.json, as the run has it now."""
    from pipeline.inference.postprocess import PostProcess

    if run.postprocess_json.is_file():
        recorded = PostProcess.load(run.postprocess_json).inference
        print(f"the kernel predicts with {', '.join(f'{k} {v}' for k, v in recorded.items())}, "
              f"as recorded in {run.postprocess_json} (upload-weights stages that file)")


def push_kernel_command(args: argparse.Namespace) -> int:
    """Push a built kernel."""
    from pipeline.kaggle import push

    push.push_kernel(Path(args.kernel_dir), args.quiet)
    return 0


def kernel_status_command(args: argparse.Namespace) -> int:
    """Print a kernel version's run status."""
    from pipeline.kaggle import push

    push.kernel_status(args.kernel)
    return 0
