"""A run's settings: one precedence, config files (JSON or YAML) and RL-Zoo hyperparameter files.

Precedence, lowest first (each layer replaces the fields it names)::

    preset (TRPOConfig.preset)  <  per-env defaults (trpo_ref/envs.py)  <  --config FILE  <  command-line options

A config file's fields may be flat (``{"seed": 1, "max_kl": 0.02}``), nested
(``{"train": {...}, "trpo": {...}}``) or both: all of them form the *file*
layer, so a nested field never beats a command-line option.  A run's own
config.json can be given back (its ``policy``, ``value`` and ``env_id``
entries describe the run and are checked, not applied).

An RL-Baselines3-Zoo hyperparameter file (YAML, the env id as top key, SB3's
names) is translated by :func:`zoo_to_fields`: see :data:`ZOO_KEYS` for the
mapping.  A zoo key that has no meaning here (``use_sde``, ``frame_stack``, …)
is ignored with one line saying so.

=================================  ==============================================================
:func:`build_configs`              (TrainConfig, TRPOConfig) from the layers above
:func:`read_config_file`           JSON / YAML file -> the file layer (+ notes to print)
:func:`zoo_to_fields`              one zoo entry -> TrainConfig / TRPOConfig fields
:func:`parse_steps`                ``"1e6"``, ``1e6``, ``"1_000_000"`` -> 1000000
=================================  ==============================================================
"""

from __future__ import annotations

import ast
import json
import math
import numbers
from dataclasses import fields
from pathlib import Path

__all__ = ["build_configs", "read_config_file", "zoo_to_fields", "parse_steps", "ZOO_KEYS", "ZOO_IGNORED",
           "STEP_FIELDS", "RUN_CONFIG_ENTRIES"]

#: Fields that count environment steps: ``1e6`` and ``"1e6"`` are accepted for them.
STEP_FIELDS = ("total_steps", "n_steps", "eval_freq")

#: Entries of a run's config.json that describe the run rather than set it (ignored as input).
RUN_CONFIG_ENTRIES = ("policy", "value", "env_id")

#: RL-Zoo name -> (section, field here).  SB3-contrib TRPO's names (rl_zoo3 hyperparams/trpo.yml).
ZOO_KEYS = {
    "n_timesteps": ("train", "total_steps"),
    "n_envs": ("train", "n_envs"),
    "n_steps": ("train", "n_steps"),
    "batch_size": ("train", "critic_batch_size"),
    "gamma": ("train", "gamma"),
    "gae_lambda": ("train", "gae_lambda"),
    "learning_rate": ("train", "critic_lr"),
    "n_critic_updates": ("train", "critic_epochs"),
    "cg_damping": ("trpo", "cg_damping"),
    "cg_max_steps": ("trpo", "cg_iters"),
    "line_search_shrinking_factor": ("trpo", "backtrack_coeff"),
    "line_search_max_iter": ("trpo", "backtrack_iters"),
    "target_kl": ("trpo", "max_kl"),
    "sub_sampling_factor": ("trpo", "sub_sampling_factor"),
    "normalize_advantage": ("trpo", "normalize_adv"),
}
#: Zoo keys handled specially: ``policy`` (MlpPolicy only), ``policy_kwargs``, ``normalize``.
ZOO_SPECIAL = ("policy", "policy_kwargs", "normalize", "normalize_kwargs")
#: Zoo keys with no meaning here: ignored, with one line each.
ZOO_IGNORED = ("use_sde", "sde_sample_freq", "env_wrapper", "frame_stack", "callback", "vec_env_wrapper",
               "device", "verbose", "monitor_kwargs", "env_kwargs", "policy_delay", "stats_window_size")


class ConfigError(ValueError):
    """A config file or value that cannot be used (one line)."""


# ------------------------------------------------------------------------- numbers
def parse_steps(value, name: str = "steps") -> int:
    """A step count from an int, an integral float (``1e6``) or such a string (``"1e6"``, ``"1_000_000"``).

    Parameters
    ----------
    value : int, float or str
    name : str
        Named in the error.

    Returns
    -------
    int
    """
    v = value
    if isinstance(v, str):
        text = v.strip().replace("_", "")
        try:
            v = int(text)
        except ValueError:
            try:
                v = float(text)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number such as 100000 or 1e6, got {value!r}") from None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ConfigError(f"{name} must be a whole number such as 100000 or 1e6, got {value!r}")
    if isinstance(v, numbers.Integral):
        return int(v)
    if not (math.isfinite(v) and float(v).is_integer()):
        raise ConfigError(f"{name} must be a whole number such as 100000 or 1e6, got {value!r}")
    return int(v)


