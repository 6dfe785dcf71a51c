"""The sequence-level actor-critic of a token policy: its terms by hand, gradient isolation, learning."""

import pytest
import torch

from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.rl.sequence import PromptedGPT, SequenceACConfig, SequenceActorCritic

START = 4  # the prompt token; ids 0-3 are generated


def _model(kl_coef=0.05, seed=0, temperature=1.0):
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=5, block_size=8, layers=1, heads=2, dim=16, positions="learned"))
    reward = lambda context, actions: (actions == 0).float().mean(1)  # noqa: E731 - share of zeros
    contexts = lambda batch, device: {"prompt": torch.full((int(batch["size"]), 1), START, device=device)}  # noqa: E731
    policy = PromptedGPT(gpt, new_tokens=6, max_token=4)
    return SequenceActorCritic(policy, reward, contexts, SequenceACConfig(kl_coef, temperature=temperature))


def _size(n):
    return {"size": torch.tensor(n)}


def _by_hand(model, context, actions):
    """log pi(a_t), V(s_t) and G_t of finished sequences (prompt length 1), written out; pi the
    policy at the rollouts' temperature T: softmax(logits / T)."""
    tokens = torch.cat([context["prompt"], actions], dim=1)
    T = model.config.temperature
    log_p = (
        (model.policy.gpt(tokens[:, :-1])[:, :, :4] / T)
        .log_softmax(-1)
        .gather(-1, actions[..., None])
        .squeeze(-1)
    )
    with torch.no_grad():
        reference = (model.reference.gpt(tokens[:, :-1])[:, :, :4] / T).log_softmax(-1)
        log_q = reference.gather(-1, actions[..., None]).squeeze(-1)
        rewards = -0.05 * (log_p - log_q)
        rewards[:, -1] += (actions == 0).float().mean(1)
        returns = rewards.flip(1).cumsum(1).flip(1)
    values = model.value_head(model.policy.gpt.features(tokens[:, :-1]).detach()).squeeze(-1)
    return log_p, log_q, values, returns


def _moved_model(temperature=1.0):
    model = _model(temperature=temperature)
    with torch.no_grad():  # move the policy away from its reference so the KL is not zero
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.value_head.weight.normal_()
    return model


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_the_terms_follow_the_per_token_kl_rewards_and_the_sequence_reward(temperature):
    model = _moved_model(temperature)
    context, actions = model.rollout(_size(8), torch.Generator().manual_seed(1))
    terms = model.terms(context, actions)
    log_p, log_q, values, returns = _by_hand(model, context, actions)
    expected = -(log_p * (returns - values)).mean()
    torch.testing.assert_close(terms["policy_loss"], expected.detach())
    torch.testing.assert_close(terms["value_loss"], ((values - returns) ** 2).mean().detach())
    torch.testing.assert_close(terms["kl"], (log_p - log_q).sum(1).mean().detach())


def test_actor_and_critic_do_not_move_each_other():
    """The loss's gradient in the policy is the actor term's alone, and in the value head the
    critic term's alone (the advantage is detached, the critic reads detached features)."""
    model = _moved_model()
    context, actions = model.rollout(_size(8))
    head, policy = list(model.value_head.parameters()), list(model.policy.parameters())
    loss = model.terms(context, actions)["loss"]
    got = torch.autograd.grad(loss, policy + head)
    log_p, _, values, returns = _by_hand(model, context, actions)
    actor = -(log_p * (returns - values).detach()).mean()
    critic = model.config.value_coef * ((values - returns) ** 2).mean()
    expected = torch.autograd.grad(actor, policy) + torch.autograd.grad(critic, head)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


