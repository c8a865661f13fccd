"""The rules a text-LoRA training config must follow: allowed values and combinations that cannot work.

Covers: `check_values` (task type, target column, quantization, dtype (`auto` resolved here), prompt
template, sizes >= 1, learning rate, dropout and warmup ratio ranges, epochs or max_steps) and the
adapter-variant rules (`init_lora_weights` values; PiSSA / OLoRA with a quantized base or with DoRA;
LoRA+ ratio), each refusal naming the YAML file, the key's line and the fix; `where` words that place;
`check_target_modules`: every name in `target_modules` is a linear layer of the base model (checked on
an empty "meta" copy of the model before the weights load, when its config.json is on disk).
Does not: read YAML or turn values into types (`text/config.py`, which calls `check_values` on every
config it builds), or check that files and models exist (`text/config.check_inputs`).

Example:
    >>> check_values(config_from_dict({...}, check_files=False))   # doctest: +SKIP  (None when all is well)
"""
from __future__ import annotations

from lorakit_nb.errors import ConfigError
from lorakit_nb.text.data import PROMPT_TEMPLATES

TASK_TYPES = {"text-generation": "CAUSAL_LM", "causal_lm": "CAUSAL_LM", "causal-lm": "CAUSAL_LM"}
QUANTIZATION = ("none", "8bit", "4bit")
# init_lora_weights values peft takes without extra data: True = A random, B = 0 (output = base at step 0);
# False = B random too (a test setting); pissa / pissa_niter_N / olora move the top singular (QR) directions
# of each base weight into A, B and leave the residual in the base.
INIT_LORA = (True, False, "gaussian", "pissa", "pissa_niter_N", "olora")
ALL_LINEAR = "all-linear"  # peft's shorthand: every nn.Linear except the output head


def where(source, lines, key) -> str:
    """Where a key sits, for messages. Example: where("my.yaml", {"lora_rank": 7}, "lora_rank") -> "my.yaml, line 7"."""
    line = (lines or {}).get(key)
    return f"{source or '<config>'}" + (f", line {line}" if line else "")


def check_values(cfg, lines=None) -> None:
    """Raise ConfigError at the first value or combination a run cannot use; resolves `dtype: auto`.

    Example: a config with `dropout: 1.5` -> ConfigError("my.yaml, line 9: dropout must be in [0, 1), got 1.5.")
    """
    lines = lines or {}

    def fail(key, msg):
        raise ConfigError(f"{where(cfg.source, lines, key)}: {msg}")

    if cfg.task_type.lower() not in TASK_TYPES:
        fail("task_type", f"task_type {cfg.task_type!r} is not supported here; use \"text-generation\".")
    if cfg.target not in PROMPT_TEMPLATES:
        fail("target", f"target must be one of {sorted(PROMPT_TEMPLATES)}, got {cfg.target!r}.")
    if cfg.quantization.lower() not in QUANTIZATION:
        fail("quantization", f"quantization must be one of {QUANTIZATION}, got {cfg.quantization!r}.")
    cfg.quantization = cfg.quantization.lower()
    if cfg.dtype == "auto":  # resolved once, here, so the run and its saved config name the dtype used
        from lorakit_nb.env import fast_dtype

        cfg.dtype = fast_dtype()
    if cfg.dtype not in ("float32", "bfloat16", "float16"):
        fail("dtype", f"dtype must be float32, bfloat16, float16 or auto, got {cfg.dtype!r}.")
    if cfg.prompt_template is not None and "{wu}" not in cfg.prompt_template:
        fail("prompt_template", "prompt_template must contain {wu} where the Wu sentence goes.")
    for key in ("lora_rank", "batch_size", "max_seq_length", "save_steps", "gradient_accumulation_steps"):
        if getattr(cfg, key) < 1:
            fail(key, f"`{key}` must be at least 1, got {getattr(cfg, key)}.")
    if not 0 < cfg.learning_rate < 1:
        fail("learning_rate", f"learning_rate {cfg.learning_rate} is outside (0, 1); LoRA uses ~1e-4 .. 1e-3.")
    if not 0 <= cfg.dropout < 1:
        fail("dropout", f"dropout must be in [0, 1), got {cfg.dropout}.")
    if not 0 <= cfg.warmup_ratio < 1:
        fail("warmup_ratio", f"warmup_ratio is the fraction of the training steps spent warming up the learning "
             f"rate, so 0 <= warmup_ratio < 1 (0.03 .. 0.1 is usual); got {cfg.warmup_ratio}.")
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        fail("epochs", "set epochs > 0 (or max_steps > 0).")
    _check_variant(cfg, fail)
    if not (cfg.train_data_dir or cfg.metadata_path):
        raise ConfigError(f"{cfg.source or '<config>'}: say where the data is: `train_data_dir: <folder with "
                          "train.csv, dev.csv>` or `metadata_path: <train.csv>`.")


