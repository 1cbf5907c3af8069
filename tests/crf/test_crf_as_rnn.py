import pytest
import torch

from weakseg.crf import CRFasRNN, dense_crf_inference

TINY = {"theta_alpha": 3.0, "theta_beta": 40.0, "theta_gamma": 1.5}


def _inputs(k=3, spatial=(4, 5), dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, k, *spatial, generator=g, dtype=dtype)
    images = torch.rand(2, 3, *spatial, generator=g, dtype=dtype) * 255
    return logits, images


def test_initialisation_equals_potts_mean_field():
    # compat (1 - I) @ (w I) = w (1 - I): the untrained layer is plain Potts mean field.
    logits, images = _inputs()
    kw = {"n_iter": 3, "w_bilateral": 2.0, "w_gaussian": 1.5, "backend": "exact", **TINY}
    layer = CRFasRNN(3, **kw).double()
    torch.testing.assert_close(layer(logits, images), dense_crf_inference(logits, images, **kw))


def test_3d_shapes_and_parameters_receive_gradients():
    logits, images = _inputs(spatial=(2, 3, 4))
    layer = CRFasRNN(3, n_iter=2, backend="exact", **TINY).double()
    target = torch.randint(0, 3, (2, 2, 3, 4))
    q = layer(logits, images)
    assert q.shape == logits.shape
    torch.nn.functional.nll_loss(q.clamp_min(1e-12).log(), target).backward()
    for p in (layer.compat, layer.bilateral_weight, layer.gaussian_weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_gradcheck_logits_and_parameters():
    logits, images = _inputs(k=2, spatial=(3, 3))
    logits = logits[:1].clone().requires_grad_(True)
    images = images[:1]
    layer = CRFasRNN(2, n_iter=2, backend="exact", **TINY).double()

    def run(x, compat, wb, wg):
        return torch.func.functional_call(
            layer,
            {"compat": compat, "bilateral_weight": wb, "gaussian_weight": wg},
            (x, images),
        )

    params = [
        (1 - torch.eye(2, dtype=torch.float64)).requires_grad_(True),
        (2 * torch.eye(2, dtype=torch.float64) + 0.1).requires_grad_(True),
        (torch.eye(2, dtype=torch.float64)).requires_grad_(True),
    ]
    torch.autograd.gradcheck(run, (logits, *params))


def test_repr_and_errors():
    layer = CRFasRNN(4)
    assert "num_classes=4" in repr(layer) and "backend='lattice'" in repr(layer)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        CRFasRNN(0)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        CRFasRNN(2.5)
    with pytest.raises(ValueError, match="theta_beta must be a finite number > 0"):
        CRFasRNN(2, theta_beta=-1)
    with pytest.raises(ValueError, match=r"num_classes=4 channels, got shape \(1, 3, 4, 5\)"):
        layer(torch.zeros(1, 3, 4, 5), torch.zeros(1, 3, 4, 5))
