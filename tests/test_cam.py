"""CAM and gradient maps: reference equivalence, contracts, hooks; localisation metrics."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import run_cli
from engine.explain.cam import activation_maps, class_activation_maps
from engine.explain.localize import box_iou, pointing_hit, read_bbox_list
from engine.models import ARCHS, build_model


@pytest.fixture(scope="module")
def models():
    """One model per architecture, built once for the module (4 classes, seeded)."""
    torch.manual_seed(0)
    return {arch: build_model(arch, 4, "scratch").eval() for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_study_cam_equals_gradcam_on_a_gap_linear_head(models, arch):
    x = torch.randn(2, 3, 64, 64)
    cam, _ = class_activation_maps(models[arch], x, relu=True)
    grad, _ = activation_maps(models[arch], x, method="gradcam")
    torch.testing.assert_close(cam, grad, atol=1e-5, rtol=0)


# the contract grid: CAM (one forward pass) at two batch sizes and sides; the gradient methods at one
GRID = [("cam", 1, 64), ("cam", 2, 96), ("gradcam", 1, 64), ("gradcam++", 1, 64)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,batch,size", GRID)
def test_maps_shapes_and_ranges(models, method, arch, batch, size):
    maps, logits = activation_maps(models[arch], torch.randn(batch, 3, size, size), method=method, classes=[0, 2])
    assert maps.shape == (batch, 2, size, size) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and logits.shape == (batch, 4)


def test_gradient_hooks_are_released(models):
    m = models["densenet121"]
    x = torch.randn(1, 3, 64, 64)
    for _ in range(3):
        activation_maps(m, x, method="gradcam")
    layer = m.cam_module()
    assert not layer._forward_hooks and not layer._backward_hooks and not getattr(layer, "_forward_pre_hooks", {})
    assert all(p.grad is None for p in m.parameters())  # no model-sized gradient buffers left behind


def test_shared_class_scale_keeps_maps_comparable():
    m = build_model("resnet50", 2, "scratch").eval()
    x = torch.randn(2, 3, 64, 64)
    x[1] *= 0.1  # a much weaker input
    per_image, _ = activation_maps(m, x, method="cam", scale="image")
    shared, _ = activation_maps(m, x, method="cam", scale="class")
    assert torch.allclose(per_image.amax(dim=(2, 3)), torch.ones(2, 2))
    assert torch.allclose(shared.amax(dim=(0, 2, 3)), torch.ones(2))
    with pytest.raises(ValueError, match="allowed: image, class, none"):
        activation_maps(m, x, scale="global")
    with pytest.raises(ValueError, match="unknown CAM method"):
        activation_maps(m, x, method="magic")


def test_pointing_game_and_iou_on_hand_made_maps():
    cam = np.zeros((100, 100))
    cam[20:40, 30:50] = 1.0  # a blob exactly where the box is
    assert pointing_hit(cam, (30, 20, 20, 20)) and box_iou(cam, (30, 20, 20, 20)) == pytest.approx(1.0)
    assert not pointing_hit(cam, (60, 60, 10, 10)) and box_iou(cam, (60, 60, 10, 10)) == 0.0
    assert box_iou(cam, (30, 20, 20, 40)) == pytest.approx(0.5)  # box twice the blob
    assert box_iou(np.zeros((10, 10)), (1, 1, 2, 2)) == 0.0


def test_bbox_list_spelling_and_trailing_columns(tmp_path):
    p = tmp_path / "BBox_List_2017.csv"
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                 "a.png,Infiltrate,1,2,3,4\n" "b.png,Mass,1,2,3\n" "c.png,Nodule,x,2,3,4\n" "d.png,Mass,10,20,30,40,,,\n")
    boxes, bad = read_bbox_list(p)
    assert boxes["label"].tolist() == ["Infiltration", "Mass"] and bad == 2


@pytest.mark.slow
def test_localize_and_cam_commands_on_the_pack(tmp_path, data_pack):
    env = {"CXR_CHECKPOINTS": str(tmp_path / "ck")}

    def run(*args):
        out = run_cli(*args, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    run("train", "--preset", "nih-densenet121-imagenet", "--init", "scratch", "--arch", "tiny",
        "--nih-root", str(data_pack / "nih"), "--epochs", "1", "--name", "n", "--image-size", "96", "--load-size", "96",
        "--max-images-per-split", "32",
        "--bootstrap", "10", "--num-workers", "0")
    files = set(os.listdir(data_pack / "nih" / "images"))
    boxes, _ = read_bbox_list(data_pack / "nih" / "BBox_List_2017.csv")
    expected = int(boxes["image"].isin(files).sum())
    for method in ("cam", "gradcam"):
        out = json.loads(run("localize", "n", "--method", method, "--json"))
        assert out["boxes_evaluated"] == expected == 12
        assert 0 <= out["per_class"]["overall"]["pointing"] <= 1 and out["too_coarse"] is None
    # the same model fed 64-px images has a 2x2 grid: reported as too coarse, never scored as 0 of 12
    from engine.explain.inference import LoadedModel
    from engine.explain.localize import localize

    coarse = LoadedModel(tmp_path / "ck" / "n" / "best.pt")
    coarse.image_size = 64
    out = localize(coarse, data_pack / "nih")
    assert out["boxes_evaluated"] == 0 and out["per_class"] == {} and "too coarse" in out["too_coarse"]
    image = data_pack / "nih" / "images" / "00000001_000.png"
    res = json.loads(run("cam", "n", "--image", str(image), "--class", "Cardiomegaly", "--out", str(tmp_path / "o"),
                         "--json"))
    assert len(res["probabilities"]) == 14 and len(res["overlays"]) == 1
    assert (tmp_path / "o" / "00000001_000_cam_Cardiomegaly.png").is_file()


def test_gallery_top_k_marks_true_and_false_positives():
    import pandas as pd

    from engine.explain.gallery import top_k
    from engine.runs.predictions import Predictions

    preds = Predictions.build(pd.DataFrame({"image": list("abcde")}), ["X"], [1, 1, 0, np.nan, 1],
                              [0.9, 0.2, 0.8, 0.5, 0.7])
    top = top_k(preds, "X", 3)
    assert top["image"].tolist() == ["a", "c", "e"] and top["outcome"].tolist() == ["TP", "FP", "TP"]
    with pytest.raises(ValueError, match="not in these predictions"):
        top_k(preds, "Y")
