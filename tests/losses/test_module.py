"""The loss modules' constructors, derived from their functions' keyword-only parameters."""

from __future__ import annotations

import inspect

import pytest
import torch

from weakseg.losses import (
    DenseCRFADMLoss,
    DenseCRFLoss,
    GridPottsLoss,
    KernelCutLoss,
    SECLoss,
    SeedingLoss,
)
from weakseg.losses.objective import LOSS_TERMS


@pytest.mark.parametrize("name", sorted(LOSS_TERMS))
def test_constructor_takes_the_function_hyper_parameters(name: str) -> None:
    module = LOSS_TERMS[name].module
    function = inspect.signature(module.function).parameters.values()
    expected = [
        p.name
        for p in function
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in module.call_arguments
    ]
    accepted = LOSS_TERMS[name].parameters()
    assert [p for p in accepted if p != "weight"] == expected
    defaults = {p.name: p.default for p in function}
    built = module()
    for key in expected:  # the stored value of each default is the function's default
        stored = getattr(built, key)
        assert stored == defaults[key] or (stored is None and defaults[key] is None), key


def test_values_are_checked_and_stored() -> None:
    with pytest.raises(ValueError, match="sigma_xy"):
        DenseCRFLoss(sigma_xy=-1.0)
    with pytest.raises(ValueError, match="normalization"):
        KernelCutLoss(normalization="rloss_original")  # dense CRF only
    with pytest.raises(ValueError, match="connectivity must be None, 4, 8, 6 or 26, got 5"):
        GridPottsLoss(connectivity=5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sigma'"):
        DenseCRFLoss(sigma=3.0)
    with pytest.raises(TypeError, match="backprop_crf must be true or false"):
        SECLoss(backprop_crf=1)
    module = KernelCutLoss(0.5, nc_sigma_xy=40, spacing=[1, 2])
    assert (module.weight, module.nc_sigma_xy, module.nc_sigma_rgb) == (0.5, 40.0, None)
    assert isinstance(module.nc_sigma_xy, float) and module.spacing == (1, 2)
    assert SeedingLoss(2.0).weight == 2.0 and SeedingLoss().arguments() == {}


def test_tensor_hyper_parameters_are_buffers() -> None:
    compat = torch.ones(2, 2) - torch.eye(2)
    module = DenseCRFADMLoss(compat=compat)
    compat[0, 1] = 5.0  # the module holds its own copy
    assert module.state_dict()["compat"][0, 1] == 1.0
    assert "compat=matrix" in repr(module) and "compat=potts" in repr(DenseCRFADMLoss())
    assert "compat" not in DenseCRFADMLoss().state_dict()


def test_a_term_that_replaces_pce_is_not_a_regularizer() -> None:
    from weakseg.losses.objective import LossTerm

    sec = LOSS_TERMS["sec"]
    assert sec.replaces_pce and not sec.regularizer  # kept out of the ramp-up
    with pytest.raises(ValueError, match="replaces pCE, so it is no regularizer"):
        LossTerm(sec.module, sec.inputs, replaces_pce=True)
