"""Running a model: the one precision policy, padding to the stride, the default decision."""

import pytest
import torch

from pipeline.models import forward


@pytest.mark.parametrize("capability, amp, expected", [
    ((7, 5), "auto", torch.float16),    # T4: no fast bf16
    ((6, 0), "auto", torch.float16),    # P100
    ((8, 0), "auto", torch.bfloat16),   # A100
    ((9, 0), "auto", torch.bfloat16),   # H100
    ((9, 0), "fp16", torch.float16),
    ((7, 5), "bf16", torch.bfloat16),
    ((9, 0), "none", None),
])
def test_amp_policy_on_cuda(monkeypatch, capability, amp, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert forward.amp_dtype(amp, torch.device("cuda", 0)) is expected


@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "none"])
def test_cpu_runs_in_full_precision(amp):
    assert forward.amp_dtype(amp, torch.device("cpu")) is None


def test_unknown_amp_lists_the_valid_values():
    with pytest.raises(ValueError, match="'fp8'.*auto, none, bf16, fp16"):
        forward.amp_dtype("fp8", torch.device("cpu"))


def test_forward_padded_crops_back():
    model = torch.nn.Conv2d(3, 5, 1)
    images = torch.rand(1, 3, 40, 70)
    out, presence = forward.forward_padded(model, images)
    assert out.shape == (1, 5, 40, 70) and presence is None
    torch.testing.assert_close(out, model(images), atol=1e-6, rtol=0)


def test_forward_padded_pads_by_replication():
    seen = []
    model = torch.nn.Identity()
    model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    images = torch.arange(2 * 3, dtype=torch.float32).view(1, 1, 2, 3).expand(1, 3, 2, 3)
    forward.forward_padded(model, images, stride=4)
    assert seen[0].shape == (1, 3, 4, 4)
    assert torch.equal(seen[0][0, 0, 3], torch.tensor([3.0, 4.0, 5.0, 5.0]))
