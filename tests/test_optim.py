import pytest
import torch

from deepzoo import optim

CASES = [
    ("sgd", lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (
        "sgd-momentum-wd",
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    ),
    (
        "nesterov-wd",
        lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    (
        "adagrad-wd",
        lambda p: optim.AdaGrad(p, lr=0.1, weight_decay=1e-2),
        lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=1e-2),
    ),
    (
        "rmsprop-wd",
        lambda p: optim.RMSProp(p, lr=1e-2, rho=0.9, weight_decay=1e-2),
        lambda p: torch.optim.RMSprop(p, lr=1e-2, alpha=0.9, weight_decay=1e-2),
    ),
    (
        "adam-wd",
        lambda p: optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2),
    ),
    (
        "adamw",
        lambda p: optim.AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False),
    ),
]


def _problem():
    """A small MLP on fixed random data: a non-convex loss with gradients in every parameter."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=generator)
    y = torch.randint(0, 3, (64,), generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return model, lambda m: torch.nn.functional.cross_entropy(m(x), y)


@pytest.mark.parametrize("name,ours,reference", CASES, ids=[c[0] for c in CASES])
def test_optimizer_follows_torch_optim_for_100_steps(name, ours, reference):
    model_a, loss_fn = _problem()
    model_b, _ = _problem()
    opt_a, opt_b = ours(model_a.parameters()), reference(model_b.parameters())
    start = [p.detach().clone() for p in model_a.parameters()]
    for _ in range(100):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad()
            loss_fn(model).backward()
            opt.step()
        for a, b in zip(model_a.parameters(), model_b.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = sum((p.detach() - s).abs().sum() for p, s in zip(model_a.parameters(), start))
    assert moved > 0.1  # the comparison is not between two parameter sets that never moved


def test_momentum_buffer_form_equals_the_notes_velocity_form():
    """Notes: v <- rho v - lr g; x <- x + v. Ours: b <- rho b + g; x <- x - lr b (v = -lr b)."""
    model, loss_fn = _problem()
    reference, _ = _problem()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    velocity = [torch.zeros_like(p) for p in reference.parameters()]
    for _ in range(50):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()
        grads = torch.autograd.grad(loss_fn(reference), list(reference.parameters()))
        with torch.no_grad():
            for p, v, g in zip(reference.parameters(), velocity, grads):
                v.mul_(0.9).sub_(0.05 * g)
                p.add_(v)
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_nesterov_equals_the_look_ahead_form_at_the_shifted_point():
    """Notes: v <- rho v - lr grad f(x + rho v); x <- x + v. Our parameters track x~ = x + rho v."""
    rho, lr = 0.9, 0.05
    model, loss_fn = _problem()
    reference, _ = _problem()  # holds x; the gradient is taken at x + rho v
    opt = optim.SGD(model.parameters(), lr=lr, momentum=rho, nesterov=True)
    velocity = [torch.zeros_like(p) for p in reference.parameters()]
    for _ in range(50):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()
        with torch.no_grad():
            for p, v in zip(reference.parameters(), velocity):
                p.add_(rho * v)  # move to the look-ahead point
        grads = torch.autograd.grad(loss_fn(reference), list(reference.parameters()))
        with torch.no_grad():
            for p, v, g in zip(reference.parameters(), velocity, grads):
                p.sub_(rho * v)  # back to x
                v.mul_(rho).sub_(lr * g)
                p.add_(v)
    with torch.no_grad():
        for a, p, v in zip(model.parameters(), reference.parameters(), velocity):
            torch.testing.assert_close(a, p + rho * v, rtol=1e-5, atol=1e-6)


def test_adam_first_step_moves_each_coordinate_by_lr():
    """With bias correction, step 1 is exactly lr * g / (|g| + eps): about lr in every coordinate's
    direction, a little less where |g| is comparable to eps."""
    start, grad, lr, eps = [3.0, -0.02, 500.0], [2.0, -1e-3, 7.0], 0.1, 1e-8
    p = torch.nn.Parameter(torch.tensor(start))
    opt = optim.Adam([p], lr=lr, eps=eps)
    p.grad = torch.tensor(grad)
    opt.step()
    g = torch.tensor(grad, dtype=torch.float64)
    expected = torch.tensor(start, dtype=torch.float64) - lr * g / (g.abs() + eps)
    # fp32: one rounding of the result (2^-24 relative, 2^-23 to be safe) plus a few roundings of
    # the step of size lr (5 * 2^-24 * lr < 1e-7 absolute)
    torch.testing.assert_close(p.detach().double(), expected, rtol=2**-23, atol=1e-7)
    assert (p.detach().double() - torch.tensor(start, dtype=torch.float64)).abs().sub(lr).abs().max() < 1e-5


def test_a_step_returns_the_closure_loss_skips_parameters_without_gradient_and_owns_its_buffers():
    """Against torch.optim: a frozen first layer (no .grad) is skipped, the later ones still move;
    gradients zeroed in place (set_to_none=False) must not reach the momentum buffer, so it may not
    alias p.grad; `step(closure)` returns the closure's loss."""
    model_a, loss_fn = _problem()
    model_b, _ = _problem()
    for model in (model_a, model_b):
        model[0].requires_grad_(False)
    opt_a = optim.SGD(model_a.parameters(), lr=0.05, momentum=0.9)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.05, momentum=0.9)
    for _ in range(20):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(model)
            loss.backward()
            assert opt.step(lambda loss=loss: loss.item()) == loss.item()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model_a[2].weight, _problem()[0][2].weight)


