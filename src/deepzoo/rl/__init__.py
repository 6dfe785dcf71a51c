"""Reinforcement learning: returns and advantages (returns.py), environment rollouts as a batch
source (rollouts.py), actor-critic (actor_critic.py)."""
