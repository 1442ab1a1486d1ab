"""Small environments with MultiDiscrete and MultiBinary actions (gymnasium ships none), for the trainer's tests.

Each episode lasts 20 steps; the observation is a random target drawn per step and the reward is the number
of action columns that hit it, so a policy can learn it (the best mean return is 20 × columns).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class _Targets(gym.Env):
    horizon = 20

    def __init__(self, action_space, n_values):
        self.action_space = action_space
        self.n_values = n_values  # choices per column
        k = action_space.shape[0]
        self.observation_space = spaces.Box(-1.0, 1.0, (k,), np.float64)
        self._t = 0
        self._target = np.zeros(k, np.int64)

    def _obs(self):
        self._target = self.np_random.integers(0, self.n_values)
        return 2.0 * self._target / (self.n_values - 1) - 1.0  # each target coded in [-1, 1]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(np.sum(np.asarray(action) == self._target))
        self._t += 1
        return self._obs(), reward, False, self._t >= self.horizon, {}


class MultiDiscreteTargets(_Targets):
    """Actions MultiDiscrete([3, 2]): hit the target of each column."""

    def __init__(self):
        super().__init__(spaces.MultiDiscrete([3, 2]), np.array([3, 2]))


class MultiBinaryTargets(_Targets):
    """Actions MultiBinary(3): hit each bit of the target."""

    def __init__(self):
        super().__init__(spaces.MultiBinary(3), np.array([2, 2, 2]))


def register() -> None:
    """Register ``MultiDiscreteTargets-v0`` and ``MultiBinaryTargets-v0`` (idempotent)."""
    for name, cls in (("MultiDiscreteTargets-v0", MultiDiscreteTargets), ("MultiBinaryTargets-v0", MultiBinaryTargets)):
        if name not in gym.registry:
            gym.register(name, entry_point=cls)
