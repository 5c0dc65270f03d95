"""Inference: checkpoints -> fold ensemble (+ flip TTA) -> probabilities -> masks -> RLE rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import checkpoint, data, distributed, postprocess, rle, submission
from pipeline.config import HEIGHT, WIDTH, TrainConfig
from pipeline.dataset import SteelDataset, Transform, collate, to_model_input
from pipeline.model import build_model, model_info

TTA_MODES = {"none": ((),), "hflip": ((), (3,)), "hvflip": ((), (3,), (2,), (2, 3))}


def load_models(paths: list[Path], device: torch.device,
                channels_last: bool = True) -> tuple[list[torch.nn.Module], TrainConfig]:
    """Eval-mode models of the checkpoints, refusing a mix of architectures or class counts."""
    if not paths:
        raise ValueError("no checkpoints given: train first or pass --checkpoints")
    models, first = [], None
    for path in paths:
        state = checkpoint.load(path)
        info, cfg = state.get("model_info"), state.get("config")
        if info is None or cfg is None:
            raise ValueError(f"{path} is not a checkpoint of this pipeline (no model_info)")
        if first is None:
            first = (path, info, TrainConfig.from_dict(cfg))
        elif (info["name"], info["head"], info["n_outputs"]) != (
                first[1]["name"], first[1]["head"], first[1]["n_outputs"]):
            raise ValueError(
                f"{path} holds {info['name']}/{info['head']} with {info['n_outputs']} outputs "
                f"but {first[0]} holds {first[1]['name']}/{first[1]['head']} with "
                f"{first[1]['n_outputs']}: ensemble checkpoints of one architecture only")
        model = build_model(info["name"], head=info["head"], encoder_weights="none")
        if model_info(model)["n_outputs"] != info["n_outputs"]:
            raise ValueError(f"{path}: {info['n_outputs']} outputs does not match model "
                             f"{info['name']} with head {info['head']}")
        model.load_state_dict(state["model"])
        model = model.to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        models.append(model)
    return models, first[2]


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def ensemble_probabilities(models: list[torch.nn.Module], images: torch.Tensor, head: str,
                           tta: str = "none") -> torch.Tensor:
    """``(N, 4, 256, 1600)`` class probabilities averaged over models and flips."""
    if tta not in TTA_MODES:
        raise ValueError(f"unknown --tta {tta!r}; valid: {sorted(TTA_MODES)}")
    total = None
    for model in models:
        for dims in TTA_MODES[tta]:
            flipped = images.flip(dims) if dims else images
            with _autocast(images.device):
                logits = postprocess.forward_padded(model, flipped)
            probs = postprocess.probabilities(postprocess.upsample(logits, (HEIGHT, WIDTH)), head)
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total.add_(probs)
    return total.div_(len(models) * len(TTA_MODES[tta]))


def iterate_probabilities(models: list[torch.nn.Module], loader: DataLoader, head: str,
                          device: torch.device, tta: str = "none", quiet: bool = False,
                          desc: str = "predict") -> Iterator[tuple[list[str], torch.Tensor,
                                                                   torch.Tensor]]:
    """Yield ``(image_ids, probs (B, 4, H, W), true masks (B, 4, H, W) or None)`` per batch."""
    for batch in tqdm(loader, desc=desc, unit="batch", disable=quiet or None):
        images = to_model_input(batch["image"], device)
        probs = ensemble_probabilities(models, images, head, tta)
        masks = batch["masks"].to(device) if "masks" in batch else None
        yield batch["image_id"], probs, masks


def make_loader(image_dir: Path, image_ids: list[str], cfg: TrainConfig, batch_size: int,
                workers: int, rles=None) -> DataLoader:
    """Full-image loader at the training scale; masks at 256x1600 when ``rles`` is given."""
    dataset = SteelDataset(image_dir, image_ids, rles, Transform(scale=cfg.scale),
                           full_masks=True)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())


def predict_rles(models: list[torch.nn.Module], cfg: TrainConfig, image_dir: Path,
                 image_ids: list[str], params: postprocess.PostProcess,
                 context: distributed.Context, batch_size: int = 8, workers: int = 2,
                 tta: str = "none", quiet: bool = False) -> dict[str, list[str]]:
    """``{image_id: [rle of class 1..4]}`` for this rank's share of the images."""
    if params.head != cfg.head:
        raise ValueError(f"post-processing is for the {params.head} head but the checkpoints "
                         f"have the {cfg.head} head: rerun `make cv` for these checkpoints")
    mine = image_ids[context.rank::context.world_size]
    loader = make_loader(image_dir, mine, cfg, batch_size, workers)
    out: dict[str, list[str]] = {}
    for ids, probs, _ in iterate_probabilities(models, loader, cfg.head, context.device, tta,
                                               quiet or not context.is_main):
        masks = postprocess.class_masks(probs, params).cpu().numpy()
        for image_id, image_masks in zip(ids, masks):
            out[image_id] = [rle.encode(mask) for mask in image_masks]
    return out


def write_submission(models: list[torch.nn.Module], cfg: TrainConfig, image_dir: Path,
                     sample: "submission.Sample", params: postprocess.PostProcess,
                     context: distributed.Context, out: Path, batch_size: int = 8,
                     workers: int = 2, tta: str = "none",
                     quiet: bool = False) -> tuple[dict[str, list[str]], object] | None:
    """Predict every sample image (sharded over ranks), write ``out`` on rank 0, validate it.

    Returns ``(rles by image, validated table)`` on rank 0, None on the other ranks.
    """
    rles = predict_rles(models, cfg, image_dir, sample.image_ids, params, context,
                        batch_size=batch_size, workers=workers, tta=tta, quiet=quiet)
    shards = distributed.gather(rles, context)
    if not context.is_main:
        return None
    merged = {k: v for shard in shards for k, v in shard.items()}
    submission.write(submission.build(sample, merged), out)
    return merged, submission.validate(out, sample)


def check_test_images(image_dir: Path, sample_ids: list[str], sample_path: Path) -> None:
    """Refuse a test directory whose images differ from the sample submission's ids."""
    present = set(data.list_images(image_dir))
    missing, extra = sorted(set(sample_ids) - present), sorted(present - set(sample_ids))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of {sample_path} are not in {image_dir} (e.g. "
            f"{', '.join(missing[:3])}): the test images and the sample file do not match")
    if extra:
        raise ValueError(f"{image_dir} holds {len(extra)} image(s) not in {sample_path} (e.g. "
                         f"{', '.join(extra[:3])}): use the sample file of this test set")
