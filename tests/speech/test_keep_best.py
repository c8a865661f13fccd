"""train_asr keeps the adapter of the best-dev epoch, not the last one."""
import numpy as np
import pytest
import torch

from lorakit_nb.errors import LorakitError
from lorakit_nb.speech.train import DevCERCallback, best_dev_entry, restore_state


class _State:
    def __init__(self, epoch, step):
        self.epoch, self.global_step, self.log_history = epoch, step, []


def test_best_dev_entry_is_the_lowest_not_the_last():
    history = [{"epoch": 1.0, "dev_cer": 0.109}, {"epoch": 2.0, "dev_cer": 0.113},
               {"epoch": 3.0, "dev_cer": 0.102}, {"epoch": 4.0, "dev_cer": 0.105}]
    assert best_dev_entry(history)["epoch"] == 3.0
    assert best_dev_entry([{"epoch": 1.0, "dev_cer": 0.2}, {"epoch": 2.0, "dev_cer": 0.2}])["epoch"] == 1.0
    assert best_dev_entry([]) is None


def test_callback_keeps_the_weights_of_the_lowest_dev_cer_and_restore_puts_them_back(monkeypatch):
    """Three epochs with dev CER 0.3, 0.1, 0.2: the kept copy is epoch 2's weights, and restoring it
    undoes what epoch 3 changed (the frozen parameter is neither copied nor touched)."""
    import lorakit_nb.speech.train as train

    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)
    cers = iter([0.3, 0.1, 0.2])
    monkeypatch.setattr(train, "transcribe", lambda *a, **k: ["x"])
    monkeypatch.setattr("lorakit_nb.metrics.cer", lambda refs, hyps: next(cers))
    cb = DevCERCallback(processor=None, audios=[np.zeros(10)], references=["x"])
    weights = {}
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        weights[epoch] = model.weight.detach().clone()
        cb.on_epoch_end(None, _State(float(epoch), 10 * epoch), None, model=model)
    assert cb.best_entry["epoch"] == 2.0 and set(cb.best_state) == {"weight"}
    assert torch.equal(model.weight, weights[3])
    restore_state(model, cb.best_state)
    assert torch.equal(model.weight, weights[2])
    with pytest.raises(LorakitError):
        restore_state(model, {"no_such": torch.zeros(1)})