# ------------------------------------------------------------------ zoo translation
def _safe_literal(text: str, where: str):
    """Evaluate a zoo string such as ``dict(net_arch=[64, 64], activation_fn=nn.ReLU)`` without eval().

    Literals, lists, tuples, dicts, ``dict(k=v, ...)`` and dotted names (returned as
    their text, e.g. ``"nn.ReLU"``) are allowed; anything else is an error.
    """

    def ev(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
                and not node.args and all(k.arg for k in node.keywords):
            return {k.arg: ev(k.value) for k in node.keywords}
        if isinstance(node, (ast.Name, ast.Attribute)):
            return ast.unparse(node)
        raise ConfigError(f"{where}: cannot read {ast.unparse(node)!r} (only literals, dict(...) and nn.* names)")

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ConfigError(f"{where}: {text!r} is not a Python literal or dict(...) expression") from None
    return ev(tree.body)


_ACTIVATIONS = {"tanh": "tanh", "relu": "relu"}


def _zoo_policy_kwargs(value, where: str, notes: list) -> dict:
    kw = _safe_literal(value, where) if isinstance(value, str) else value
    if not isinstance(kw, dict):
        raise ConfigError(f"{where} must be a dict, got {value!r}")
    out = {}
    for k, v in kw.items():
        if k == "net_arch":
            if isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict):
                v = v[0]  # SB3 < 1.8: [dict(pi=[...], vf=[...])]
            if isinstance(v, dict):
                unknown = set(v) - {"pi", "vf"}
                if unknown:
                    raise ConfigError(f"{where}: net_arch keys {sorted(unknown)} (only pi and vf)")
                pi, vf = v.get("pi", []), v.get("vf", [])
            elif isinstance(v, list) and all(isinstance(h, int) and not isinstance(h, bool) for h in v):
                pi = vf = v
            else:
                raise ConfigError(f"{where}: net_arch {v!r} is not a list of widths or dict(pi=[...], vf=[...]) "
                                  "(layers shared by policy and critic do not exist here)")
            out["hidden_sizes"], out["vf_hidden_sizes"] = list(pi), list(vf)
        elif k == "activation_fn":
            name = str(v).rsplit(".", 1)[-1].lower()
            if name not in _ACTIVATIONS:
                raise ConfigError(f"{where}: activation_fn {v!r} is not available here (nn.Tanh or nn.ReLU)")
            out["activation"] = _ACTIVATIONS[name]
        elif k == "log_std_init":
            out["log_std_init"] = v
        elif k == "ortho_init":
            if v is not True:
                notes.append(f"{where}: ortho_init={v!r} ignored: the networks here are always initialised "
                             "orthogonally (SB3's default)")
        else:
            notes.append(f"{where}: {k}={v!r} has no meaning here; ignored")
    return out


def _zoo_normalize(value, where: str) -> dict:
    v = _safe_literal(value, where) if isinstance(value, str) and value.strip() not in ("true", "false") else value
    if isinstance(v, str):
        v = v.strip() == "true"
    if isinstance(v, bool):
        return {"normalize_obs": v, "normalize_reward": v}
    if isinstance(v, dict):
        unknown = set(v) - {"norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma"}
        if unknown:
            raise ConfigError(f"{where}: keys {sorted(unknown)} are not VecNormalize options used here")
        out = {"normalize_obs": v.get("norm_obs", True), "normalize_reward": v.get("norm_reward", True)}
        if "clip_obs" in v:
            out["obs_clip"] = v["clip_obs"]
        if "clip_reward" in v:
            out["reward_clip"] = v["clip_reward"]
        return out
    raise ConfigError(f"{where} must be true, false or dict(norm_obs=..., norm_reward=...), got {value!r}")


