"""Tests for lorakit_nb.text.train / text.evaluate / text.adapters on tiny-gemma (random weights, byte-level tokenizer).

tiny-gemma's tokenizer maps every UTF-8 byte to one id (0..255) and prepends <bos> (id 258), so the
expected ids below can be derived by hand from the bytes of the text.
"""
import json
import math
import struct

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lorakit_nb.metrics import chrf
from lorakit_nb.models.resolve import load_causal_lm
from lorakit_nb.text.adapters import adapter_scale, load_adapters, lora_scalings
from lorakit_nb.text.evaluate import evaluate_text_adapter, generate_batch
from lorakit_nb.text.train import (
    IGNORE,
    PadCollator,
    encode_pair,
    encode_pairs,
    full_logits_loss,
    response_only_loss,
    train_from_config,
)

TEMPLATE = "Translate Wu dialect to Mandarin: {wu}\nMandarin:"
PAIRS = [("侬好", "你好", "Hello"), ("谢谢侬", "谢谢你", "Thank you"), ("阿拉走了", "我们走了", "We are off"),
         ("侬吃饭了伐", "你吃饭了吗", "Have you eaten"), ("今朝落雨", "今天下雨", "It rains today"),
         ("勿晓得", "不知道", "I don't know"), ("伊拉来了", "他们来了", "They came"), ("覅急", "别急", "No rush")]


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny-gemma", offline=True)


def _pairs(rows):
    return [{"wu": w, "mandarin": m, "english": e} for w, m, e in rows]


def _lora(model, seed=0):
    """LoRA with B != 0 (init_lora_weights=False), so the adapter really changes the output."""
    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))


def test_labels_mask_prompt_and_padding(tiny):
    """Prompt "P:" -> [bos 258, 'P' 80, ':' 58]; response " 好" -> [' ' 32, 0xE5 229, 0xA5 165, 0xBD 189]
    + eos 257. Labels are -100 on the 3 prompt ids; padding gets pad id, attention 0 and label -100."""
    _, tok = tiny
    ex = encode_pair(tok, "P:", "好", max_len=64)
    assert ex["input_ids"] == [258, 80, 58, 32, 229, 165, 189, 257]
    assert ex["labels"] == [IGNORE] * 3 + [32, 229, 165, 189, 257]
    short = encode_pair(tok, "P:", "", max_len=64)  # response = just " " + eos: 5 ids
    batch = PadCollator(tok.pad_token_id)([ex, short])
    assert batch["input_ids"][1].tolist() == [258, 80, 58, 32, 257] + [tok.pad_token_id] * 3
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 3
    assert batch["labels"][1].tolist() == [IGNORE] * 3 + [32, 257] + [IGNORE] * 3
    # a too-long pair keeps the prompt whole and cuts the response
    assert encode_pair(tok, "P:", "好", max_len=5)["labels"] == [IGNORE] * 3 + [32, 229]


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_response_only_loss_equals_full_logit_loss(softcap):
    """Logits only at response positions give the SAME loss and the SAME LoRA gradients as the model's
    own full-logit loss (mean cross-entropy over labels != -100), with and without Gemma's soft cap."""
    model, tok = load_causal_lm("tiny-gemma", offline=True)
    model.config.final_logit_softcapping = softcap
    model = _lora(model)
    batch = PadCollator(tok.pad_token_id)(encode_pairs(tok, _pairs(PAIRS[:4]), TEMPLATE, "mandarin", 128))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for fn in (full_logits_loss, response_only_loss):
        model.zero_grad()
        loss = fn(model, **batch)
        loss.backward()
        grads.append([p.grad.clone() for p in params])
        if fn is full_logits_loss:
            ref = loss.item()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ref, rel=1e-5)
    for g_full, g_fast in zip(*grads):
        torch.testing.assert_close(g_fast, g_full, rtol=1e-4, atol=1e-6)


