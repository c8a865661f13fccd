"""Adapter variants side by side on dev: several short runs on one base, each scored on the dev split.

Covers: `train_variants` (one adapter per named set of config overrides, all on the same in-memory base,
each scored on dev; returns a row per variant and its dev outputs, for paired comparisons with
`metrics.compare_systems`), and `DevScorer` (with `config_values`: train a learner's r / alpha / lr briefly and return its dev
chrF, reusing a run already made with the same values; exercise 02.4 checks against it).
Does not: choose what ships (notebook 02 ships its config's adapter; this table is a comparison), score
test, or run the long grid (`benchmarks/adapter_variants.py` does, with more steps and more variants).
"""
from __future__ import annotations

from pathlib import Path

from lorakit_nb.text.evaluate import evaluate_pairs
from lorakit_nb.text.train import train_from_config

TUNABLE = ("lora_rank", "lora_alpha", "learning_rate")  # what exercise 02.4 lets the learner change


def train_variants(cfg, model, tokenizer, runs: dict, dev, output_dir, **eval_kwargs):
    """Train one adapter per entry of `runs` ({name: config overrides}) on `model`, score each on `dev`.

    Every run adds its adapter to the same PeftModel (the base is shared, never copied); no early stop,
    no intermediate checkpoints. Returns (rows, outputs, model): rows = [{"variant", "steps",
    "examples_seen", "dev_chrf", "dev_loss_best", "s_per_step", "adapter_mb"}], outputs = {name: dev
    outputs}. Example: train_variants(cfg, base, tok, {"plain": {"max_steps": 29}, "dora": {"use_dora":
    True, "max_steps": 29}}, dev, "runs/02b/variants", template=cfg.template, target="mandarin")
    -> ([{"variant": "plain", "steps": 29, "dev_chrf": 44.9, ...}, ...], {"plain": [...], ...}, model)
    """
    rows, outputs = [], {}
    for name, overrides in runs.items():
        run = train_from_config(cfg, model=model, tokenizer=tokenizer, output_dir=str(Path(output_dir) / name),
                                adapter_name=name, early_stopping_patience=0, save_steps=10_000, **overrides)
        model = run.model
        model.set_adapter(name)
        scored = evaluate_pairs(model, tokenizer, dev, progress=False, **eval_kwargs)
        outputs[name] = scored["outputs"]
        rows.append({"variant": name, "steps": run.steps, "examples_seen": run.steps * run.config.batch_size,
                     "dev_chrf": scored["chrf"], "dev_loss_best": run.eval_loss_best,
                     "s_per_step": run.train_seconds / max(run.steps, 1), "adapter_mb": run.adapter_bytes / 1e6})
        print(f"{name:13s} {run.steps:3d} steps: dev chrF {scored['chrf']:.1f}, dev loss {run.eval_loss_best:.3f}, "
              f"{run.train_seconds:.0f} s")
    return rows, outputs, model


def config_values(cfg, values: dict | None = None) -> tuple:
    """The full (lora_rank, lora_alpha, learning_rate) that a dict of overrides means for `cfg`.

    Example: config_values(cfg) -> (16, 32, 0.001); config_values(cfg, {"learning_rate": 1e-4}) -> (16, 32, 0.0001)
    """
    values = values or {}
    unknown = set(values) - set(TUNABLE)
    if unknown:
        raise KeyError(f"only {TUNABLE} are tuned here, not {sorted(unknown)}")
    return tuple(type(getattr(cfg, k))(values.get(k, getattr(cfg, k))) for k in TUNABLE)


class DevScorer:
    """Dev chrF of a short run with the learner's r / alpha / lr (the rest of the config unchanged).

    `known` = {(lora_rank, lora_alpha, learning_rate): dev chrF} reuses runs already made at the same
    budget (e.g. the variants table's plain row), so the reference answer costs nothing more.
    Example: score = DevScorer(cfg, model, tok, dev, steps=29, output_dir="runs/02b/tune", known={(16, 32,
    1e-3): 44.9}, template=cfg.template, target="mandarin"); score({"learning_rate": 1e-3}) -> 44.9
    """

    def __init__(self, cfg, model, tokenizer, dev, steps: int, output_dir, known=None, **eval_kwargs):
        self.cfg, self.model, self.tokenizer, self.dev, self.steps = cfg, model, tokenizer, dev, steps
        self.output_dir, self.known, self.eval_kwargs, self.runs = Path(output_dir), dict(known or {}), eval_kwargs, 0

    def __call__(self, values: dict) -> float:
        key = config_values(self.cfg, values)
        if key not in self.known:
            self.runs += 1
            name = f"tune{self.runs}"
            rows, _, self.model = train_variants(
                self.cfg, self.model, self.tokenizer, {name: {**dict(zip(TUNABLE, key)), "max_steps": self.steps}},
                self.dev, self.output_dir, **self.eval_kwargs)
            self.known[key] = rows[0]["dev_chrf"]
        return self.known[key]