def _check_variant(cfg, fail) -> None:
    """The adapter-variant keys: allowed values, and the combinations that cannot work (why in each message)."""
    init = cfg.init_lora_weights
    niter = isinstance(init, str) and init.startswith("pissa_niter_") and init[len("pissa_niter_"):].isdigit()
    if not (isinstance(init, bool) or init in ("gaussian", "pissa", "olora") or niter):
        allowed = ", ".join(str(v).lower() if isinstance(v, bool) else v for v in INIT_LORA)
        fail("init_lora_weights", f"init_lora_weights must be one of {allowed} (N = SVD iterations, e.g. "
             f"pissa_niter_4), got {init!r}.")
    if cfg.reinitializes_base and cfg.quantization != "none":
        fail("init_lora_weights", f"init_lora_weights: {init} rewrites the base weights as W - scaling * B A, "
             f"which a {cfg.quantization} bitsandbytes base cannot hold exactly (peft refuses PiSSA on it; OLoRA "
             "re-quantizes the residual, so step 0 no longer equals the base). Use quantization: none, or "
             "init_lora_weights: true with QLoRA.")
    if cfg.reinitializes_base and cfg.use_dora:
        fail("init_lora_weights", f"init_lora_weights: {init} with use_dora: true cannot be saved: the kit saves "
             "a PiSSA/OLoRA adapter converted to plain LoRA (so it loads on the unchanged base) and that "
             "conversion keeps only lora_A/lora_B, not DoRA's magnitude vector. Drop one of the two.")
    if cfg.loraplus_lr_ratio is not None and not cfg.loraplus_lr_ratio > 0:
        fail("loraplus_lr_ratio", f"loraplus_lr_ratio must be > 0 (the LoRA+ paper uses 16), or null for "
             f"plain LoRA; got {cfg.loraplus_lr_ratio}.")


def linear_layer_names(model) -> list[str]:
    """Dotted names of a model's nn.Linear layers (bitsandbytes' 4/8-bit Linear included).

    A layer peft has already wrapped counts under its own name (its ``base_layer``); the adapters' own
    ``lora_A`` / ``lora_B`` Linears are not layers of the model.
    Example: tiny-gemma -> ["model.layers.0.self_attn.q_proj", ..., "lm_head"] (with or without a LoRA on q_proj)
    """
    import torch

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".lora_A." in name or ".lora_B." in name:
            continue
        names.append(name.removesuffix(".base_layer"))
    return names


def _meta_linear_names(base_model: str) -> list[str] | None:
    """The linear layers of `base_model` from its config.json alone (an empty model on the meta device, no
    weights read); None when the folder is not on disk yet or transformers cannot build it from the config."""
    from pathlib import Path

    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from lorakit_nb.models.resolve import resolve_model

        folder = Path(resolve_model(base_model, build=False, quiet=True).path)
        if not (folder / "config.json").is_file():
            return None
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    except Exception:  # noqa: BLE001 - any failure here means "check after loading instead"
        return None
    return linear_layer_names(model)


def check_target_modules(cfg, model=None, lines=None) -> None:
    """Refuse `target_modules` naming no linear layer of the base model, listing the names it has.

    `model`: the loaded model; None checks before loading where config.json is on disk (else nothing yet).
    peft matches a name to a layer whose dotted name equals it or ends in `.name`.
    Example: target_modules [q_projj] on tiny-gemma -> ConfigError("..., line 3: target_modules q_projj
    is not a linear layer of tiny-gemma; its linear layers are: down_proj, gate_proj, ... Fix: ...")
    """
    if cfg.target_modules == ALL_LINEAR:
        return
    names = linear_layer_names(model) if model is not None else _meta_linear_names(cfg.base_model)
    if not names:
        return
    missing = [t for t in cfg.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        example = ["q_proj", "v_proj"] if {"q_proj", "v_proj"} <= set(leaves) else leaves[:2]
        raise ConfigError(f"{where(cfg.source, lines, 'target_modules')}: target_modules {', '.join(missing)} "
                          f"{'is not a linear layer' if len(missing) == 1 else 'are not linear layers'} of "
                          f"{cfg.base_model}; its linear layers are: {', '.join(leaves)}. Fix: list some of "
                          f"those, e.g. target_modules: [{', '.join(example)}], or write target_modules: "
                          f"{ALL_LINEAR}.")