def test_adapter_scale_zero_gives_base_outputs(tiny):
    """scaling = alpha / r = 2 per layer; inside adapter_scale(m, 0) the LoRA term is multiplied by 0,
    so logits equal the base model's (adapter disabled) exactly; scale 1 differs; scalings restored."""
    model, tok = load_causal_lm("tiny-gemma", offline=True)
    model = _lora(model)
    ids = tok(["侬好"], return_tensors="pt")
    with torch.no_grad(), model.disable_adapter():
        base = model(**ids).logits
    with torch.no_grad(), adapter_scale(model, 0.0):
        assert lora_scalings(model) == [0.0] * 4  # 2 layers x (q_proj, v_proj)
        zero = model(**ids).logits
    with torch.no_grad():
        full = model(**ids).logits
    torch.testing.assert_close(zero, base, rtol=0, atol=0)
    assert (full - base).abs().max() > 1e-4
    assert lora_scalings(model) == [2.0] * 4


def test_weight_scale_is_not_a_peft_argument(tmp_path):
    """The blog's `PeftModel.from_pretrained(m, path, weight_scale=0.8)`: peft 0.21 accepts the keyword
    and IGNORES it - the scaling stays alpha / r = 2.0, not 0.8 * 2.0. Hence adapter_scale()."""
    model, _ = load_causal_lm("tiny-gemma", offline=True)
    _lora(model).save_pretrained(tmp_path)
    base, _ = load_causal_lm("tiny-gemma", offline=True)
    loaded = PeftModel.from_pretrained(base, tmp_path, weight_scale=0.8)
    assert lora_scalings(loaded) == [2.0] * 4


def test_generate_batch_keeps_order_and_matches_unbatched(tiny):
    """Left padding must not change greedy outputs: batch_size 3 (mixed lengths) == one at a time."""
    model, tok = tiny
    prompts = [TEMPLATE.format(wu=w) for w, _, _ in PAIRS[:5]]
    one = generate_batch(model, tok, prompts, max_new_tokens=6, batch_size=1, progress=False)
    many = generate_batch(model, tok, prompts, max_new_tokens=6, batch_size=3, progress=False)
    assert one == many and len(many) == 5 and all("\n" not in t for t in many)


def _write_data(root):
    d = root / "wu"
    d.mkdir()
    head = "wu,mandarin,english\n"
    rows = lambda rs: head + "".join(f"{w},{m},{e}\n" for w, m, e in rs)
    (d / "train.csv").write_text(rows(PAIRS[:6]), "utf-8")
    (d / "dev.csv").write_text(rows(PAIRS[6:]), "utf-8")
    return d


def test_short_training_run_loss_falls_and_saves_safetensors(tmp_path):
    """6 pairs, batch 3 -> 2 steps/epoch; 10 epochs at lr 3e-2 on a random tiny model: the train loss
    must be finite and fall. It starts near ln(260) = 5.56 (uniform over the byte vocabulary); the
    frozen random tied head (weights ~0.02) keeps logits small, so the fall is modest (~0.3 nats
    here) but far above noise: the run is seeded and repeats exactly. Then: the adapter is a safetensors
    file (8-byte little-endian header length + JSON header naming lora_A/lora_B tensors), no pickle;
    incremental training resumes from it; evaluate_text_adapter writes a metrics JSON; two adapters share
    one base and `set_adapter` switches between them."""
    _write_data(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\nlora_rank: 4\nlora_alpha: 8\nbatch_size: 3\n"
                   "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]\n"
                   "epochs: 10\nlearning_rate: 3e-2\nsave_steps: 4\nlogging_steps: 1\nmax_seq_length: 96\n"
                   "early_stopping_patience: 0\ndropout: 0.0\noutput_dir: out\nadapter_name: mandarin\n", "utf-8")
    res = train_from_config(cfg)
    losses = [loss for _, loss in res.train_losses]
    assert all(math.isfinite(x) for x in losses) and len(losses) >= 10
    assert losses[0] == pytest.approx(5.56, abs=0.1)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1
    assert res.eval_losses[-1][1] < res.eval_losses[0][1]
    assert res.eval_losses and res.eval_loss_best == min(l for _, l in res.eval_losses)
    files = sorted(p.name for p in (tmp_path / "out" / "adapter").iterdir())
    assert "adapter_model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    raw = (tmp_path / "out" / "adapter" / "adapter_model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert any("lora_A" in k for k in header) and any("lora_B" in k for k in header)
    assert res.adapter_bytes == len(raw)
    # load_best_model_at_end really loaded the best checkpoint's weights (peft nests named adapters)
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    best = load_file(f"{res.best_checkpoint}/adapter_model.safetensors")
    now = get_peft_model_state_dict(res.model, adapter_name="mandarin")
    assert best.keys() == now.keys()
    for k in best:
        torch.testing.assert_close(now[k], best[k])

    # incremental: the resumed model starts from the saved weights and is trainable
    base, tok = load_causal_lm("tiny-gemma", offline=True)
    resumed = train_from_config(cfg, model=base, tokenizer=tok, resume_adapter=res.adapter_dir,
                                epochs=1, output_dir=str(tmp_path / "out2"))
    assert resumed.steps == 2 and (tmp_path / "out2" / "adapter" / "adapter_model.safetensors").is_file()

    report = evaluate_text_adapter(res.adapter_dir, tmp_path / "wu" / "dev.csv", tmp_path / "eval.json")
    saved = json.loads((tmp_path / "eval.json").read_text("utf-8"))
    assert saved["n"] == 2 == report["n"] and saved["target"] == "mandarin"
    # the saved score is the chrF of the saved outputs against the saved references, not some other run's
    ex = saved["examples"]
    assert saved["chrf"] == pytest.approx(chrf([e["reference"] for e in ex], [e["output"] for e in ex]))

    base, tok = load_causal_lm("tiny-gemma", offline=True)
    both = load_adapters(base, {"mandarin": res.adapter_dir, "v2": resumed.adapter_dir})
    ids = tok(["侬好"], return_tensors="pt")
    with torch.no_grad():
        a = both(**ids).logits
        both.set_adapter("v2")
        b = both(**ids).logits
    with torch.no_grad():
        single = PeftModel.from_pretrained(load_causal_lm("tiny-gemma", offline=True)[0], resumed.adapter_dir)
        torch.testing.assert_close(b, single(**ids).logits)
    assert (a - b).abs().max() > 0