def test_adamw_defaults_are_torchs():
    p = [torch.nn.Parameter(torch.zeros(2))]
    ours, torchs = optim.AdamW(p).defaults, torch.optim.AdamW(p).defaults
    assert {k: ours[k] for k in ("lr", "betas", "eps", "weight_decay")} == {
        k: torchs[k] for k in ("lr", "betas", "eps", "weight_decay")
    }


def test_bad_hyper_parameters_are_rejected():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="weight decay"):
        optim.Adam(p, weight_decay=-1e-4)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))


TRAINER_CASES = {
    "sgd": (dict(optimizer="sgd", lr=0.05, momentum=0.9), lambda g: optim.SGD(g, lr=0.05, momentum=0.9)),
    "nesterov": (
        dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
        lambda g: optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True),
    ),
    "adam": (dict(optimizer="adam", lr=1e-2, betas=(0.8, 0.99)), lambda g: optim.Adam(g, 1e-2, (0.8, 0.99))),
    "adamw": (dict(optimizer="adamw", lr=1e-2), lambda g: optim.AdamW(g, lr=1e-2)),
    "adagrad": (dict(optimizer="adagrad", lr=0.1, eps=1e-3), lambda g: optim.AdaGrad(g, lr=0.1, eps=1e-3)),
    "rmsprop": (dict(optimizer="rmsprop", lr=1e-2, alpha=0.9), lambda g: optim.RMSProp(g, lr=1e-2, rho=0.9)),
}


@pytest.mark.parametrize("name", TRAINER_CASES)
def test_the_trainers_optimizers_are_the_course_updates_with_weight_decay_on_weights_only(name):
    """`--train.optimizer NAME --train.weight-decay 0.1` moves the parameters as deepzoo.optim's
    NAME with weight decay 0.1 on the weight matrices and none on the biases, for 20 steps."""
    from deepzoo.train import TrainConfig, distributed
    from deepzoo.train.step import Optimizers

    settings, course = TRAINER_CASES[name]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    reference.load_state_dict(model.state_dict())
    cfg = TrainConfig(steps=20, schedule="constant", weight_decay=0.1, **settings)
    trainer_opt = Optimizers({"model": list(model.parameters())}, cfg, distributed.setup("cpu"))
    weights = [p for p in reference.parameters() if p.ndim == 2]
    biases = [p for p in reference.parameters() if p.ndim == 1]
    course_opt = course([{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}])
    x, y = torch.randn(32, 5), torch.randn(32, 3)
    for step in range(20):
        trainer_opt.set_step(step)
        trainer_opt.update("model", torch.nn.functional.mse_loss(model(x), y))
        course_opt.zero_grad()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        course_opt.step()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