def zoo_to_fields(entry: dict, where: str = "zoo entry") -> tuple[dict, dict, list[str]]:
    """One RL-Zoo hyperparameter entry -> (TrainConfig fields, TRPOConfig fields, notes).

    Parameters
    ----------
    entry : dict
        The mapping under the env id in a zoo YAML file.
    where : str
        Prefix of every message (the file and the entry).

    Returns
    -------
    train : dict
    trpo : dict
    notes : list of str
        One line per ignored key.
    """
    from .train import TrainConfig
    from .trpo import TRPOConfig

    train_names = {f.name for f in fields(TrainConfig)}
    trpo_names = {f.name for f in fields(TRPOConfig)}
    train, trpo, notes = {}, {}, []
    for k, v in entry.items():
        here = f"{where}: {k}"
        if k in ZOO_KEYS:
            section, name = ZOO_KEYS[k]
            if k == "learning_rate" and isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    raise ConfigError(f"{here}: {v!r}: learning-rate schedules are not available here "
                                      "(give a number)") from None
            if name in STEP_FIELDS:
                v = parse_steps(v, here)
            (train if section == "train" else trpo)[name] = v
        elif k == "policy":
            if v != "MlpPolicy":
                raise ConfigError(f"{here}: {v!r} is not available here (only MlpPolicy)")
        elif k == "policy_kwargs":
            train.update(_zoo_policy_kwargs(v, here, notes))
        elif k == "normalize":
            train.update(_zoo_normalize(v, here))
        elif k == "normalize_kwargs":
            train.update(_zoo_normalize(v, here))
        elif k in ZOO_IGNORED:
            notes.append(f"{here}={v!r} has no meaning here; ignored")
        elif k in train_names:
            train[k] = v
        elif k in trpo_names:
            trpo[k] = v
        else:
            raise ConfigError(f"{here} is neither an RL-Zoo TRPO key nor a TrainConfig / TRPOConfig field")
    return train, trpo, notes


# -------------------------------------------------------------------- config files
def _yaml_loader(yaml):
    """PyYAML's safe loader, plus YAML 1.2's exponent floats: ``1e5`` and ``1e-3`` are numbers, not strings
    (YAML 1.1, which PyYAML follows, needs a dot and a signed exponent)."""
    import re

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return Loader


def _load_text(path: str, text: str):
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    try:
        import yaml
    except ImportError:  # pragma: no cover  (pyyaml is a core dependency)
        raise ConfigError(f"{path}: reading YAML needs pyyaml: pip install pyyaml") from None
    try:
        return yaml.load(text, Loader=_yaml_loader(yaml))
    except yaml.YAMLError as exc:
        what = "YAML" if suffix in (".yml", ".yaml") else "JSON or YAML"
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{path} is not valid {what}: {msg}") from None


def _is_zoo_file(doc: dict) -> bool:
    """Every top-level value is a mapping and no top key is a section or field of ours."""
    from .train import TrainConfig
    from .trpo import TRPOConfig

    ours = {f.name for f in fields(TrainConfig)} | {f.name for f in fields(TRPOConfig)} | {"train", "trpo"} \
        | set(RUN_CONFIG_ENTRIES)
    return bool(doc) and all(isinstance(v, dict) for v in doc.values()) and not (set(doc) & ours)


