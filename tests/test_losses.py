"""Losses on tiny literal tensors: known values, torch references, errors and gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segmentation_models_pytorch import losses as smp_losses

from pipeline.data.labels import label_map
from pipeline.models.losses import LOSSES, build_loss, soft_dice_loss

HEAD_OF = {name: spec.heads[0] for name, spec in LOSSES.items()}
PAIRS = [(name, head) for name, spec in sorted(LOSSES.items()) for head in spec.heads]


def _masks() -> torch.Tensor:
    """``(2, 4, 2, 3)`` uint8: class 1 and 3 overlap at (0, 0, 0), class 4 alone at (1, 1, 2)."""
    masks = torch.zeros(2, 4, 2, 3, dtype=torch.uint8)
    masks[0, 0, 0, :2] = 1
    masks[0, 2, 0, 0] = 1
    masks[1, 3, 1, 2] = 1
    return masks


def _logits(head: str, seed: int = 0) -> torch.Tensor:
    channels = 5 if head == "softmax" else 4
    return torch.randn(2, channels, 2, 3, generator=torch.Generator().manual_seed(seed))


def test_label_map_highest_class_wins():
    labels = label_map(_masks())
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[3, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 4]]]


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, (2, 4, 3, 5), elements=st.integers(0, 1)))
def test_label_map_matches_reference(masks):
    expected = np.zeros((2, 3, 5), dtype=np.int64)
    for class_id in range(1, 5):  # later classes overwrite: the highest id wins
        expected[masks[:, class_id - 1] == 1] = class_id
    assert np.array_equal(label_map(torch.from_numpy(masks)).numpy(), expected)


def test_ce_equals_torch_cross_entropy():
    logits = _logits("softmax")
    expected = F.cross_entropy(logits, label_map(_masks()))
    torch.testing.assert_close(build_loss("ce")(logits, _masks()), expected)


def test_class_weights_change_ce():
    logits, weights = _logits("softmax"), [0.1, 1.0, 2.0, 3.0, 4.0]
    weighted = build_loss("ce", class_weights=weights)(logits, _masks())
    expected = F.cross_entropy(logits, label_map(_masks()), weight=torch.tensor(weights))
    torch.testing.assert_close(weighted, expected)
    assert not torch.isclose(weighted, build_loss("ce")(logits, _masks()))


def test_bce_equals_torch_and_pos_weight_changes_it():
    logits, targets = _logits("sigmoid"), _masks().float()
    torch.testing.assert_close(build_loss("bce", "sigmoid")(logits, _masks()),
                               F.binary_cross_entropy_with_logits(logits, targets))
    pos_weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = F.binary_cross_entropy_with_logits(logits, targets,
                                                  pos_weight=pos_weight.view(4, 1, 1))
    torch.testing.assert_close(build_loss("bce", "sigmoid", pos_weight=pos_weight)(
        logits, _masks()), expected)


def test_dice_hand_computed_sigmoid():
    # p = 0.5 on a 1x2 image, class 1 covers one pixel: class 1 (2*0.5 + 1) / (1 + 1 + 1) = 2/3,
    # empty classes (0 + 1) / (1 + 0 + 1) = 1/2; loss = 1 - (2/3 + 3/2) / 4 = 11/24.
    masks = torch.tensor([[[[1, 0]], [[0, 0]], [[0, 0]], [[0, 0]]]], dtype=torch.uint8)
    loss = build_loss("bce+dice", "sigmoid", dice_weight=1.0)(torch.zeros(1, 4, 1, 2), masks)
    assert loss.item() == pytest.approx(np.log(2) + 11 / 24, abs=1e-6)


def test_dice_hand_computed_softmax():
    # p = 0.2 everywhere: class 1 (0.4 + 1) / (0.4 + 1 + 1) = 7/12, empty ones 1 / 1.4 = 5/7;
    # loss = 1 - (7/12 + 15/7) / 4 = 107/336.
    masks = torch.tensor([[[[1, 0]], [[0, 0]], [[0, 0]], [[0, 0]]]], dtype=torch.uint8)
    loss = build_loss("dice")(torch.zeros(1, 5, 1, 2), masks)
    assert loss.item() == pytest.approx(107 / 336, abs=1e-6)


@pytest.mark.parametrize("name, head", PAIRS)
def test_perfect_logits_give_near_zero_loss(name, head):
    masks = _masks()
    if head == "softmax":
        logits = 40.0 * F.one_hot(label_map(masks), 5).permute(0, 3, 1, 2).float() - 20.0
    else:
        logits = 40.0 * masks.float() - 20.0
    assert build_loss(name, head)(logits, masks).item() == pytest.approx(0.0, abs=1e-4)


def test_soft_dice_formula_per_image_and_class():
    probs = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
    targets = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    # (2*0.5 + 1) / (0.5 + 1 + 1) = 0.8 and 1 / (0.25 + 1) = 0.8
    assert soft_dice_loss(probs, targets).item() == pytest.approx(0.2)


@pytest.mark.parametrize("name, head", [("ce+dice", "softmax"), ("bce+dice", "sigmoid")])
def test_combined_is_weighted_sum(name, head):
    logits, masks = _logits(head), _masks()
    pixel = build_loss(name.split("+")[0], head)(logits, masks)
    dice = soft_dice_loss(*_probs_and_targets(logits, masks, head))
    torch.testing.assert_close(build_loss(name, head)(logits, masks), pixel + dice)
    torch.testing.assert_close(build_loss(name, head, dice_weight=0.5)(logits, masks),
                               pixel + 0.5 * dice)


def _probs_and_targets(logits, masks, head):
    if head == "sigmoid":
        return logits.sigmoid(), masks.float()
    one_hot = F.one_hot(label_map(masks), 5).permute(0, 3, 1, 2).float()
    return logits.softmax(dim=1)[:, 1:], one_hot[:, 1:]


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32])
@pytest.mark.parametrize("name, head", PAIRS)
def test_mask_dtypes_agree_and_gradients_flow(name, head, dtype):
    logits = _logits(head).requires_grad_(True)
    loss = build_loss(name, head)(logits, _masks().to(dtype))
    reference = build_loss(name, head)(logits, _masks())
    torch.testing.assert_close(loss, reference)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_bf16_logits_give_float32_loss():
    loss = build_loss("ce+dice")(_logits("softmax").bfloat16(), _masks())
    assert loss.dtype == torch.float32


def test_errors():
    with pytest.raises(ValueError, match="bce.*ce\\+dice.*dice"):
        build_loss("tversky")
    with pytest.raises(ValueError, match="'bce'.*sigmoid.*'softmax'.*ce -> softmax"):
        build_loss("bce", "softmax")
    with pytest.raises(ValueError, match="'ce'.*softmax.*'sigmoid'.*bce -> sigmoid"):
        build_loss("ce", "sigmoid")
    with pytest.raises(ValueError, match="class_weights.*5"):
        build_loss("ce", class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="pos_weight"):
        build_loss("ce", pos_weight=[1.0] * 4)
    with pytest.raises(ValueError, match="class_weights"):
        build_loss("bce", "sigmoid", class_weights=[1.0] * 5)
    with pytest.raises(ValueError, match="no Dice term"):
        build_loss("ce", dice_weight=0.5)
    with pytest.raises(ValueError, match="logits \\(2, 4, 2, 3\\)"):
        build_loss("ce")(_logits("sigmoid"), _masks())


def test_the_gated_loss_adds_bce_on_image_level_labels():
    torch.manual_seed(0)
    logits, presence = torch.randn(2, 5, 8, 8), torch.randn(2, 4)
    masks = torch.zeros(2, 4, 8, 8)
    masks[0, 2, 1, 1] = 1                     # image 0 has class 3, image 1 nothing
    pixel = build_loss("ce", "softmax")
    gated = build_loss("ce", "softmax", cls_weight=0.25)
    labels = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    expected = pixel(logits, masks) + 0.25 * F.binary_cross_entropy_with_logits(presence, labels)
    torch.testing.assert_close(gated(logits, masks, presence), expected)
    with pytest.raises(ValueError, match="needs the model's presence logits"):
        gated(logits, masks)
    with pytest.raises(ValueError, match="no term for them"):
        pixel(logits, masks, presence)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_focal_and_lovasz_are_smps_on_tiny_tensors(head):
    logits, masks = _logits(head, seed=3), _masks()
    if head == "softmax":
        targets = label_map(masks)
        focal = smp_losses.FocalLoss("multiclass", gamma=2.0)(logits, targets)
        lovasz = smp_losses.LovaszLoss("multiclass")(logits, targets)
    else:
        focal = smp_losses.FocalLoss("multilabel", gamma=2.0)(logits, masks.float())
        lovasz = smp_losses.LovaszLoss("binary", per_image=True)(  # per image and class
            logits.flatten(0, 1), masks.float().flatten(0, 1))
    torch.testing.assert_close(build_loss("focal", head)(logits, masks), focal)
    torch.testing.assert_close(build_loss("lovasz", head)(logits, masks), lovasz)
    dice = soft_dice_loss(*_probs_and_targets(logits, masks, head))
    torch.testing.assert_close(build_loss("focal+dice", head, pixel_weight=0.6,
                                          dice_weight=0.4)(logits, masks), 0.6 * focal + 0.4 * dice)
    assert build_loss("focal", head, focal_gamma=0.0)(logits, masks) > focal  # gamma damps


def test_the_first_places_weighting():
    """0.75 BCE(pos_weight 2, 2, 1, 1.5) + 0.25 Dice, by hand."""
    logits, masks = _logits("sigmoid", seed=5), _masks()
    pos_weight = torch.tensor([2.0, 2.0, 1.0, 1.5])
    bce = F.binary_cross_entropy_with_logits(logits, masks.float(),
                                             pos_weight=pos_weight.view(4, 1, 1))
    dice = soft_dice_loss(logits.sigmoid(), masks.float())
    loss = build_loss("bce+dice", "sigmoid", pos_weight=pos_weight, pixel_weight=0.75,
                      dice_weight=0.25)(logits, masks)
    torch.testing.assert_close(loss, 0.75 * bce + 0.25 * dice)


def test_weight_errors():
    with pytest.raises(ValueError, match="no pixel-wise term"):
        build_loss("dice", pixel_weight=0.5)
    with pytest.raises(ValueError, match="dice_weight must be >= 0"):
        build_loss("ce+dice", dice_weight=-1.0)
    with pytest.raises(ValueError, match="pos_weight.*BCE"):
        build_loss("focal", "sigmoid", pos_weight=[1.0] * 4)
