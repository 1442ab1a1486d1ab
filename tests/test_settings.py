"""Settings: one precedence (preset < env table < --config < options), JSON / YAML / RL-Zoo files."""

import json

import pytest

from trpo_ref.cli import main
from trpo_ref.settings import build_configs, parse_steps, read_config_file, zoo_to_fields
from trpo_ref.train import TrainConfig
from trpo_ref.trpo import TRPOConfig

# An RL-Zoo hyperparameter file as the zoo writes them (hyperparams/trpo.yml style): the env id as top
# key, YAML 1.1 numbers ("1e5" is a string there, "!!float" a float), policy_kwargs as a Python string.
ZOO_YAML = """\
CartPole-v1:
  n_envs: 2
  n_timesteps: !!float 1e5
  policy: 'MlpPolicy'
  n_steps: 512
  batch_size: 64
  gae_lambda: 0.98
  gamma: 0.99
  n_critic_updates: 20
  learning_rate: !!float 1e-3
  cg_max_steps: 25
  cg_damping: 0.001
  line_search_shrinking_factor: 0.7
  line_search_max_iter: 12
  target_kl: 0.02
  sub_sampling_factor: 2
  normalize: true
  policy_kwargs: "dict(net_arch=dict(pi=[32, 16], vf=[8]), activation_fn=nn.ReLU, log_std_init=-1)"

Pendulum-v1:
  n_timesteps: 1e5
  use_sde: True
  sde_sample_freq: 4
  policy_kwargs: "dict(net_arch=[64, 64])"
"""


# ------------------------------------------------------------------ precedence
@pytest.mark.parametrize("file_layer", [{"seed": 0, "gamma": 0.5}, {"train": {"seed": 0, "gamma": 0.5}},
                                        {"seed": 0, "train": {"gamma": 0.5}}])
def test_precedence__options_beat_flat_and_nested_files(file_layer):
    cfg, _ = build_configs("CartPole-v1", "sb3-contrib", file_layer, {"seed": 2})
    assert (cfg.seed, cfg.gamma) == (2, 0.5)  # the option wins; the file beats the defaults


def test_precedence__file_beats_env_table_beats_preset():
    cfg, tc = build_configs("HalfCheetah-v5", "paper", {"trpo": {"cg_damping": 0.3}})
    assert cfg.n_envs == 2 and tc.max_kl == 0.04      # env table
    assert tc.cg_damping == 0.3 and tc.cg_iters == 25  # file, then env table over the preset's 10
    assert tc.backtrack_coeff == TRPOConfig.preset("paper").backtrack_coeff  # preset


def test_precedence__a_field_given_flat_and_nested_with_different_values_is_an_error():
    with pytest.raises(ValueError, match="seed is given twice"):
        build_configs("CartPole-v1", "sb3-contrib", {"seed": 1, "train": {"seed": 0}})


def test_cli__nested_config_does_not_beat_seed(tmp_path, capsys):
    """Review defect 1: {"train": {"seed": 0}} with --seed 1 trained seed 0 (a seed sweep repeated one run)."""
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"train": {"seed": 0}}))
    for seed in (1, 2):
        out = tmp_path / f"s{seed}"
        assert main(["train", "CartPole-v1", "--config", str(conf), "--seed", str(seed), "--n-steps", "32",
                     "--total-steps", "32", "--out", str(out), "--quiet", "--no-plot"]) == 0
        assert json.loads((out / "config.json").read_text())["train"]["seed"] == seed
    import numpy as np

    with np.load(tmp_path / "s1" / "policy.npz") as a, np.load(tmp_path / "s2" / "policy.npz") as b:
        assert not np.array_equal(a["theta"], b["theta"])


