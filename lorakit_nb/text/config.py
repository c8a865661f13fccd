"""YAML training configs for text LoRA, in the style of lora-scripts: one file says what to train.

Covers: reading a YAML file into a validated `TrainConfig`, accepting the lora-scripts keys as written
(`base_model`, `train_data_dir`, `metadata_path`, `task_type`, `lora_rank`, `batch_size`, `epochs`,
`learning_rate`, `max_seq_length`, `output_dir`, `save_steps`, `dropout`) plus the keys this kit adds,
among them the adapter variants (`use_dora`, `use_rslora`, `init_lora_weights`, `loraplus_lr_ratio`,
`target_modules: all-linear`) and the combinations of them that cannot work;
unknown or mistyped keys raise a `ConfigError` naming the key, its line and the nearest valid key;
`learning_rate: 1e-4` works although PyYAML reads it as the STRING "1e-4" (YAML 1.1 floats need a dot);
checking that the model and the data files exist BEFORE any training starts.

Paths in a config file (data files, `output_dir`, a local `base_model`) are resolved relative to the
FOLDER OF THE CONFIG FILE, not the current directory, so a config works from anywhere. Overrides passed
in Python (`load_config(path, output_dir="runs/02")`) are taken relative to the current directory.

Field types are declared once, as TrainConfig's annotations; `_coerce` reads them. The allowed values
and the combinations that cannot work are `text/config_rules.py`.
Does not: load models or data (see `models/resolve.py`, `text/data.py`) or train (see `text/train.py`).

Example:
    >>> cfg = load_config("data/configs/wu_dialect_lora.yaml")       # doctest: +SKIP
    >>> cfg.learning_rate, cfg.target_modules                          # doctest: +SKIP
    (0.0005, ['q_proj', 'k_proj', 'v_proj', 'o_proj'])
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lorakit_nb.errors import ConfigError
from lorakit_nb.text.config_rules import ALL_LINEAR, TASK_TYPES, check_values, where
from lorakit_nb.text.data import PROMPT_TEMPLATES

# Spellings people write for the same key (lora-scripts and peft names) -> the field name here.
ALIASES = {"lora_dropout": "dropout", "num_train_epochs": "epochs", "lr": "learning_rate", "rank": "lora_rank",
           "r": "lora_rank", "per_device_train_batch_size": "batch_size", "model_name_or_path": "base_model",
           "dev_data_path": "eval_data_path"}
PATH_KEYS = ("train_data_dir", "metadata_path", "eval_data_path", "test_data_path", "output_dir")


@dataclass
class TrainConfig:
    """Everything one text-LoRA run needs. Field names are the YAML keys."""

    base_model: str = "gemma-3-270m"       # offline name, hub id ("Qwen/Qwen2.5-0.5B-Instruct") or local folder
    train_data_dir: str | None = None      # folder with train.csv and dev.csv (columns wu,mandarin,english)
    metadata_path: str | None = None       # an explicit training CSV (overrides train_data_dir/train.csv)
    eval_data_path: str | None = None      # dev CSV for eval loss / early stopping (default: <dir>/dev.csv)
    test_data_path: str | None = None      # optional test CSV (default: <dir>/test.csv when present)
    task_type: str = "text-generation"     # lora-scripts name; peft's CAUSAL_LM
    target: str = "mandarin"               # which column the model learns to write: mandarin | english
    prompt_template: str | None = None     # must contain {wu}; default chosen from `target`
    lora_rank: int = 8
    lora_alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list | str = field(default_factory=lambda: ["q_proj", "v_proj"])  # or "all-linear"
    use_dora: bool = False                 # DoRA: a learned magnitude per output row, LoRA for the direction
    use_rslora: bool = False               # rsLoRA: scaling alpha / sqrt(r) instead of alpha / r
    init_lora_weights: bool | str = True   # true | false | gaussian | pissa | pissa_niter_N | olora
    loraplus_lr_ratio: float | None = None  # LoRA+: the B matrices learn at ratio x learning_rate; null = off
    quantization: str = "none"             # none | 8bit | 4bit (bitsandbytes; 4bit = QLoRA NF4)
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    epochs: float = 3.0
    max_steps: int = -1                    # > 0 stops after that many optimizer steps (quick runs)
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_seq_length: int = 256
    output_dir: str = "output/wu_lora"
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    early_stopping_patience: int = 2       # evaluations without dev-loss improvement before stopping; 0 = off
    seed: int = 42
    response_only_logits: bool = True      # apply the 262k-vocab head only where the loss needs it
    dtype: str = "float32"                 # float32 | bfloat16 (fast on AVX-512 CPUs) | float16 (GPU) | auto
    num_threads: int = 0                   # CPU threads for torch; 0 = leave torch's default
    adapter_name: str = "default"
    max_train_examples: int = 0            # > 0 keeps only the first N training pairs (smoke tests)
    source: str | None = field(default=None, repr=False)  # the YAML file this came from, for messages

    @property
    def peft_task_type(self) -> str:
        return TASK_TYPES[self.task_type.lower()]

    @property
    def peft_target_modules(self) -> list | str:
        """What LoraConfig gets: the string "all-linear" as is, else a list of layer names."""
        return self.target_modules if self.target_modules == ALL_LINEAR else list(self.target_modules)

    @property
    def reinitializes_base(self) -> bool:
        """True for PiSSA / OLoRA: the init writes the residual W - scaling * B A into the base weights."""
        return isinstance(self.init_lora_weights, str) and self.init_lora_weights.startswith(("pissa", "olora"))

    @property
    def template(self) -> str:
        return self.prompt_template or PROMPT_TEMPLATES[self.target]

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name != "source"}
# The field types, read from TrainConfig's annotations (the one place they are declared): "float | None"
# -> ({float}, nullable). target_modules and init_lora_weights take two forms each and have parsers below.
_HINTS = typing.get_type_hints(TrainConfig)


def _field_type(key: str) -> tuple[set, bool]:
    """(the non-None types of a field, whether null is allowed). Example: "loraplus_lr_ratio" -> ({float}, True)."""
    hint = _HINTS[key]
    args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {hint}
    return args - {type(None)}, type(None) in args


def _number(key, value, at, kind: type):
    # PyYAML follows YAML 1.1: `1e-4` (no dot) is a string, `1.0e-4` a float. Accept both.
    what = "a whole number" if kind is int else "a number like 1e-4"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{at}: `{key}` must be {what}, got {value!r}.")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{at}: `{key}` must be {what}, got {value!r}.") from None
    if kind is float:
        return number
    if number != int(number):
        raise ConfigError(f"{at}: `{key}` must be {what}, got {value!r}.")
    return int(number)


def _target_modules(value, at):
    if isinstance(value, str) and value.strip().lower() == ALL_LINEAR:
        return ALL_LINEAR
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"{at}: `target_modules` must be a list of layer names like [q_proj, v_proj] "
                          "or the string all-linear.")
    if any(m.lower().replace("_", "-") == ALL_LINEAR for m in value):
        raise ConfigError(f"{at}: `target_modules: {value}`: all-linear is peft's shorthand on its own, "
                          "not a layer name; write `target_modules: all-linear` (no brackets, no other names).")
    return value


def _init_lora(value, at):
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # a quoted "true", a CLI override
        return value.strip().lower() == "true"
    return value.strip().lower() if isinstance(value, str) else value  # allowed values: config_rules


_PARSERS = {"target_modules": _target_modules, "init_lora_weights": _init_lora}


def _coerce(key, value, at):
    """Turn a YAML value into the field's annotated type. Example: ("learning_rate", "1e-4") -> 0.0001."""
    if key in _PARSERS:
        return _PARSERS[key](value, at)
    kinds, nullable = _field_type(key)
    if value is None and nullable:
        return None
    if kinds == {bool}:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: `{key}` must be true or false, got {value!r}.")
        return value
    if kinds in ({int}, {float}):
        return _number(key, value, at, kinds.pop())
    if value is not None and not isinstance(value, str):
        value = str(value)
    return value


