import pytest
import torch
from torch import nn

from deepzoo.nn.norms import BatchNorm, InstanceNorm, LayerNorm


def _same_forward_and_backward(ours, reference, x):
    ours.load_state_dict(reference.state_dict())
    with torch.no_grad():  # non-trivial affine parameters
        for p_ours, p_ref in zip(ours.parameters(), reference.parameters()):
            p_ref.uniform_(0.5, 1.5)
            p_ours.copy_(p_ref)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    torch.testing.assert_close(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(y_ref)
    (y_ours * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for p_ours, p_ref in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,reference", [((16, 5), nn.BatchNorm1d), ((8, 5, 6, 7), nn.BatchNorm2d)])
def test_batchnorm_equals_torch_in_train_and_eval(shape, reference):
    torch.manual_seed(0)
    ours, ref = BatchNorm(5), reference(5)
    for _ in range(3):  # several training batches move the running statistics
        _same_forward_and_backward(ours.train(), ref.train(), torch.randn(shape) * 3 + 1)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked == ref.num_batches_tracked == 3
    _same_forward_and_backward(ours.eval(), ref.eval(), torch.randn(shape))


def test_batchnorm_eval_adds_eps_to_a_vanishing_running_variance():
    """A channel that was constant in training has running variance ~0: eval divides by sqrt(eps)."""
    ours, ref = BatchNorm(3, eps=1e-3).eval(), nn.BatchNorm1d(3, eps=1e-3).eval()
    for module in (ours, ref):
        module.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0]))
        module.running_var.copy_(torch.tensor([0.0, 1e-4, 2.0]))
    x = torch.randn(4, 3)
    torch.testing.assert_close(ours(x), ref(x))


def test_batchnorm_train_output_has_zero_mean_unit_variance_per_channel():
    y = BatchNorm(4)(torch.randn(64, 4, 3, 3) * 5 + 2)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_layernorm_equals_torch():
    torch.manual_seed(0)
    _same_forward_and_backward(LayerNorm((6, 7)), nn.LayerNorm((6, 7)), torch.randn(4, 5, 6, 7) * 2)
    _same_forward_and_backward(LayerNorm(10), nn.LayerNorm(10), torch.randn(3, 10))


def test_instancenorm_equals_torch():
    torch.manual_seed(0)
    _same_forward_and_backward(
        InstanceNorm(3, affine=True), nn.InstanceNorm2d(3, affine=True), torch.randn(4, 3, 5, 5) + 1
    )
    x = torch.randn(2, 3, 9)
    torch.testing.assert_close(InstanceNorm(3)(x), nn.InstanceNorm1d(3)(x), rtol=1e-5, atol=1e-5)
    # torch's defaults: no affine parameters unless asked, so state dicts load both ways
    for affine in (False, True):
        ours, theirs = InstanceNorm(3, affine=affine), nn.InstanceNorm2d(3, affine=affine)
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert not list(InstanceNorm(3).parameters())


def test_layer_and_instance_norm_behave_the_same_in_train_and_eval():
    x = torch.randn(4, 3, 5, 5)
    for module in (LayerNorm((3, 5, 5)), InstanceNorm(3)):
        torch.testing.assert_close(module.train()(x), module.eval()(x))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="trailing shape"):
        LayerNorm(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="spatial"):
        InstanceNorm(3)(torch.randn(2, 3))


def test_feature_standardization_floors_a_constant_feature():
    from deepzoo.nn.norms import feature_standardization

    x = torch.randn(4, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [1.0, 5.0, 0.0]
    )
    mean, std = feature_standardization(x)
    flat = x.reshape(-1, 3)
    torch.testing.assert_close(mean, flat.mean(0))
    torch.testing.assert_close(std[:2], flat.std(0)[:2])
    assert std[2] == pytest.approx(1e-3 * flat.std(0).max().item())  # constant: floored, finite
