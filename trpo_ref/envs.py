"""Per-environment training defaults: one table, read top to bottom.

Each entry overrides :class:`trpo_ref.train.TrainConfig` fields (``train``)
and :class:`trpo_ref.trpo.TRPOConfig` fields (``trpo``) on top of the chosen
preset.  An environment that is not listed trains with the plain
``TrainConfig()`` / preset defaults.

Sources: RL-Baselines3-Zoo ``hyperparams/trpo.yml`` (the SB3-contrib TRPO
settings behind its published returns; ``n_steps`` there is per env, as here)
and the measured runs in docs/benchmarks.md.  SB3 names in brackets:
``n_steps`` [n_steps], ``critic_epochs`` [n_critic_updates],
``critic_batch_size`` [batch_size], ``critic_lr`` [learning_rate],
``normalize_obs``/``normalize_reward`` [zoo ``normalize: true`` = VecNormalize
of both], ``max_kl`` [target_kl], ``cg_iters`` [cg_max_steps].

MuJoCo entries need the ``mujoco`` extra (``pip install 'trpo-ref[mujoco]'``).
"""

from __future__ import annotations

__all__ = ["ENV_DEFAULTS", "env_defaults"]

# Zoo's PyBullet/MuJoCo block: VecNormalize, 2 envs x 1024 steps, 20 critic
# epochs of minibatch 128, CG 25 iterations, damping 0.1.
_MUJOCO = dict(
    train=dict(n_envs=2, n_steps=1024, gamma=0.99, gae_lambda=0.95, critic_epochs=20, critic_batch_size=128,
               critic_lr=1e-3, normalize_obs=True, normalize_reward=True, total_steps=1_000_000),
    trpo=dict(cg_iters=25, cg_damping=0.1),
)


def _mujoco(**trpo_overrides):
    return dict(train=dict(_MUJOCO["train"]), trpo={**_MUJOCO["trpo"], **trpo_overrides})


#: env id -> {"train": {...}, "trpo": {...}}.
ENV_DEFAULTS: dict[str, dict[str, dict]] = {
    # SB3-contrib's plain defaults (1 env x 2048 steps, λ 0.95, damping 0.1, 10 critic epochs of
    # minibatch 128) = TrainConfig()'s.  Measured here (docs/benchmarks.md): solved in 29k-47k steps and
    # still at 500 after 100k on 5 of 5 seeds; RL-Zoo's tuned set (2 envs x 512, λ 0.98, damping 1e-3)
    # solved sooner on some seeds but drifted below 475 late in the run on 2 of 5.
    "CartPole-v1": dict(train=dict(total_steps=100_000), trpo=dict()),
    # Zoo: VecNormalize, 2 envs x 1024 steps.
    "Acrobot-v1": dict(
        train=dict(n_envs=2, n_steps=1024, normalize_obs=True, normalize_reward=True, total_steps=100_000),
        trpo=dict(),
    ),
    # Zoo uses gSDE (not implemented here); plain Gaussian with γ 0.9 (zoo) and 15 critic epochs.
    "Pendulum-v1": dict(
        train=dict(n_envs=2, n_steps=1024, gamma=0.9, gae_lambda=0.95, critic_epochs=15,
                   total_steps=200_000),
        trpo=dict(),
    ),
    "MountainCarContinuous-v0": dict(
        train=dict(n_envs=2, n_steps=2048, normalize_obs=True, normalize_reward=True, total_steps=50_000),
        trpo=dict(),
    ),
    "Hopper-v5": _mujoco(),
    "HalfCheetah-v5": _mujoco(max_kl=0.04),
    "Walker2d-v5": _mujoco(),
    "Ant-v5": _mujoco(),
    "Swimmer-v5": dict(train={**_MUJOCO["train"], "gamma": 0.9999}, trpo=dict(_MUJOCO["trpo"])),
}


def env_defaults(env_id: str) -> dict[str, dict]:
    """The table entry of ``env_id`` (copies), ``{"train": {}, "trpo": {}}`` when not listed."""
    entry = ENV_DEFAULTS.get(env_id, {})
    return {"train": dict(entry.get("train", {})), "trpo": dict(entry.get("trpo", {}))}