# ------------------------------------------------------------------ files
def test_yaml_config__flat_and_nested(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\ntotal_steps: 2e5\ntrpo:\n  max_kl: 0.02\n")
    layer, notes = read_config_file(str(p), "CartPole-v1")
    cfg, tc = build_configs("CartPole-v1", "sb3-contrib", layer)
    assert (cfg.seed, cfg.total_steps, tc.max_kl, notes) == (3, 200_000, 0.02, [])


def test_zoo_file__every_documented_key_is_mapped(tmp_path):
    p = tmp_path / "trpo.yml"
    p.write_text(ZOO_YAML)
    layer, notes = read_config_file(str(p), "CartPole-v1")
    cfg, tc = build_configs("CartPole-v1", "sb3-contrib", layer)
    assert notes == []
    assert (cfg.n_envs, cfg.total_steps, cfg.n_steps, cfg.critic_batch_size) == (2, 100_000, 512, 64)
    assert (cfg.gae_lambda, cfg.gamma, cfg.critic_epochs, cfg.critic_lr) == (0.98, 0.99, 20, 1e-3)
    assert (tc.cg_iters, tc.cg_damping, tc.backtrack_coeff, tc.backtrack_iters) == (25, 0.001, 0.7, 12)
    assert (tc.max_kl, tc.sub_sampling_factor) == (0.02, 2)
    assert cfg.normalize_obs and cfg.normalize_reward
    assert (cfg.hidden_sizes, cfg.vf_hidden_sizes, cfg.activation, cfg.log_std_init) == ((32, 16), (8,), "relu", -1.0)


def test_zoo_file__keys_without_meaning_here_get_one_line_each(tmp_path):
    p = tmp_path / "trpo.yml"
    p.write_text(ZOO_YAML)
    layer, notes = read_config_file(str(p), "Pendulum-v1")
    cfg, _ = build_configs("Pendulum-v1", "sb3-contrib", layer)
    assert cfg.total_steps == 100_000 and cfg.hidden_sizes == (64, 64) == cfg.vf_hidden_sizes
    assert len(notes) == 2 and "use_sde" in notes[0] and "ignored" in notes[0] and "sde_sample_freq" in notes[1]


def test_zoo_file__cli_prints_the_ignored_keys_and_trains(tmp_path, capsys):
    p = tmp_path / "trpo.yml"
    p.write_text(ZOO_YAML.replace("n_timesteps: 1e5", "n_timesteps: 64").replace("Pendulum-v1:", "Pendulum-v1:\n  n_steps: 32"))
    assert main(["train", "Pendulum-v1", "--config", str(p), "--out", str(tmp_path / "r"), "--quiet",
                 "--no-plot", "--n-envs", "2"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("trpo-ref train: warning:") for line in err)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert (saved["total_steps"], saved["n_steps"], saved["n_envs"]) == (64, 32, 2)


@pytest.mark.parametrize("entry, needle", [
    ({"policy": "CnnPolicy"}, "only MlpPolicy"),
    ({"learning_rate": "lin_1e-3"}, "schedules"),
    ({"policy_kwargs": "dict(activation_fn=nn.GELU)"}, "activation_fn"),
    ({"policy_kwargs": "__import__('os')"}, "cannot read"),
    ({"policy_kwargs": "dict(net_arch=[64, dict(pi=[8], vf=[8])])"}, "net_arch"),
    ({"no_such_key": 1}, "no_such_key"),
])
def test_zoo_entry__unusable_values_are_one_clear_error(entry, needle):
    with pytest.raises(ValueError, match=needle):
        zoo_to_fields(entry, "trpo.yml [CartPole-v1]")


def test_zoo_file__without_the_env_is_an_error_naming_the_entries(tmp_path):
    p = tmp_path / "trpo.yml"
    p.write_text(ZOO_YAML)
    with pytest.raises(ValueError, match="no entry for Acrobot-v1.*CartPole-v1"):
        read_config_file(str(p), "Acrobot-v1")


def test_run_config_json__can_be_given_back(tmp_path, capsys):
    first = tmp_path / "a"
    assert main(["train", "CartPole-v1", "--n-steps", "32", "--total-steps", "64", "--seed", "5",
                 "--out", str(first), "--quiet", "--no-plot"]) == 0
    # was: "unknown config key 'policy'"
    assert main(["train", "CartPole-v1", "--config", str(first / "config.json"), "--out", str(tmp_path / "b"),
                 "--quiet", "--no-plot"]) == 0
    a = json.loads((first / "config.json").read_text())
    b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert a == b


def test_bad_yaml_is_one_line(tmp_path, capsys):
    p = tmp_path / "c.yml"
    p.write_text("seed: [1,\n")
    rc = main(["train", "CartPole-v1", "--config", str(p), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not valid YAML" in err[0] and "c.yml" in err[0]


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("text, value", [("1e6", 10**6), ("1_000_000", 10**6), (2.5e5, 250_000), ("64", 64),
                                         (1e6, 10**6)])
def test_parse_steps__accepts_what_sb3_users_type(text, value):
    assert parse_steps(text) == value


@pytest.mark.parametrize("text", ["1.5", "1e-3", "many", True, float("inf")])
def test_parse_steps__refuses_non_whole_numbers(text):
    with pytest.raises(ValueError, match="whole number"):
        parse_steps(text)


def test_cli__total_steps_1e6_is_accepted(tmp_path, capsys):
    from trpo_ref.cli import build_parser

    args = build_parser().parse_args(["train", "CartPole-v1", "--total-steps", "1e6", "--n-steps", "2.048e3"])
    assert (args.total_steps, args.n_steps) == (10**6, 2048)


# ------------------------------------------------------------------ one validation
@pytest.mark.parametrize("cls, name, value, why", [
    (TrainConfig, "gamma", 1.5, "must be <= 1"), (TRPOConfig, "max_kl", -1.0, "must be > 0"),
    (TrainConfig, "n_steps", 2.0, "must be an integer >= 1"), (TRPOConfig, "cg_iters", 2.0, "must be an integer >= 1"),
    (TrainConfig, "critic_lr", float("nan"), "must be a finite number"),
    (TRPOConfig, "cg_damping", float("nan"), "must be a finite number"),
])
def test_train_and_trpo_configs_validate_in_one_way(cls, name, value, why):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{name} {why}, got {value!r}$"):
        cls(**{name: value})


def test_yaml__exponent_numbers_are_numbers(tmp_path):
    # PyYAML follows YAML 1.1, where 1e-2 and 1e5 are strings; a zoo user writes them as numbers
    p = tmp_path / "c.yml"
    p.write_text("trpo:\n  max_kl: 1e-2\n  cg_damping: 1e-3\ntotal_steps: 1e5\n")
    cfg, tc = build_configs("CartPole-v1", "sb3-contrib", read_config_file(str(p), "CartPole-v1")[0])
    assert (tc.max_kl, tc.cg_damping, cfg.total_steps) == (0.01, 0.001, 100_000)


def test_zoo_file__an_env_it_does_not_list_uses_its_default_entry_with_a_note(tmp_path):
    p = tmp_path / "trpo.yml"
    p.write_text("default:\n  n_timesteps: !!float 1e6\n  policy: 'MlpPolicy'\n" + ZOO_YAML)
    layer, notes = read_config_file(str(p), "Acrobot-v1")
    cfg, _ = build_configs("Acrobot-v1", "sb3-contrib", layer)
    assert cfg.total_steps == 1_000_000
    assert notes == [f"--config {p} has no entry for Acrobot-v1: using its 'default' entry"]
