import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import torchvision

from conftest import free_port
from engine.models.checkpoint import load_checkpoint, save_checkpoint
from engine.models import ARCHS, WeightsUnavailable, build_model, count_parameters, imagenet_cache_file, load_imagenet_state_dict
from engine.models.resnet import ResNet50


def test_own_resnet50_matches_torchvision_in_parameters_and_outputs():
    own, tv = ResNet50(), torchvision.models.resnet50()
    assert count_parameters(own) == count_parameters(tv) == 25_557_032
    assert [(k, v.shape) for k, v in own.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]
    own.load_state_dict(tv.state_dict())
    own.eval(), tv.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(own(x), tv(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch,size", [(1, 64), (3, 96)])
def test_adapter_contract(arch, batch, size):
    m = build_model(arch, 5, "scratch").eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape[0] == batch and f.shape[2:] == (size // 32, size // 32)
        assert f.min() >= 0  # post-ReLU, as CAM needs
        assert m(x).shape == (batch, 5)
        assert m.pooled_features(x).shape == (batch, m.num_features)
        torch.testing.assert_close(m.forward_head(f), m(x))
    m.reset_classifier(2)
    assert m(x).shape == (batch, 2)


def test_densenet_features_keep_gradients():
    m = build_model("densenet121", 3, "scratch")
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    f = m.forward_features(x)
    f.retain_grad()
    m.forward_head(f)[0, 1].backward()
    assert f.grad is not None and x.grad is not None


def test_imagenet_offline_error_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailable) as ei:
        load_imagenet_state_dict("densenet121", url=f"http://127.0.0.1:{free_port()}/densenet121-a639ec97.pth")
    assert str(imagenet_cache_file("densenet121")) in str(ei.value)
    assert "densenet121-a639ec97.pth" in str(ei.value)


def test_imagenet_weights_come_from_the_hub_cache_or_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = torchvision.models.resnet50()
    served = tmp_path / "www"
    served.mkdir()
    torch.save(reference.state_dict(), served / "resnet50-0676ba61.pth")
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        state = load_imagenet_state_dict("resnet50", url=f"http://127.0.0.1:{srv.server_port}/resnet50-0676ba61.pth")
    finally:
        srv.shutdown()
    assert imagenet_cache_file("resnet50").is_file()  # now cached where torchvision looks
    torch.testing.assert_close(state["conv1.weight"], reference.state_dict()["conv1.weight"])
    for arch in ("resnet50", "resnet50_own"):  # the own ResNet-50 takes torchvision's weights too
        m = build_model(arch, 14, "imagenet")
        torch.testing.assert_close(m.body.conv1.weight, reference.conv1.weight)
        assert m.classifier.out_features == 14


def test_transfer_keeps_the_backbone_and_swaps_the_head(tmp_path):
    src = build_model("densenet121", 14, "scratch")
    save_checkpoint({"model": src.state_dict(), "arch": "densenet121", "class_names": ["x"] * 14}, tmp_path / "best.pt")
    dst = build_model("densenet121", 1, str(tmp_path / "best.pt"))
    torch.testing.assert_close(dst.body.features.conv0.weight, src.body.features.conv0.weight)
    assert dst.classifier.out_features == 1
    with pytest.raises(ValueError, match="densenet121 model, not resnet50"):
        build_model("resnet50", 1, str(tmp_path / "best.pt"))


def test_malicious_pickle_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('os').system('touch " + str(tmp_path / "pwned") + "')",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    from engine.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_write_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "last.pt")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 2}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "last.pt"]  # cache: the fixture's own folder


def test_torch_s_full_disk_error_is_reported_as_no_space_left(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as 'unexpected pos': the run records what happened."""
    import collections
    import errno

    import engine.models.checkpoint as ck_mod

    def full(obj, fh, *a, **k):
        fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed / unexpected pos 64 vs 0")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(ck_mod.torch, "save", full)
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OSError) as info:
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    assert "last.pt" in str(info.value) and [p.name for p in tmp_path.iterdir()] == ["cache"]  # the fixture's