def config_from_dict(raw: dict, base_dir=None, source=None, lines=None, check_files=True) -> TrainConfig:
    """Validate a plain dict (as read from YAML) into a `TrainConfig`.

    Relative paths are joined to `base_dir` (the config file's folder; the current directory if None).
    Example: config_from_dict({"base_model": "tiny-gemma", "lora_rnak": 8}) raises
    ConfigError("<config>: unknown key `lora_rnak` - did you mean `lora_rank`? ...").
    """
    lines = lines or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or '<config>'}: a config must be a YAML mapping of `key: value` lines.")
    values = {}
    for key, value in raw.items():
        at = where(source, lines, key)
        name = ALIASES.get(key, key)
        if name not in _FIELDS:
            valid = sorted(set(_FIELDS) | set(ALIASES))
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f" - did you mean `{near[0]}`?" if near else ""
            raise ConfigError(f"{at}: unknown key `{key}`{hint} Valid keys: {', '.join(sorted(_FIELDS))}.")
        if name in values:
            raise ConfigError(f"{at}: `{key}` sets `{name}` a second time; keep one of them.")
        values[name] = _coerce(name, value, at)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    for key in PATH_KEYS:
        if values.get(key):
            values[key] = str((base / Path(values[key]).expanduser()).resolve())
    model = values.get("base_model")
    first = model.replace("\\", "/").split("/")[0] if model else ""
    # a local folder or file, not a name: also "models/x" when ./models is a folder next to the config (a hub
    # id "org/name" has no such folder), so a typo in x is reported as a path, from the config's folder
    if model and (_looks_like_path(model) or (base / model).exists() or ("/" in model and (base / first).is_dir())):
        values["base_model"] = str((base / Path(model).expanduser()).resolve())
    cfg = TrainConfig(**values, source=str(source) if source else None)
    check_values(cfg, lines)
    if check_files:
        check_inputs(cfg, lines)
    return cfg


