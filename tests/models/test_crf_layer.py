"""weakseg.models.crf_layer: network + CRF-as-RNN, its raw image, gradients, state dict, errors."""

from __future__ import annotations

import pytest
import torch

from weakseg.crf import CRFasRNN
from weakseg.data import SyntheticDataset
from weakseg.data.transforms import denormalize
from weakseg.losses import partial_cross_entropy
from weakseg.models import CRFLayerModel, UNet, build_crf_layer_model, build_model

# Exact filtering on the tiny inputs: the layer's output is then deterministic.
CRF = {"n_iter": 2, "theta_alpha": 4.0, "theta_beta": 20.0, "theta_gamma": 1.5, "backend": "exact"}
MEAN, STD = [110.0, 120.0, 130.0], [50.0, 60.0, 70.0]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> CRFLayerModel:
    torch.manual_seed(seed)
    return build_crf_layer_model(UNet(3, 4), 4, CRF, MEAN, STD)


def test_output_is_log_q_of_the_crf_on_the_network_logits() -> None:
    model = _model().eval()
    image = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        log_q = model(image)
        expected = model.crf(
            model.network(image),
            image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None],
        )
    assert log_q.shape == (2, 4, 16, 16) and log_q.dtype == torch.float32
    torch.testing.assert_close(log_q.exp(), expected)
    torch.testing.assert_close(log_q.softmax(dim=1), expected)  # softmax(log Q) = Q


def test_denormalized_input_is_the_datasets_raw_image() -> None:
    # The layer filters denormalize(image) when no image_raw is given (eval, predict): it must
    # equal the image_raw the dataset gives with the same normalization, padding included.
    dataset = SyntheticDataset(2, 24, seed=3, mean=MEAN, std=STD)
    sample = dataset[0]
    torch.testing.assert_close(
        denormalize(sample["image"], MEAN, STD), sample["image_raw"], atol=1e-3, rtol=0
    )
    model = _model().eval()
    with torch.no_grad():
        implicit = model(sample["image"][None])
        explicit = model(sample["image"][None], sample["image_raw"][None])
    torch.testing.assert_close(implicit, explicit, atol=1e-4, rtol=0)


def test_gray_input_uses_the_averaged_statistics() -> None:
    torch.manual_seed(0)
    model = CRFLayerModel(UNet(1, 2), CRFasRNN(2, **CRF), mean=MEAN, std=STD).eval()
    image = torch.randn(1, 1, 12, 12)
    raw = image * 60.0 + 120.0  # the averages of STD and MEAN
    with torch.no_grad():
        torch.testing.assert_close(model(image), model(image, raw))


def test_pce_gradients_reach_the_network_and_every_crf_parameter() -> None:
    model = _model().train()
    image = torch.randn(2, 3, 16, 16)
    label = torch.full((2, 16, 16), 255)
    label[:, 2:6, 3] = 1
    label[:, 10:14, 12] = 0
    label[0, 8, 4:9] = 3
    partial_cross_entropy(model(image), label).backward()
    crf = model.crf
    for parameter in (crf.compat, crf.bilateral_weight, crf.gaussian_weight):
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0
    grads = [p.grad for p in model.network.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_state_dict_round_trip_restores_network_and_crf() -> None:
    trained = _model(seed=0)
    with torch.no_grad():
        trained.crf.compat.add_(0.25)
        trained.crf.bilateral_weight.mul_(1.5)
    state = trained.state_dict()
    assert {"crf.compat", "crf.bilateral_weight", "crf.gaussian_weight"} <= set(state)
    assert any(key.startswith("network.") for key in state)
    restored = _model(seed=1)
    restored.load_state_dict(state)
    image = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(image), trained.eval()(image))
    torch.testing.assert_close(restored.crf.compat, trained.crf.compat)


def test_backbone_is_the_networks_for_the_optimizer_groups() -> None:
    network = build_model("deeplabv3plus_mobilenet_v2", 3)
    model = build_crf_layer_model(network, 3, {"n_iter": 1}, MEAN, STD)
    assert model.backbone is network.backbone
    assert _model().backbone is None  # U-Net: no backbone
    assert "mean=[110.0, 120.0, 130.0]" in repr(model)


def test_errors() -> None:
    with pytest.raises(TypeError, match="crf must be a CRFasRNN, got Identity"):
        CRFLayerModel(UNet(3, 2), torch.nn.Identity(), MEAN, STD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mean and std must be .* got mean=\[1.0\], std=\[\]"):
        CRFLayerModel(UNet(3, 2), CRFasRNN(2), [1.0], [])
    with pytest.raises(ValueError, match=r"std > 0"):
        CRFLayerModel(UNet(3, 2), CRFasRNN(2), [1.0], [0.0])
    model = _model()
    with pytest.raises(ValueError, match=r"image_raw must have .* got \(1, 3, 8, 8\)"):
        model(torch.randn(1, 3, 16, 16), torch.rand(1, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="num_classes=4 channels"):
        build_crf_layer_model(UNet(3, 3), 4, CRF, MEAN, STD).eval()(torch.randn(1, 3, 8, 8))
