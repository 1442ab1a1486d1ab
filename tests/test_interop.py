"""trpo_ref.interop: weights from SB3 / CleanRL / trpo_ref layouts (.npz, .safetensors) and batches.

Sections: round trips through each layout; architecture inference; errors that
name the key; torch modules exported by scripts/export_torch_policy.py give the
same log-probabilities in trpo_ref (skipped without torch / safetensors); the
``trace --weights --batch`` command end to end.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trpo_ref import cli
from trpo_ref.interop import (
    detect_layout,
    load_batch,
    load_weights,
    policy_from_state_dict,
    save_batch,
    save_weights,
    state_dict_from_policy,
)
from trpo_ref.trace import check_trace, load_trace, synthetic_case

ROOT = Path(__file__).resolve().parents[1]


def case(kind="gaussian", hidden=(6, 5)):
    return synthetic_case(kind, 3, n=12, obs_dim=4, act_dim=2 if kind == "gaussian" else 3, hidden_sizes=hidden)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("layout", ["sb3", "cleanrl", "trpo_ref"])
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("hidden", [(6, 5), (7,), ()], ids=["2hidden", "1hidden", "linear"])
def test_state_dict__round_trip_is_exact_and_infers_the_architecture(layout, kind, hidden):
    policy, theta, _ = case(kind, hidden)
    sd = state_dict_from_policy(policy, theta, layout)
    assert detect_layout(sd) == layout
    back, theta2 = policy_from_state_dict(sd, "auto")
    assert back.spec() == policy.spec()
    np.testing.assert_array_equal(theta2, theta)


def test_sb3_layout__keys_and_torch_shapes():
    policy, theta, _ = case("gaussian", (6, 5))
    sd = state_dict_from_policy(policy, theta, "sb3")
    assert sorted(sd) == sorted(["mlp_extractor.policy_net.0.weight", "mlp_extractor.policy_net.0.bias",
                                 "mlp_extractor.policy_net.2.weight", "mlp_extractor.policy_net.2.bias",
                                 "action_net.weight", "action_net.bias", "log_std"])
    assert sd["mlp_extractor.policy_net.0.weight"].shape == (6, 4)  # torch (out, in)
    np.testing.assert_array_equal(sd["mlp_extractor.policy_net.0.weight"], policy.unflatten(theta)["W0"].T)
    assert sd["action_net.weight"].shape == (2, 5)


def test_cleanrl_layout__keys_and_logstd_shape():
    policy, theta, _ = case("gaussian", (6, 5))
    sd = state_dict_from_policy(policy, theta, "cleanrl")
    assert {"actor_mean.0.weight", "actor_mean.2.weight", "actor_mean.4.weight"} <= set(sd)
    assert sd["actor_logstd"].shape == (1, 2)
    cat, th = case("categorical", (6, 5))[:2]
    assert {"actor.0.weight", "actor.4.bias"} <= set(state_dict_from_policy(cat, th, "cleanrl"))


def test_critic_keys_are_ignored():
    policy, theta, _ = case()
    sd = state_dict_from_policy(policy, theta, "sb3")
    sd.update({"mlp_extractor.value_net.0.weight": np.zeros((6, 4)), "value_net.weight": np.zeros((1, 5)),
               "value_net.bias": np.zeros(1)})
    np.testing.assert_array_equal(policy_from_state_dict(sd)[1], theta)
    sd = state_dict_from_policy(policy, theta, "cleanrl")
    sd.update({"critic.0.weight": np.zeros((6, 4)), "critic.4.bias": np.zeros(1)})
    np.testing.assert_array_equal(policy_from_state_dict(sd)[1], theta)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_files__weights_and_batch_round_trip(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors", reason="safetensors is not installed (pip install 'trpo-ref[interop]')")
    policy, theta, batch = case("categorical")
    save_weights(tmp_path / f"w{suffix}", policy, theta, "cleanrl")
    back, theta2 = load_weights(tmp_path / f"w{suffix}")
    np.testing.assert_array_equal(theta2, theta)
    save_batch(tmp_path / f"b{suffix}", batch, cg_x0=np.ones(policy.num_params))
    b2, x0 = load_batch(tmp_path / f"b{suffix}", back)
    np.testing.assert_array_equal(b2.act, batch.act)
    assert b2.act.dtype == np.int64
    np.testing.assert_array_equal(b2.logp_old, batch.logp_old)
    np.testing.assert_array_equal(x0, np.ones(policy.num_params))


# ------------------------------------------------------------------------ errors
def _sb3():
    policy, theta, _ = case()
    return state_dict_from_policy(policy, theta, "sb3")


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("action_net.bias"), "missing key 'action_net.bias'"),
    (lambda sd: sd.pop("mlp_extractor.policy_net.2.weight"), "missing key 'mlp_extractor.policy_net.2.weight'"),
    (lambda sd: sd.update({"features_extractor.linear.weight": np.zeros((2, 2))}),
     "unexpected keys ['features_extractor.linear.weight']"),
    (lambda sd: sd.update({"mlp_extractor.policy_net.2.weight": np.zeros((5, 7))}),
     "'mlp_extractor.policy_net.2.weight' takes 7 inputs but 'mlp_extractor.policy_net.0.weight' gives 6"),
    (lambda sd: sd.update({"action_net.bias": np.zeros(3)}), "'action_net.bias' has shape (3,)"),
    (lambda sd: sd.update({"log_std": np.zeros(3)}), "log-std has shape (3,)"),
])
def test_errors__name_the_key(edit, message):
    sd = _sb3()
    edit(sd)
    with pytest.raises(ValueError) as exc:
        policy_from_state_dict(sd, "sb3", where="w.npz")
    assert message in str(exc.value), str(exc.value)
    assert "w.npz" in str(exc.value)


def test_errors__cleanrl_missing_logstd_and_unknown_layout():
    policy, theta, _ = case()
    sd = state_dict_from_policy(policy, theta, "cleanrl")
    sd.pop("actor_logstd")
    with pytest.raises(ValueError, match="missing key 'actor_logstd'"):
        policy_from_state_dict(sd, "cleanrl")
    with pytest.raises(ValueError, match="cannot tell the layout"):
        policy_from_state_dict({"foo": np.zeros(2)})


def test_errors__unreadable_files(tmp_path):
    bad = tmp_path / "w.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_weights(bad)
    np.savez(tmp_path / "b.npz", obs=np.zeros((3, 4)), act=np.zeros(3), adv=np.zeros(3))
    with pytest.raises(ValueError, match=r"missing batch keys \['logp_old'\]"):
        load_batch(tmp_path / "b.npz")
    np.savez(tmp_path / "b2.npz", obs=np.zeros((3, 4)), act=np.zeros((3, 2)), adv=np.zeros(4), logp_old=np.zeros(3))
    with pytest.raises(ValueError, match="'adv' has shape"):
        load_batch(tmp_path / "b2.npz")


# ------------------------------------------------------------- torch modules
#: The exports the tests below read: (model, kind) -> the script's arguments after the output files.
EXPORTS = {(model, kind): ["--model", model, "--kind", kind, "--obs-dim", "3",
                           "--act-dim", "2" if kind == "gaussian" else "4", "--hidden", "8,6", "--n", "32"]
           for model in ("sb3", "cleanrl") for kind in ("gaussian", "categorical")}
EXPORTS["sb3-npz"] = ["--model", "sb3", "--kind", "gaussian", "--obs-dim", "3", "--hidden", "8", "--n", "24"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every export of EXPORTS, made as a user makes it: ``python scripts/export_torch_policy.py ...``,
    the processes run side by side.  Key -> (weights file, batch file)."""
    for module in ("torch", "safetensors"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'trpo-ref[torch,interop]')")
    tmp = tmp_path_factory.mktemp("export")
    procs, files = {}, {}
    for key, args in EXPORTS.items():
        stem = "-".join(key) if isinstance(key, tuple) else key
        w = tmp / (f"{stem}.npz" if key == "sb3-npz" else f"{stem}.safetensors")
        files[key] = w, tmp / f"{stem}-batch.npz"
        procs[key] = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "export_torch_policy.py"), *args,
                                       "-o", str(w), "--batch", str(files[key][1])],
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (key, err[-3000:])
        w, b = files[key]
        assert f"wrote {w} " in out and f"{b} (N = " in out, out
    return files


