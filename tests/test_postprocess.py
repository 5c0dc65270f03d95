import dataclasses
import json
import re

import pytest
import torch

from pipeline.inference import postprocess
from pipeline.inference.postprocess import PostProcess
from pipeline.models.forward import default_masks, probabilities


def probs_with(blocks, shape=(1, 4, 8, 12)):
    """Probabilities that are 0 except value v on [rows, cols] of class c: (c, rows, cols, v)."""
    probs = torch.zeros(shape)
    for c, rows, cols, value in blocks:
        probs[0, c, rows, cols] = value
    return probs


def test_threshold_min_area_and_argmax():
    probs = probs_with([(0, slice(0, 2), slice(0, 3), 0.9),   # 6 px of class 1
                        (2, slice(4, 8), slice(0, 12), 0.6)])  # 48 px of class 3
    masks = postprocess.class_masks(probs, PostProcess(threshold=0.5))
    assert masks.sum(dim=(2, 3)).tolist() == [[6, 0, 48, 0]]
    masks = postprocess.class_masks(probs, PostProcess(threshold=0.7))
    assert masks.sum(dim=(2, 3)).tolist() == [[6, 0, 0, 0]]
    masks = postprocess.class_masks(probs, PostProcess(threshold=0.5, min_area=[10, 0, 48, 0]))
    assert masks.sum(dim=(2, 3)).tolist() == [[0, 0, 48, 0]]
    argmax = postprocess.class_masks(probs, PostProcess(head="softmax"))
    assert argmax.sum(dim=(2, 3)).tolist() == [[6, 0, 48, 0]]


def test_argmax_matches_softmax_argmax_of_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 16, 16) * 3
    expected = logits.argmax(dim=1)
    masks = default_masks(probabilities(logits, "softmax"), "softmax")
    labels = (masks * torch.arange(1, 5).view(1, 4, 1, 1)).sum(dim=1)
    assert torch.equal(labels, expected)
    assert masks.sum(dim=1).max() <= 1


def test_sigmoid_default_is_half():
    logits = torch.tensor([-1.0, 0.1, 2.0, -0.1]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    masks = default_masks(probabilities(logits, "sigmoid"), "sigmoid")
    assert masks[0, :, 0, 0].tolist() == [False, True, True, False]


def test_small_components_are_removed():
    probs = probs_with([(1, slice(0, 1), slice(0, 2), 0.9),     # 2 px component
                        (1, slice(4, 8), slice(4, 8), 0.9)])    # 16 px component
    masks = postprocess.class_masks(probs, PostProcess(threshold=0.5, min_component=3))
    assert masks[0, 1].sum() == 16 and not masks[0, 1, 0].any()


def test_json_roundtrip_and_errors(tmp_path):
    params = PostProcess(head="sigmoid", threshold=[0.4, 0.5, 0.6, 0.7], min_area=[1, 2, 3, 4])
    params.save(tmp_path / "pp.json")
    assert PostProcess.load(tmp_path / "pp.json") == params
    with pytest.raises(FileNotFoundError, match="make cv"):
        PostProcess.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"nope": 1}')
    with pytest.raises(ValueError, match="key 'head' is missing"):
        PostProcess.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="4 values"):
        PostProcess(min_area=[1, 2])
    with pytest.raises(ValueError, match="head"):
        PostProcess(head="tanh")


def test_the_gate_empties_classes_below_their_presence_threshold():
    probs = probs_with([(0, slice(0, 4), slice(0, 4), 0.9), (2, slice(0, 4), slice(0, 4), 0.9)])
    params = PostProcess(threshold=0.5, presence=[0.5, None, 0.5, None])
    masks = postprocess.class_masks(probs, params, torch.tensor([[0.4, 0.0, 0.6, 0.0]]))
    assert masks.sum(dim=(2, 3)).tolist() == [[0, 0, 16, 0]]
    with pytest.raises(ValueError, match="presence gate but the model has none"):
        postprocess.class_masks(probs, params)
    assert postprocess.class_masks(probs, params.replace(presence=None)).sum() == 32
    with pytest.raises(ValueError, match=r"presence values must be in \[0, 1\)"):
        PostProcess(presence=1.5)


VERSION_1 = {"head": "softmax", "threshold": [0.5, None, 0.3, 0.4], "min_area": [0, 600, 0, 0],
             "min_component": [0, 0, 0, 0], "presence": [None, None, 0.5, None]}


def test_a_version_1_file_loads_with_the_documented_inference(tmp_path):
    """postprocess.json as this pipeline wrote it before it had a format version."""
    (tmp_path / "pp.json").write_text(json.dumps(VERSION_1))
    params = PostProcess.load(tmp_path / "pp.json")
    assert params.inference == {"tta": "none", "decode": "scaled"}
    assert params.threshold == (0.5, None, 0.3, 0.4) and params.min_area == (0, 600, 0, 0)
    params.save(tmp_path / "new.json")
    written = json.loads((tmp_path / "new.json").read_text())
    assert written["version"] == postprocess.FORMAT_VERSION == 3
    assert written["checkpoints"] is None   # not recorded: nothing to check against
    assert PostProcess.load(tmp_path / "new.json") == params


@pytest.mark.parametrize("change, words", [
    ({"version": 2}, "key 'inference' is missing"),
    ({"version": 2, "inference": {"tta": "vflip", "decode": "scaled"}},
     "--tta 'vflip' is not valid"),
    ({"version": 2, "inference": {"tta": "none"}}, "inference must hold exactly tta, decode"),
    ({"version": 2, "inference": "hflip"}, "key 'inference' must be an object"),
    ({"version": 4, "inference": {"tta": "none", "decode": "scaled"}}, "newer than this"),
    ({"version": 3, "inference": {"tta": "none", "decode": "scaled"}},
     "key 'checkpoints' is missing"),
    ({"version": 3, "inference": {"tta": "none", "decode": "scaled"}, "checkpoints": "ab12"},
     "key 'checkpoints' must be a list of checkpoint digests"),
    ({"version": "2"}, "key 'version' must be a positive integer"),
    ({"inference": {"tta": "none", "decode": "full"}, "extra": 1}, "unknown key 'extra'"),
])
def test_a_key_its_version_must_have_is_refused_when_missing_or_bad(tmp_path, change, words):
    (tmp_path / "pp.json").write_text(json.dumps({**VERSION_1, **change}))
    with pytest.raises(ValueError, match=re.escape(words)) as error:
        PostProcess.load(tmp_path / "pp.json")
    assert str(tmp_path / "pp.json") in str(error.value)


def test_a_version_1_file_missing_a_version_1_key_is_refused(tmp_path):
    values = dict(VERSION_1)
    del values["min_area"]
    (tmp_path / "pp.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match="key 'min_area' is missing"):
        PostProcess.load(tmp_path / "pp.json")


def test_every_step_is_a_field_of_the_parameters():
    from pipeline.inference import steps

    names = [f.name for f in dataclasses.fields(PostProcess)]
    assert names == ["head", *(step.key for step in steps.STEPS), "inference", "checkpoints"]
    assert [s.key for s in steps.STEPS] == ["threshold", "min_component", "min_area", "presence"]
