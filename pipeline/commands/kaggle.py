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
    options.add_accept_postprocess(upload)
    upload.add_argument("--wait-seconds", type=float, default=1800.0,
                        help="longest wait for Kaggle to process the upload")
    options.add_run_dir(upload, ensemble=True)
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
    options.add_run_dir(kernel, ensemble=True)

    plan = commands.add_parser(
        "plan-kernel", help="the kernel's run time and OOF score for each choice of members "
        "x TTA, and which fit the time limit",
        description="Rates are measured here (CPU, or --device cuda); --gpu-bench adds the "
        "GPU estimates of a `make bench-gpu` JSON. Writes RUN_DIR/reports/kernel-plan.json.")
    options.add_data_dir(plan)
    options.add_run_dir(plan, ensemble=True)
    plan.add_argument("--n-images", type=int, default=5506,
                      help="test images the kernel predicts (default 5506, Kaggle's test set)")
    plan.add_argument("--limit", type=float, default=3600.0,
                      help="the kernel's time limit in seconds (default 3600)")
    plan.add_argument("--margin", type=float, default=300.0,
                      help="seconds kept free of the limit (default 300)")
    plan.add_argument("--images-per-fold", type=int, default=None,
                      help="score the choices on the first N validation images of each fold "
                           "(default: all)")
    plan.add_argument("--gpu-bench", default=None,
                      help="a `make bench-gpu` JSON (gpu_bench.json): GPU estimates per "
                           "architecture")
    options.add_settings_flags(plan, InferenceConfig, skip=("tta",))
    plan.set_defaults(handler=plan_kernel_command)

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
    from pipeline.kaggle import download

    done = download.download(config.resolve_data_dir(args.data_dir), quiet=args.quiet)
    if done.already:
        print(f"{done.root} already holds the competition data ({done.marker}): nothing to do")
    else:
        print(f"wrote {done.root}: {done.train_images} training and {done.test_images} test "
              "images, train.csv, sample_submission.csv")
    return 0


def submit_command(args: argparse.Namespace) -> int:
    """Submit a kernel version (or a file) and optionally wait for the score."""
    from pipeline.kaggle import submissions

    run = config.resolve_run_dir(args.run_dir)
    if args.file and (args.kernel or args.kernel_dir or args.kernel_version):
        raise ValueError("--file uploads a file; --kernel-dir/--kernel/--kernel-version submit "
                         "a kernel version: pass one or the other")
    if args.file:
        done = submissions.submit_file(Path(args.file), config.resolve_data_dir(args.data_dir),
                                       run, args.message, args.quiet)
        print(f"submitted {done.file} ({done.rows} rows) as submission {done.ref}: "
              f"{done.description}")
    else:
        done = submissions.submit_kernel_version(
            args.kernel, args.kernel_version, Path(args.kernel_dir) if args.kernel_dir else None,
            args.kernel_file, args.message, run)
        print(f"submitted {done.file} of {done.kernel} version {done.version} as submission "
              f"{done.ref}: {done.description}; Kaggle now reruns the kernel on the hidden test "
              "set (up to its run-time limit, plus a queue)")
    if args.wait:
        score = submissions.wait_for_score(done.ref, args.poll_seconds, args.timeout, args.quiet)
        if score.public_score is not None:
            print(f"submission {score.ref}: public score {score.public_score}")
        else:
            print(f"submission {score.ref}: still {score.status} on Kaggle; see "
                  f"{submissions.SUBMISSIONS_URL}")
    return 0


def upload_weights_command(args: argparse.Namespace) -> int:
    """Stage and upload the weights dataset."""
    from pipeline.kaggle import weights

    from pipeline.inference import ensembles

    from pipeline.training import lock

    checkpoints = [Path(p) for p in args.checkpoints] if args.checkpoints else None
    source = ensembles.resolve(args.run_dir)
    if checkpoints:   # nothing staged or sent while a fold's best.pt may be replaced
        lock.check_not_training(p.parent for p in checkpoints)
    else:
        lock.check_runs_not_training(m.run for m in source.members)
    done = weights.upload_weights(source, checkpoints,
                                  args.dataset, args.title, args.message, args.public,
                                  args.quiet, args.wait_seconds, args.accept_postprocess)
    print(f"{done.verb} {done.dataset} with {', '.join(done.files)}: {done.url}")
    if done.ready:
        print(f"{done.dataset} is ready: `make kernel push-kernel` can attach it")
    return 0


def kernel_command(args: argparse.Namespace) -> int:
    """Build the offline kernel folder."""
    from pipeline.kaggle import kernels

    built = kernels.build(args.kernel, args.weights_dataset, args.title,
                          Path(args.out_dir) if args.out_dir else None,
                          options.settings_from_args(InferenceConfig, args),
                          config.resolve_run_dir(args.run_dir))
    print(f"wrote {built.script} ({built.kib:.0f} KiB) and {built.metadata}")
    if built.recorded is not None:
        print(f"the kernel predicts with "
              f"{', '.join(f'{k} {v}' for k, v in built.recorded.items())}, as recorded in "
              f"{built.postprocess} (upload-weights stages that file)")
    return 0


def push_kernel_command(args: argparse.Namespace) -> int:
    """Push a built kernel."""
    from pipeline.kaggle import kernels

    pushed = kernels.push_kernel(Path(args.kernel_dir), args.quiet)
    print(f"pushed {pushed.kernel} version {pushed.version}: {pushed.url} (Kaggle runs it now; "
          f"`make kernel-status` follows it, `make submit` submits it once COMPLETE)")
    return 0


def kernel_status_command(args: argparse.Namespace) -> int:
    """Print a kernel version's run status."""
    from pipeline.kaggle import kernels

    found = kernels.kernel_status(args.kernel)
    print(f"{found.ref}: {found.status}" + (f": {found.failure}" if found.failure else ""))
    return 0


def plan_kernel_command(args: argparse.Namespace) -> int:
    """Print the plan of every members x TTA choice."""
    import json

    from pipeline.inference import plan

    bench = None
    if args.gpu_bench:
        try:
            bench = json.loads(Path(args.gpu_bench).read_text())
            bench["models"], bench["height"], bench["width"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"--gpu-bench {args.gpu_bench} is not a `make bench-gpu` JSON "
                             f"({error!r}): pass the gpu_bench.json it wrote") from None
    if args.images_per_fold is not None and args.images_per_fold < 1:
        raise ValueError(f"--images-per-fold {args.images_per_fold}: pass 1 or more")
    from pipeline.inference import ensembles
    from pipeline.training import lock

    lock.check_runs_not_training(m.run for m in ensembles.resolve(args.run_dir).members)
    settings = options.settings_from_args(InferenceConfig, args)
    report = plan.plan_kernel(args.run_dir, args.data_dir, settings, args.n_images, args.limit,
                              args.margin, args.images_per_fold, bench)
    print(plan.format_plan(report))
    print(f"wrote {Path(report['source']) / 'reports' / 'kernel-plan.json'}")
    return 0
