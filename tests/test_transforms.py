import numpy as np
import pytest
import torch

from engine.data import build_transform
from engine.data.transforms import ClassificationPresetEval, ClassificationPresetTrain

NO_AUG = dict(rotation_degrees=0, brightness=0, contrast=0, translate=0, scale=(1, 1))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [64, 224])
@pytest.mark.parametrize("src", [(256, 256), (300, 180), (40, 40)])
def test_presets_output_normalised_three_identical_channels(train, size, src):
    img = np.random.default_rng(0).integers(0, 256, src, dtype=np.uint8)
    out = build_transform(train, size=size)(img)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    raw = out * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[0], raw[2], atol=1e-5)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_eval_is_deterministic_and_train_is_random():
    img = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    ev = build_transform(False, size=64)
    assert torch.equal(ev(img), ev(img))
    tr = build_transform(True, size=64)
    torch.manual_seed(0)
    assert not torch.equal(tr(img), tr(img))


def test_train_without_augmentation_equals_eval_and_flip_is_a_mirror():
    img = np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)
    plain = ClassificationPresetTrain(size=64, hflip_prob=0, **NO_AUG)(img)
    flipped = ClassificationPresetTrain(size=64, hflip_prob=1, **NO_AUG)(img)
    assert torch.equal(plain, ClassificationPresetEval(size=64)(img))
    assert torch.equal(flipped, plain.flip(-1))


def test_rotation_stays_within_20_degrees():
    img = np.zeros((101, 101), np.uint8)
    img[:, 50] = 255  # a vertical line through the centre
    tr = ClassificationPresetTrain(size=101, hflip_prob=0, rotation_degrees=20, brightness=0, contrast=0, translate=0,
                                   scale=(1, 1))
    torch.manual_seed(0)
    for _ in range(20):
        out = tr(img)[0].numpy()
        ys, xs = np.nonzero(out > out.min() + 1.0)
        slope = np.polyfit(ys, xs, 1)[0]
        assert abs(np.degrees(np.arctan(slope))) <= 20.5


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="study, flip, none"):
        build_transform(True, augment="heavy")


@pytest.mark.parametrize("train", [True, False])
def test_uint8_pipeline_normalised_on_the_device_equals_the_float_pipeline(train):
    """The trainer's loader ships uint8 gray; normalise_batch must give exactly what the per-image
    float preset gives for the same random draw."""
    from engine.data.transforms import normalise_batch

    imgs = [np.random.default_rng(k).integers(0, 256, (300, 260), dtype=np.uint8) for k in range(4)]
    torch.manual_seed(3)
    floats = torch.stack([build_transform(train, size=64)(im) for im in imgs])
    torch.manual_seed(3)
    u8 = torch.stack([build_transform(train, size=64, normalise=False)(im) for im in imgs])
    assert u8.dtype == torch.uint8 and u8.shape == (4, 1, 64, 64)
    assert torch.allclose(normalise_batch(u8), floats, atol=1e-6)
    assert normalise_batch(floats) is floats  # already normalised batches pass through
