"""A Trainer callback that draws the train and dev loss curves, live in Jupyter.

Covers: `LossPlotCallback`, which collects every logged train loss and eval loss; inside a Jupyter
kernel it redraws one figure in place as numbers arrive (papermill stores the last drawing); in a
script or in CI it only collects, and `plot()` draws on demand.
`plot_strength_curve` draws dev chrF against adapter strength with each point's bootstrap interval.
Does not: log anywhere else (TensorBoard, W&B) or decide when to stop training.
"""
from __future__ import annotations

from transformers import TrainerCallback


class LossPlotCallback(TrainerCallback):
    """Collects train/dev losses; in Jupyter redraws one figure in place as they arrive.

    Outside a notebook (scripts, CI) it only collects: `plot()` draws the final figure on demand.
    """

    def __init__(self, live: bool = True):
        self.train, self.dev, self._handle, self.live = [], [], None, live

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.train.append((state.global_step, float(logs["loss"])))
        if "eval_loss" in logs:
            self.dev.append((state.global_step, float(logs["eval_loss"])))
        if self.live and ("loss" in logs or "eval_loss" in logs):
            self._redraw()

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.2))
        if self.train:
            ax.plot(*zip(*self.train), "o-", ms=3, label="train loss")
        if self.dev:
            ax.plot(*zip(*self.dev), "s--", label="dev loss (each evaluation)")
        ax.set_xlabel("optimizer step"), ax.set_ylabel("cross-entropy (response tokens)"), ax.legend()
        return fig or ax.figure

    def _redraw(self):
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None or "IPKernelApp" not in get_ipython().config:
            return  # not in a Jupyter kernel: nothing to redraw
        import matplotlib.pyplot as plt

        fig = self.plot()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)


def plot_strength_curve(curve, references, chosen=None, ax=None):
    """Dev chrF by adapter scale, each point with its 95 % bootstrap interval (sentences resampled).

    `curve` = `strength_curve` rows (with "outputs"); returns {scale: (lo, hi)} and draws on `ax`.
    Example: plot_strength_curve(curve, [p["mandarin"] for p in dev], chosen=1.0) -> {0.0: (10.1, 20.3), ...}
    """
    import matplotlib.pyplot as plt

    from lorakit_nb.metrics import bootstrap_ci, chrf

    intervals = {r["scale"]: bootstrap_ci(chrf, references, r["outputs"]) for r in curve}
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    xs, ys = [r["scale"] for r in curve], [r["chrf"] for r in curve]
    err = [[y - intervals[x][0] for x, y in zip(xs, ys)], [intervals[x][1] - y for x, y in zip(xs, ys)]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label="dev chrF, 95 % interval")
    if chosen is not None:
        ax.axvline(chosen, color="gray", ls=":", label=f"chosen on dev: {chosen:g}")
    ax.set_xlabel("adapter scale (multiplies alpha / r)"), ax.set_ylabel("dev chrF"), ax.legend(fontsize=8)
    return intervals
