"""weakseg.models: output shapes of every network, pretrained files, errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
import torchvision.models._api as weights_api

from weakseg.errors import DataError, MissingFileError
from weakseg.models import MODEL_NAMES, UNet, adapt_first_conv, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_is_logits_at_input_size(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 41))  # odd size: not a multiple of any stride
    assert out.shape == (1, 3, 33, 41)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus_mobilenet_v3", "lraspp_mobilenet_v3"])
def test_gray_input_train_mode_backward(name: str) -> None:
    model = build_model(name, num_classes=4, in_channels=1).train()
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 4, 32, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("name", "stride", "expected"),
    [
        ("deeplabv3plus_mobilenet_v2", 16, 4),
        ("deeplabv3plus_mobilenet_v2", 8, 8),
        ("deeplabv3plus_resnet50", 8, 8),
        ("deeplabv3_mobilenet_v3", None, 4),
        ("deeplabv3_resnet50", None, 8),
    ],
)
def test_output_stride(name: str, stride: int | None, expected: int) -> None:
    model = build_model(name, 2, output_stride=stride).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
    assert features["out"].shape[-1] == expected  # 64 / output_stride
    if "low" in features:
        assert features["low"].shape[-1] == 16  # stride 4


def test_unet_any_size_and_errors() -> None:
    net = UNet(1, 2, base_channels=4, depth=2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 7, 13)).shape == (1, 2, 7, 13)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        UNet(1, 2, depth=0)


def test_pretrained_file_round_trip(tmp_path) -> None:
    source = build_model("unet", 4, in_channels=1)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.uniform_(-1, 1)
    torch.save(source.state_dict(), tmp_path / "state.pth")
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    ddp = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(ddp, tmp_path / "ddp.pth")
    for name in ("state.pth", "checkpoint.pth", "ddp.pth"):
        loaded = build_model("unet", 4, in_channels=1, pretrained=tmp_path / name)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), (name, key)


def test_pretrained_backbone_file_adapts_first_conv(tmp_path) -> None:
    imagenet = torchvision.models.mobilenet_v2(weights=None)  # stands in for ImageNet weights
    torch.save(imagenet.state_dict(), tmp_path / "mobilenet_v2.pth")
    model = build_model(
        "deeplabv3plus_mobilenet_v2",
        2,
        in_channels=1,
        pretrained=str(tmp_path / "mobilenet_v2.pth"),
    )
    own = model.backbone.state_dict()
    theirs = imagenet.state_dict()
    assert torch.equal(own["features.1.conv.0.0.weight"], theirs["features.1.conv.0.0.weight"])
    first = theirs["features.0.0.weight"]  # (32, 3, 3, 3)
    assert torch.allclose(own["features.0.0.weight"], first.sum(dim=1, keepdim=True))


def test_adapt_first_conv_keeps_gray_response() -> None:
    weight = torch.randn(8, 3, 3, 3)
    gray = torch.rand(1, 1, 5, 5)
    rgb = torch.nn.functional.conv2d(gray.expand(1, 3, 5, 5), weight)
    for channels in (1, 2):
        adapted = adapt_first_conv(weight, channels)
        out = torch.nn.functional.conv2d(gray.expand(1, channels, 5, 5), adapted)
        torch.testing.assert_close(out, rgb)


def test_build_model_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown model 'unett'; known models: unet"):
        build_model("unett", 2)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        build_model("unet", 0)
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1, got 0"):
        build_model("unet", 2, in_channels=0)
    with pytest.raises(
        ValueError, match="output_stride must be 8 or 16 for 'fcn_resnet50', got 32"
    ):
        build_model("fcn_resnet50", 2, output_stride=32)
    with pytest.raises(ValueError, match="'unet' has a fixed architecture; output_stride"):
        build_model("unet", 2, output_stride=16)
    with pytest.raises(ValueError, match="'unet' has no ImageNet backbone"):
        build_model("unet", 2, pretrained="imagenet")
    with pytest.raises(MissingFileError, match=r"pretrained weights file not found: .*nope.pth"):
        build_model("unet", 2, pretrained=tmp_path / "nope.pth")


def test_pretrained_file_mismatch_errors(tmp_path) -> None:
    torch.save(build_model("unet", 3).state_dict(), tmp_path / "k3.pth")
    with pytest.raises(DataError, match=r"k3.pth has the keys of this model but other shapes"):
        build_model("unet", 4, pretrained=tmp_path / "k3.pth")
    with pytest.raises(DataError, match=r"k3.pth does not match the ResNetBackbone: missing"):
        build_model("fcn_resnet50", 4, pretrained=tmp_path / "k3.pth")
    torch.save({"model": build_model("unet", 3).state_dict()}, tmp_path / "ok.pth")
    with pytest.raises(DataError, match=r"does not match the UNet: missing keys"):
        torch.save({"weight": torch.zeros(1)}, tmp_path / "foreign.pth")
        build_model("unet", 3, pretrained=tmp_path / "foreign.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(DataError, match=r"cannot read pretrained weights file .*text.pth"):
        build_model("unet", 3, pretrained=tmp_path / "text.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(DataError, match=r"list.pth does not hold a state dict of tensors"):
        build_model("unet", 3, pretrained=tmp_path / "list.pth")


def test_unet_channels_last_same_function_and_gradients() -> None:
    """The channels-last U-Net is the same function with the same weight gradients as the NCHW
    one (float64: other convolution algorithms, equal to rounding), returns NCHW logits, keeps
    its weights NHWC through ``load_state_dict``, and is selectable through ``build_model``."""
    torch.manual_seed(0)
    plain = UNet(1, 4).double()
    fast = build_model("unet", 4, in_channels=1, options={"channels_last": True}).double()
    fast.load_state_dict(plain.state_dict())
    weight = fast.encoder[1][0].weight  # [32, 16, 3, 3]: NHWC differs from NCHW
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    x = torch.randn(2, 1, 37, 45, dtype=torch.float64)
    out_plain, out_fast = plain(x), fast(x)
    assert out_fast.is_contiguous() and out_fast.shape == (2, 4, 37, 45)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-10, atol=1e-10)
    out_plain.square().sum().backward()
    out_fast.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_imagenet_weights_that_cannot_be_fetched_are_one_named_error(monkeypatch) -> None:
    def offline(url: str, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    with pytest.raises(MissingFileError) as caught:
        build_model("deeplabv3plus_mobilenet_v2", 3, pretrained="imagenet")
    message = str(caught.value)
    assert "MobileNet_V2_Weights.IMAGENET1K_V1 of mobilenet_v2" in message
    assert "Name or service not known" in message
    assert "set pretrained to the path of a local weights file" in message
