"""ONNX export of a registered model, checked with onnxruntime before it is written.

The exported graph maps ``image``: ``(N, 3, h, w)`` float32 RGB in [0, 1], at the model's input
scale (h = round(256 * scale), w = round(1600 * scale)), to ``probs``: ``(N, 4, h, w)``
per-class probabilities of classes 1..4 (softmax head: channels 1..4 of the softmax over
background + 4 classes, so background = 1 - sum; sigmoid head: the sigmoid per class) and, for
a gated model, ``presence``: ``(N, 4)`` per-class presence probabilities. Normalisation,
the replicate padding to the stride and the crop back are inside the graph, as in
``forward.forward_padded``: a user resizes a JPEG and divides by 255, nothing more.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), which exports
every model in ``MODELS``; the TorchScript exporter fails on PSPNet with a dynamic batch
(adaptive_avg_pool2d). Opset 18 by default: the exporter's own (its ops are written for 18;
17 would go through ONNX's version converter, which fails on Pad), the oldest it writes and so
the widest read: onnxruntime since 1.14 (1.32 here runs 18 to 23 alike), TensorRT, OpenVINO.
The batch axis is dynamic; height and width are fixed: with them symbolic, torch.export of a
Unet on tf_efficientnet_lite0 (TF "same" padding computed from the input size) took 824 s
instead of 15 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import config, fileio
from pipeline.config import CLASS_IDS, HEIGHT, WIDTH
from pipeline.data import images
from pipeline.models.forward import forward_padded, probabilities
from pipeline.models.registry import ModelInfo, input_size, model_info

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# torch's exporter writes opset 18 ops and stamps newer opsets on them; ONNX's version
# converter has no way down to 17 for some (Pad), so 17 is refused rather than half-converted.
OPSETS = range(18, 24)
# fp32 graphs differ from PyTorch by reordered sums (ORT fuses BatchNorm into convolutions):
# measured <= 2e-5 on every registered model; 1e-3 leaves 50x room for deeper encoders and
# other CPUs, and flips a pixel only within 1e-3 of a threshold (cv tunes them in steps of 0.1).
DEFAULT_TOLERANCE = 1e-3
INPUT, OUTPUTS = "image", ("probs", "presence")


class Probabilities(nn.Module):
    """A pipeline model as the exported graph: ``(N, 3, h, w)`` [0, 1] -> ``probs``
    ``(N, 4, h, w)`` (and ``presence`` ``(N, 4)`` for a gated model); pads to the stride."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.info = model, model_info(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits, presence = forward_padded(self.model, image, self.info.stride)
        probs = probabilities(logits, self.info.head)
        return probs if presence is None else (probs, presence.sigmoid())


@dataclass(frozen=True)
class Exported:
    """What ``export_onnx`` wrote and how close onnxruntime came to PyTorch."""

    path: Path
    info: ModelInfo
    size: tuple[int, int]           # (h, w) of the input
    outputs: tuple[str, ...]
    opset: int
    max_abs_diff: dict[str, float]  # output -> max |onnxruntime - PyTorch| on the check image
    n_bytes: int


def model_size(info: ModelInfo) -> tuple[int, int]:
    """(h, w) the pipeline feeds a model: 256x1600 at its input scale, before the padding."""
    return round(HEIGHT * info.input_scale), round(WIDTH * info.input_scale)


def check_image(path: Path | None = None,
                test_images: Path | None = None) -> tuple[np.ndarray, str]:
    """``((256, 1600, 3) uint8 RGB, what it is)``: the image at ``path``, else the first of
    ``test_images`` if that folder has one, else a synthetic image of the realistic world
    (seed 0: the same pixels on every machine)."""
    if path is not None:
        return images.read_image(Path(path)), str(path)
    if test_images is not None and test_images.is_dir():
        names = images.list_images(test_images)
        if names:
            return images.read_image(test_images / names[0]), str(test_images / names[0])
    from pipeline.data import realistic, realistic_look

    rng = np.random.default_rng(0)
    gray = realistic_look.render_image(realistic.sample_layout(rng), rng)
    return np.repeat(gray[..., None], 3, axis=2), "a synthetic image (realistic world, seed 0)"