def test_cli_trains_from_yaml(tmp_path, capsys):
    """`lorakit train --config X.yaml` runs the same train_from_config and says where the adapter is;
    a mistyped key fails with exit code 1 and names the nearest valid key."""
    from lorakit_nb.cli import main

    _write_data(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\nlora_rank: 2\nbatch_size: 3\nepochs: 1\n"
                   "learning_rate: 1e-3\noutput_dir: out\n", "utf-8")
    assert main(["train", "--config", str(cfg)]) == 0
    assert "adapter saved to" in capsys.readouterr().out
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    cfg.write_text(cfg.read_text("utf-8").replace("lora_rank", "lora_rnak"), "utf-8")
    assert main(["train", "--config", str(cfg)]) == 1
    assert "lora_rank" in capsys.readouterr().err


def test_bfloat16_training_runs_the_response_only_head(tmp_path):
    """dtype bfloat16 (the CPU profile's choice on AVX-512 machines): Trainer's bf16 mode has accelerate
    convert the model's outputs to float32, so the hidden states reach the bf16 head as float32 unless the
    loss casts them back. Two steps must run, with a finite loss near ln(260) = 5.56 on the random model."""
    _write_data(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\nlora_rank: 2\nbatch_size: 3\nmax_steps: 2\n"
                   "learning_rate: 1e-3\nsave_steps: 2\nearly_stopping_patience: 0\ndtype: bfloat16\n"
                   "output_dir: out\n", "utf-8")
    res = train_from_config(cfg)
    assert res.steps == 2 and res.train_loss_first == pytest.approx(5.56, abs=0.15)
    assert next(res.model.get_base_model().parameters()).dtype == torch.bfloat16


def test_train_refuses_a_dev_sentence_that_is_also_in_train(tmp_path, capsys):
    """The dev loss picks the best checkpoint: a dev sentence seen in training makes it a memory test.
    `lorakit train` refuses, naming both files and lines, before any model is loaded."""
    from lorakit_nb.cli import main

    d = _write_data(tmp_path)
    dev = d / "dev.csv"
    first_train = (d / "train.csv").read_text("utf-8").splitlines()[1]
    dev.write_text(dev.read_text("utf-8") + first_train.replace("!", "！") + "\n", "utf-8")  # NFKC: same sentence
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\nlora_rank: 2\nbatch_size: 3\nepochs: 1\n"
                   "output_dir: out\n", "utf-8")
    assert main(["train", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "dev.csv, line" in err and "train.csv, line 2" in err and "one split only" in err
    assert not (tmp_path / "out").exists()