@pytest.mark.parametrize("model", ["sb3", "cleanrl"])
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_torch_export__trpo_ref_reproduces_the_modules_log_probs(exported, model, kind):
    # The batch's logp_old come from torch's own module and distributions (float64); trpo_ref
    # reading the state_dict must give the same numbers to rounding (1e-12 relative: one
    # forward pass of a small MLP in a different summation order).
    w, b = exported[model, kind]
    policy, theta = load_weights(w)
    assert policy.kind == kind and policy.hidden_sizes == (8, 6) and policy.obs_dim == 3
    batch, _ = load_batch(b, policy)
    ours = policy.log_prob(theta, batch.obs, batch.act)
    np.testing.assert_allclose(ours, batch.logp_old, rtol=1e-12, atol=1e-12)


def test_trace_from_exported_torch_policy__cli_end_to_end(exported, tmp_path, capsys):
    w, b = exported["sb3-npz"]
    t = tmp_path / "t.npz"
    rc = cli.main(["trace", "--weights", str(w), "--batch", str(b), "--preset", "sb3-contrib", "--layout", "sb3",
                   "-o", str(t)])
    assert rc == 0, capsys.readouterr().err
    tr = load_trace(t)
    assert tr.preset == "sb3-contrib" and tr.policy.hidden_sizes == (8,)
    report = check_trace(t)
    assert report.ok and not report.notes  # no logp_old inconsistency note: weights match the batch