def as_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(1, 3, h, w)`` float32 in [0, 1] of an ``(H, W, 3)`` uint8 RGB image (area resize)."""
    resized = images.resize(image, tuple(size))
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def metadata(info: ModelInfo, opset: int) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: how to feed it and what comes out."""
    height, width = model_size(info)
    padded = input_size(info)
    return {
        "model": info.name, "encoder": info.encoder, "head": info.head,
        "gate": json.dumps(info.gate), "outputs": ",".join(OUTPUTS[:1 + info.gate]),
        "input": f"{INPUT}: (N, 3, {height}, {width}) float32 RGB in [0, 1], NCHW",
        "input_height": str(height), "input_width": str(width),
        "input_scale": repr(info.input_scale), "stride": str(info.stride),
        "padding": f"replicate to {padded[0]}x{padded[1]} and crop back, inside the graph",
        "normalisation": "inside the graph: (image - input_mean) / input_std",
        "input_mean": json.dumps(list(info.mean)), "input_std": json.dumps(list(info.std)),
        "classes": json.dumps([str(c) for c in CLASS_IDS]),
        "probs": "(N, 4, h, w) probabilities of classes 1..4" + (
            " (softmax over background + 4; background = 1 - sum)" if info.head == "softmax"
            else " (sigmoid per class)"),
        "presence": "(N, 4) presence probabilities of classes 1..4" if info.gate else "none",
        "decision": ("argmax over background and the classes" if info.head == "softmax"
                     else "probs > 0.5") + "; a run's tuned thresholds: its postprocess.json",
        "opset": str(opset), "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
        "pipeline_version": config.code_version(),
    }


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def reason(error: BaseException) -> str:
    """``Type: first line`` of the innermost cause of an exporter's or onnxruntime's error."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporter's own notes: torch.export prints the partial graph to stderr and
    logs warnings while it fails; the error raised then says why in one line."""
    torch_log, level = logging.getLogger("torch"), logging.getLogger("torch").level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_log.setLevel(level)


def to_onnx(model: nn.Module, opset: int = DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of ``model`` (dynamic batch, fixed h, w); ValueError naming the
    model and the exporter's reason when it cannot be exported."""
    info = model_info(model)
    if opset not in OPSETS:
        raise ValueError(f"--opset {opset} is not supported: choose {OPSETS[0]} to "
                         f"{OPSETS[-1]} (default {DEFAULT_OPSET})")
    outputs = list(OUTPUTS[:1 + info.gate])
    example = torch.rand(2, 3, *model_size(info))   # batch 2: a size-1 axis would be fixed
    try:
        with torch.no_grad(), quiet_exporter():
            program = torch.onnx.export(
                Probabilities(model).eval(), (example,), None, dynamo=True, verbose=False,
                opset_version=opset, input_names=[INPUT], output_names=outputs,
                dynamic_shapes=({0: "batch"},))
        proto = program.model_proto
    except Exception as error:  # torch.export and onnxscript raise many types
        raise ValueError(f"model {info.name} ({info.encoder}) cannot be exported to ONNX: "
                         f"{reason(error)}") from None
    written = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise ValueError(f"--opset {opset}: the exporter wrote {info.name} at opset "
                         f"{sorted(written)}; use --opset {DEFAULT_OPSET} or newer")
    return proto


def run_onnx(data: bytes, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The outputs of a serialised ONNX model on ``batch``, by onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT: batch})))


def run_torch(model: nn.Module, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The outputs of the exported graph's PyTorch original on ``batch``."""
    with torch.inference_mode():
        found = Probabilities(model).eval()(torch.from_numpy(batch))
    found = found if isinstance(found, tuple) else (found,)
    return {name: tensor.numpy() for name, tensor in zip(OUTPUTS, found)}


def compare(model: nn.Module, data: bytes, batch: np.ndarray) -> dict[str, float]:
    """Output -> max |onnxruntime - PyTorch| on ``batch``; ValueError when onnxruntime cannot
    load or run the model or its outputs differ in name or shape."""
    info = model_info(model)
    try:
        got = run_onnx(data, batch)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ValueError(f"onnxruntime cannot run the exported {info.name}: "
                         f"{reason(error)}") from None
    expected = run_torch(model, batch)
    shapes = {k: v.shape for k, v in got.items()}
    if shapes != {k: v.shape for k, v in expected.items()}:
        raise ValueError(f"the exported {info.name} gives outputs {shapes}, PyTorch "
                         f"{ {k: v.shape for k, v in expected.items()} }")
    return {name: float(np.abs(got[name] - expected[name]).max()) for name in expected}


def export_onnx(model: nn.Module, out: Path, image: np.ndarray, image_source: str = "",
                opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE) -> Exported:
    """Export ``model`` to ``out``: written (atomically) only when onnxruntime's outputs on
    ``image`` ((256, 1600, 3) uint8 RGB) are within ``tolerance`` of PyTorch's."""
    info = model_info(model)
    log.info("exporting %s (%s, %s head%s) to ONNX, opset %d", info.name, info.encoder,
             info.head, ", gated" if info.gate else "", opset)
    proto = to_onnx(model, opset)
    for key, value in metadata(info, opset).items():
        proto.metadata_props.add(key=key, value=value)
    diffs = compare(model, proto.SerializeToString(), as_input(image, model_size(info)))
    worst = max(diffs.values())
    if not worst <= tolerance:      # also refuses NaN
        raise ValueError(f"the ONNX export of {info.name} differs from PyTorch by {worst:.2e} "
                         f"on {image_source or 'the check image'} (bound {tolerance:g}); "
                         f"{out} not written: report it, or pass --tolerance")
    proto.metadata_props.add(key="check", value=f"max |onnxruntime - torch| {worst:.2e} on "
                                                f"{Path(image_source).name or 'an image'}")
    data = proto.SerializeToString()
    fileio.write_bytes(out, data)
    return Exported(Path(out), info, model_size(info), tuple(diffs), opset, diffs, len(data))


FORMATS = {"onnx": export_onnx}