def _looks_like_path(name: str) -> bool:
    # "./models/x", "/abs/x", "~/x", "x.gguf" are files; "gemma-3-270m" and "Qwen/Qwen2.5-0.5B" are names/ids
    return name.startswith((".", "/", "~")) or name.endswith((".bin", ".gguf", ".safetensors", ".pt"))


def data_files(cfg: TrainConfig) -> dict:
    """The CSV paths a run reads: {"train": ..., "dev": ..., "test": ... or None}."""
    folder = Path(cfg.train_data_dir) if cfg.train_data_dir else None
    train = Path(cfg.metadata_path) if cfg.metadata_path else folder / "train.csv"
    dev = Path(cfg.eval_data_path) if cfg.eval_data_path else (folder or train.parent) / "dev.csv"
    test = Path(cfg.test_data_path) if cfg.test_data_path else (folder or train.parent) / "test.csv"
    return {"train": train, "dev": dev, "test": test if (cfg.test_data_path or test.exists()) else None}


def check_inputs(cfg: TrainConfig, lines=None) -> None:
    """Fail fast, before any model is loaded, when a data file or the base model cannot be found."""
    lines = lines or {}
    src = cfg.source or "<config>"
    if cfg.train_data_dir and not Path(cfg.train_data_dir).is_dir():
        raise ConfigError(f"{where(src, lines, 'train_data_dir')}: train_data_dir {cfg.train_data_dir} is not "
                          "a folder. Paths are relative to the config file's folder.")
    for split, path in data_files(cfg).items():
        key = {"train": "metadata_path", "dev": "eval_data_path", "test": "test_data_path"}[split]
        if path is not None and not path.is_file():
            raise ConfigError(f"{where(src, lines, key if key in lines else 'train_data_dir')}: {split} file "
                              f"{path} not found. Paths are relative to the config file's folder; set `{key}` "
                              "to point at it.")
    model = cfg.base_model
    if model.endswith(".bin") and "ggml" in Path(model).name:
        raise ConfigError(f"{where(src, lines, 'base_model')}: {model} is a GGML v3 file; transformers "
                          "cannot load it. Use a transformers folder, a .gguf file, an offline name such as "
                          "gemma-3-270m, or a hub id.")
    from lorakit_nb.models.resolve import ModelNotFoundError, resolve_model

    try:  # build=False: report a missing model now, convert an installed offline pack later, at load time
        resolve_model(model, build=False, quiet=True)
    except ModelNotFoundError as err:
        raise ConfigError(f"{where(src, lines, 'base_model')}: base_model {model!r} cannot be found: {err} "
                          "(local paths are relative to the config file's folder)") from None


def load_config(path, check_files=True, **overrides) -> TrainConfig:
    """Read and validate a YAML config; `overrides` replace keys (paths relative to the current folder).

    Example: load_config("data/configs/wu_dialect_lora.yaml", output_dir="runs/02/adapter", epochs=1)
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (current folder: {Path.cwd()}).")
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 ({e}); save the file as UTF-8.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        shape = "a list (lines starting with `- `)" if isinstance(raw, list) else f"a single {type(raw).__name__}"
        raise ConfigError(f"{path}, line {node.start_mark.line + 1}: the top level is {shape}; a config is "
                          "`key: value` lines. Fix: remove the leading `- ` so each line reads like "
                          "`lora_rank: 8`.")
    # line of each top-level key, so messages can say "line 7"
    lines = {k.value: k.start_mark.line + 1 for k, _ in getattr(node, "value", []) if hasattr(k, "value")}
    for key, value in overrides.items():
        if key in PATH_KEYS and value is not None:
            overrides[key] = str(Path(value).expanduser().resolve())
    cfg = config_from_dict(raw, base_dir=path.parent, source=str(path), lines=lines, check_files=False)
    if overrides:
        cfg = config_from_dict({**cfg.to_dict(), **overrides}, base_dir=Path.cwd(), source=str(path), lines=lines,
                               check_files=False)
    if check_files:
        check_inputs(cfg, lines)
    return cfg