@pytest.mark.seeds_covered
def test_the_reward_rises_and_a_large_kl_weight_holds_the_policy_near_its_start():
    """A random 4-token policy writes 25% zeros. 40 actor-critic steps (64 sequences each) with
    beta 0.01 lift the reward above 0.6 for seeds 0-4; with beta 10 the sequence KL stays below 0.5."""
    for seed in range(5):
        rewards = {}
        for kl_coef in (0.01, 10.0):
            model = _model(kl_coef, seed)
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            for _ in range(40):
                terms = model.loss(_size(64))
                opt.zero_grad()
                terms["loss"].backward()
                opt.step()
            with torch.no_grad():
                final = model.terms(*model.rollout(_size(512)))
            rewards[kl_coef] = final
        assert rewards[0.01]["reward"] > 0.6, seed
        assert rewards[10.0]["kl"] < 0.5 and rewards[10.0]["reward"] < rewards[0.01]["reward"], seed


def test_the_critic_starts_at_zero_and_the_frozen_reference_stays_in_eval_mode():
    """pi_0 must score the same actions the same way at every step: with dropout in the GPT, a
    reference switched to training mode by model.train() would add noise to the KL penalty."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=5, block_size=8, layers=1, heads=2, dim=16, dropout=0.5))
    model = SequenceActorCritic(PromptedGPT(gpt, 6, 4), lambda c, a: a.float().mean(1), lambda b, d: {})
    assert torch.count_nonzero(model.value_head(torch.randn(3, 16))) == 0  # the critic starts at V = 0
    model.train()
    assert model.policy.training and not any(m.training for m in model.reference.modules())
    context = {"prompt": torch.full((4, 1), START)}
    actions = torch.randint(4, (4, 6), generator=torch.Generator().manual_seed(0))
    first, second = (model.reference.action_logits(context, actions)[1] for _ in range(2))
    assert torch.equal(first, second)


class _Finetuned(torch.nn.Module):
    """A stand-in fine-tuned prior whose codes (B, 1) are the digits its decoded images show, read
    back by the reward's classifier: rollouts of B sequences give the digits 7, 7, 3, 1 in turn."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []
        self.reward = torch.nn.Module()
        self.reward.decode = lambda codes: torch.zeros(len(codes), 1, 28, 28).index_put_(
            (torch.arange(len(codes)), torch.tensor(0), torch.tensor(0), torch.tensor(0)), codes[:, 0] / 10
        )
        self.reward.classifier = lambda images: torch.nn.functional.one_hot(
            (images[:, 0, 0, 0] * 10).round().long(), 10
        ).float()

    def rollout(self, batch):
        self.calls.append((int(batch["size"]), torch.initial_seed()))
        return {}, torch.tensor([7, 7, 3, 1]).repeat(int(batch["size"]) // 4)[:, None]

    def terms(self, context, codes):
        return {"reward": torch.tensor(0.4), "kl": torch.tensor(2.5), "loss": torch.tensor(0.0)}


def test_the_finetune_evaluation_reports_reward_target_share_and_kl_of_seeded_samples(tmp_path):
    """Over `samples` sequences drawn under seed 0 whatever the global generator's state: the
    terms' mean reward and sequence KL, the share the classifier reads as the target, a grid."""
    from deepzoo.recipes.rl import PriorFinetuneRun, _evaluate_finetune

    model = _Finetuned()
    zero = torch.manual_seed(0).initial_seed()  # what seed 0 is under the suite's seed offset
    torch.manual_seed(123)
    record = _evaluate_finetune(model, None, tmp_path, PriorFinetuneRun(target=7, samples=8))
    assert record == pytest.approx({"reward": 0.4, "target_share": 0.5, "kl": 2.5})
    assert model.calls == [(8, zero)] and (tmp_path / "samples" / "samples.png").stat().st_size > 0


def test_the_finetune_recipe_asks_for_one_batch_of_sequences_a_step():
    from dataclasses import replace

    from deepzoo.recipes import get_recipe

    default = get_recipe("ac-vqvae-prior-mnist").default
    config = replace(default, train=replace(default.train, batch_size=24))
    source, nothing = get_recipe("ac-vqvae-prior-mnist").data(config, torch.device("cpu"))
    assert nothing is None and [int(source.next(step)["size"]) for step in (0, 1, 7)] == [24, 24, 24]
