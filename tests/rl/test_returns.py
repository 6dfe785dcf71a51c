"""Returns and advantages against hand-computed values: termination, truncation, rollout ends."""

import pytest
import torch

from deepzoo.rl.returns import discounted_returns, gae, nstep_returns, td_errors

GAMMA = 0.9
# two environments, four steps: env 0's episode terminates after step 1 (a new one starts at 2);
# env 1's is truncated by a time limit after step 2. The rollout ends after step 3.
REWARDS = torch.tensor([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
TERMINATED = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
TRUNCATED = torch.tensor([[False, False], [False, False], [False, True], [False, False]])
VALUES = torch.tensor([[0.5, 1.0], [0.2, 2.0], [0.4, 3.0], [0.6, 5.0]])
NEXT_VALUES = torch.tensor([[0.2, 2.0], [7.0, 3.0], [0.6, 10.0], [0.8, 6.0]])
"""V(s_{t+1}): the row below where the episode goes on; at env 0's terminal state a value (7.0)
that must be ignored; at env 1's truncation the final state's value (10.0, not the next row's)."""


def _hand_returns():
    g = 0.9
    env0 = [1 + g * 1, 1, 1 + g * (1 + g * 0.8), 1 + g * 0.8]  # the terminal step keeps only its reward
    env1_2 = 3 + g * 10.0  # truncated: bootstrap from the final state's value
    env1 = [1 + g * (2 + g * env1_2), 2 + g * env1_2, env1_2, 4 + g * 6.0]
    return torch.tensor([env0, env1]).T


def test_monte_carlo_returns_stop_at_termination_and_bootstrap_at_truncation():
    returns = discounted_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA)
    torch.testing.assert_close(returns, _hand_returns())


def test_td_error_ignores_the_value_of_a_terminal_state():
    delta = td_errors(REWARDS, VALUES, NEXT_VALUES, TERMINATED, GAMMA)
    expected = REWARDS + GAMMA * NEXT_VALUES - VALUES
    expected[1, 0] = 1.0 - 0.2
    torch.testing.assert_close(delta, expected)


def test_gae_one_is_monte_carlo_minus_value_and_gae_zero_is_the_td_error():
    mc = discounted_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA) - VALUES
    torch.testing.assert_close(gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 1.0), mc)
    delta = td_errors(REWARDS, VALUES, NEXT_VALUES, TERMINATED, GAMMA)
    torch.testing.assert_close(gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 0.0), delta)


def test_gae_is_the_discounted_sum_of_td_errors_within_an_episode():
    generator = torch.Generator().manual_seed(0)
    steps, envs, lam = 12, 3, 0.8
    rewards, values, next_values = (torch.randn(steps, envs, generator=generator) for _ in range(3))
    terminated = torch.rand(steps, envs, generator=generator) < 0.15
    truncated = (torch.rand(steps, envs, generator=generator) < 0.15) & ~terminated
    delta = td_errors(rewards, values, next_values, terminated, GAMMA)
    expected = torch.zeros(steps, envs)
    for n in range(envs):
        for t in range(steps):
            for k in range(t, steps):
                expected[t, n] += (GAMMA * lam) ** (k - t) * delta[k, n]
                if terminated[k, n] or truncated[k, n]:
                    break
    actual = gae(rewards, values, next_values, terminated, truncated, GAMMA, lam)
    torch.testing.assert_close(actual, expected)


def test_n_step_returns_span_one_step_to_monte_carlo():
    one = nstep_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 1)
    torch.testing.assert_close(one, REWARDS + GAMMA * (~TERMINATED) * NEXT_VALUES)
    long = nstep_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 10)
    torch.testing.assert_close(long, discounted_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA))
    two = nstep_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 2)
    # env 1 at step 0: r0 + g r1 + g^2 V(s_2); env 0 at step 0: r0 + g r1, then the terminal state
    assert two[0, 1].item() == pytest.approx(1 + GAMMA * 2 + GAMMA**2 * 3.0)
    assert two[0, 0].item() == pytest.approx(1 + GAMMA * 1)
    assert two[1, 1].item() == pytest.approx(2 + GAMMA * 3 + GAMMA**2 * 10.0)  # truncated after 2 rewards


def test_mismatched_shapes_and_zero_steps_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        gae(REWARDS, VALUES[:2], NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 0.95)
    with pytest.raises(ValueError, match="n must be >= 1"):  # 0 steps would return 0 everywhere
        nstep_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, GAMMA, 0)


def test_complete_episodes_mark_the_steps_up_to_each_environments_last_end():
    from deepzoo.rl.returns import complete_episodes

    done = complete_episodes(TERMINATED, TRUNCATED)
    assert done.T.tolist() == [[True, True, False, False], [True, True, True, False]]