def read_config_file(path: str, env_id: str) -> tuple[dict, list[str]]:
    """The file layer of the settings: ``({"train": {...}, "trpo": {...}}, notes)``.

    JSON (``.json``) or YAML (anything else; JSON is YAML too).  A zoo file is
    recognised by the env id as top key (or by every top-level value being a
    mapping of zoo names); its entry for ``env_id`` is translated.  A run's own
    config.json is accepted: its ``policy`` / ``value`` entries are ignored and
    ``env_id`` (top-level or in ``train``) must be ``env_id``.

    Raises
    ------
    ConfigError
        One line naming the file.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    doc = _load_text(path, text)
    if not isinstance(doc, dict):
        raise ConfigError(f"--config {path} must hold a mapping of settings (a JSON object / YAML mapping)")
    notes: list[str] = []
    if env_id in doc and isinstance(doc[env_id], dict):
        train, trpo, notes = zoo_to_fields(doc[env_id], f"--config {path} [{env_id}]")
        return {"train": train, "trpo": trpo}, notes
    if _is_zoo_file(doc):
        if isinstance(doc.get("default"), dict):  # the zoo's own rule for an env it does not list
            train, trpo, notes = zoo_to_fields(doc["default"], f"--config {path} [default]")
            return {"train": train, "trpo": trpo}, [f"--config {path} has no entry for {env_id}: "
                                                    "using its 'default' entry"] + notes
        raise ConfigError(f"--config {path} has no entry for {env_id} (it has {', '.join(sorted(map(str, doc))[:6])})")
    for where, d in (("", doc), ("train.", doc.get("train"))):
        if isinstance(d, dict) and "env_id" in d and d["env_id"] != env_id:
            raise ConfigError(f"--config {path}: {where}env_id {d['env_id']!r} differs from ENV {env_id!r} "
                              "(drop it from the file, or train that env)")
    doc = {k: v for k, v in doc.items() if k not in RUN_CONFIG_ENTRIES}
    return doc, notes


# -------------------------------------------------------------------- the layers
def _split(layer: dict, what: str) -> tuple[dict, dict]:
    """A flat and/or nested layer -> (train fields, trpo fields); unknown keys and conflicts are errors.

    ``what`` prefixes each message ("" for none)."""
    from .train import TrainConfig
    from .trpo import TRPOConfig

    train_names = {f.name for f in fields(TrainConfig)}
    trpo_names = {f.name for f in fields(TRPOConfig)}
    layer = dict(layer or {})
    nested = {}
    what = f"{what}: " if what else ""
    for name in ("train", "trpo"):
        d = layer.pop(name, None)
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{what}entry {name!r} must be an object of fields, got {d!r}")
        nested[name] = dict(d)
    bad = set(nested["train"]) - train_names
    if bad:
        raise ConfigError(f"{what}unknown TrainConfig fields {sorted(bad)}")
    bad = set(nested["trpo"]) - trpo_names
    if bad:
        raise ConfigError(f"{what}unknown TRPOConfig fields {sorted(bad)}")
    train, trpo = nested["train"], nested["trpo"]
    for k, v in layer.items():
        if k in train_names:
            section, dest = "train", train
        elif k in trpo_names:
            section, dest = "trpo", trpo
        else:
            raise ConfigError(f"{what}unknown config key {k!r} (not a TrainConfig or TRPOConfig field)")
        if k in dest and dest[k] != v:
            raise ConfigError(f"{what}{k} is given twice, flat ({v!r}) and in {section!r} ({dest[k]!r})")
        dest[k] = v
    for k in STEP_FIELDS:
        if k in train:
            train[k] = parse_steps(train[k], f"{what}{k}")
    return train, trpo


def build_configs(env_id: str, preset: str = "sb3-contrib", overrides: dict | None = None,
                  options: dict | None = None):
    """(TrainConfig, TRPOConfig): preset < per-env table (:mod:`trpo_ref.envs`) < ``overrides`` < ``options``.

    Parameters
    ----------
    env_id : str
    preset : str
        A :data:`trpo_ref.trpo.PRESETS` name.
    overrides : dict, optional
        The config-file layer: flat fields, ``{"train": {...}, "trpo": {...}}``, or both
        (one layer: a field given both ways must agree).
    options : dict, optional
        The command-line layer (flat fields); beats ``overrides``.

    Returns
    -------
    TrainConfig, TRPOConfig

    Raises
    ------
    ValueError
        An unknown key, a value of the wrong type or range (naming the field), or
        settings under which no update can happen.
    """
    from .envs import env_defaults
    from .train import TrainConfig, check_trainable
    from .trpo import TRPOConfig

    table = env_defaults(env_id)
    train_kw = {"env_id": env_id, **table["train"]}
    trpo_kw = dict(table["trpo"])
    for layer, what in ((overrides, ""), (options, "options")):
        t, p = _split(layer, what)
        train_kw.update(t)
        trpo_kw.update(p)
    try:
        cfg = TrainConfig.from_dict(train_kw)
        trpo_cfg = TRPOConfig.preset(preset, **trpo_kw)
    except TypeError as exc:  # a value of a type the checks did not name
        raise ConfigError(f"invalid value: {exc}") from None
    check_trainable(cfg, trpo_cfg)
    return cfg, trpo_cfg