def test_check__notes_a_batch_that_does_not_match_the_weights(tmp_path):
    policy, theta, batch = case()
    from trpo_ref.trace import compute_trace
    from trpo_ref.trpo import Batch

    wrong = Batch(batch.obs, batch.act, batch.adv, batch.logp_old + 0.3)  # e.g. a transposed layer upstream
    tr = compute_trace(policy, theta, wrong, preset="paper")
    report = check_trace(tr)
    assert report.ok  # the update itself is consistent...
    assert any("logp_old differs" in n for n in report.notes)  # ...but the report says the inputs look wrong


@pytest.mark.parametrize("kind", ["multicategorical", "bernoulli"])
def test_sb3_mlp_policy__multidiscrete_and_multibinary_weights(kind):
    # SB3's MlpPolicy for MultiDiscrete / MultiBinary: an action_net with sum(nvec) / n outputs
    policy, theta, batch = synthetic_case(kind, 3, n=12, obs_dim=4, act_dim=3, hidden_sizes=(6, 5))
    sd = state_dict_from_policy(policy, theta, "sb3")
    out = sum(policy.nvec) if kind == "multicategorical" else policy.n
    assert sd["action_net.weight"].shape == (out, 5)
    extra = dict(nvec=policy.nvec) if kind == "multicategorical" else dict(kind="bernoulli")
    back, theta2 = policy_from_state_dict(sd, "sb3", **extra)
    assert back.spec() == policy.spec()
    np.testing.assert_array_equal(theta2, theta)
    np.testing.assert_array_equal(back.log_prob(theta2, batch.obs, batch.act), policy.log_prob(theta, batch.obs, batch.act))
    with pytest.raises(ValueError, match="nvec"):
        policy_from_state_dict(sd, "sb3", kind="multicategorical", nvec=(2, 2))
