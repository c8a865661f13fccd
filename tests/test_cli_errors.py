"""Broken input through the `lorakit` CLI: one line on stderr naming the file or field and the fix, exit 1.

Each case was a traceback or misleading advice before (issue: "one line, naming the fix"); each test
asserts the line names the thing to fix and says none of the old wrong advice. In-process `cli.main`
calls on tiny models (tiny-gemma, tiny-whisper, random weights), plus one real `lorakit` process.
The read-only-output cases use a real read-only bind mount (root ignores chmod 0555); the disk-full
case makes the kit's one write path (`io.atomic_file`'s fsync) raise ENOSPC, as a full disk does.
"""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lorakit_nb import io as kit_io
from lorakit_nb.cli import main

REPO = Path(__file__).resolve().parents[1]
HEADER = "wu,mandarin,english\n"
ROWS = "侬好,你好,Hello\n谢谢侬,谢谢你,Thank you\n阿拉走了,我们走了,We are off\n"


def _run(capsys, *argv) -> str:
    """Run the CLI; assert exit 1 and ONE stderr line without a traceback; return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("lorakit ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """A text adapter (tiny-gemma, with lorakit_train.json) and a Whisper one (tiny-whisper, lorakit_asr.json)."""
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    from lorakit_nb.adapter_files import SpeechSidecar, TrainSidecar, save_adapter
    from lorakit_nb.models.resolve import load_causal_lm, resolve_model

    root = tmp_path_factory.mktemp("adapters")
    model, _ = load_causal_lm("tiny-gemma", offline=True)
    save_adapter(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")),
                 root / "text", sidecar=TrainSidecar(base_model="tiny-gemma", target="mandarin"))
    whisper = WhisperForConditionalGeneration.from_pretrained(resolve_model("tiny-whisper", quiet=True).path)
    save_adapter(get_peft_model(whisper, LoraConfig(r=2, target_modules=["q_proj"])), root / "speech",
                 sidecar=SpeechSidecar(base_model="tiny-whisper", audio_seconds=5))
    return {"text": root / "text", "speech": root / "speech"}


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(HEADER + ROWS, encoding="utf-8")
    return path


@pytest.fixture
def manifest(tmp_path):
    """Two committed Mandarin clips, with absolute paths."""
    rows = [json.loads(line) for line in (REPO / "data/zh_speech/test.jsonl").read_text("utf-8").splitlines()[:2]]
    path = tmp_path / "speech.jsonl"
    path.write_text("".join(json.dumps({"audio": str(REPO / "data/zh_speech" / r["audio"]), "text": r["text"]},
                                       ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _copy_adapter(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _config(tmp_path, text: str) -> Path:
    data = tmp_path / "wu"
    data.mkdir(exist_ok=True)
    (data / "train.csv").write_text(HEADER + ROWS, encoding="utf-8")
    (data / "dev.csv").write_text(HEADER + "覅急,别急,No rush\n", encoding="utf-8")
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- config and data files

def test_yaml_list_at_top_level_is_one_line_from_the_real_command(tmp_path):
    """A real `lorakit` process: before, yaml.compose's SequenceNode broke the line-number dict comprehension
    (TypeError traceback)."""
    cfg = _config(tmp_path, "- base_model: tiny-gemma\n- train_data_dir: wu\n")
    proc = subprocess.run([sys.executable, "-m", "lorakit_nb.cli", "train", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{cfg}, line 1: the top level is a list" in proc.stderr and "remove the leading `- `" in proc.stderr


def test_target_modules_the_base_lacks_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """tiny-gemma's config.json is on disk, so the names are checked on an empty meta-device copy: the real
    load must not happen. Before, peft raised NoMatchingPeftModuleError after loading."""
    from lorakit_nb.models.resolve import resolve_model
    from lorakit_nb.text import train

    resolve_model("tiny-gemma", quiet=True)  # built once into the cache: config.json on disk
    monkeypatch.setattr(train, "load_base_model", lambda cfg: pytest.fail("the model was loaded"))
    cfg = _config(tmp_path, f"base_model: tiny-gemma\ntrain_data_dir: wu\noutput_dir: {tmp_path / 'out'}\n"
                            "target_modules: [q_projj, v_proj]\n")
    line = _run(capsys, "train", "--config", cfg)
    assert "target_modules q_projj is not a linear layer of tiny-gemma" in line
    assert "q_proj" in line.split("its linear layers are:")[1] and "all-linear" in line


def test_target_modules_checked_on_the_loaded_model_when_no_config_is_on_disk():
    """The after-load check (a base not on disk before loading): same one line, from the model's own layers."""
    from lorakit_nb.errors import ConfigError
    from lorakit_nb.models.resolve import load_causal_lm
    from lorakit_nb.text.config import config_from_dict
    from lorakit_nb.text.config_rules import check_target_modules

    model, _ = load_causal_lm("tiny-gemma", offline=True)
    cfg = config_from_dict({"base_model": "not-on-disk/model", "train_data_dir": ".", "target_modules": ["qkv"]},
                           check_files=False)
    with pytest.raises(ConfigError, match=r"target_modules qkv is not a linear layer of not-on-disk/model; its "
                                          r"linear layers are: .*q_proj"):
        check_target_modules(cfg, model)


def test_csv_with_only_its_header(tmp_path, capsys):
    """Before: accepted as 0 pairs, then a datasets 'Column prompt doesn't exist' traceback in training."""
    data = tmp_path / "header.csv"
    data.write_text(HEADER, encoding="utf-8")
    line = _run(capsys, "evaluate", "--model", "tiny-gemma", "--data", data, "--out", tmp_path / "e.json")
    assert f"{data}: only the header line, no sentence pairs" in line and "add one pair per line" in line


def test_unclosed_quote_is_named_not_a_missing_comma(tmp_path, capsys):
    """`侬好,"你好,Hello` opens a quote in the mandarin cell that swallows the rest of the file: 2 fields.
    Before: 'Fix: a comma is missing or the row is cut short'."""
    data = tmp_path / "quote.csv"
    data.write_text(HEADER + '侬好,"你好,Hello\n谢谢侬,谢谢你,Thanks\n', encoding="utf-8")
    line = _run(capsys, "evaluate", "--model", "tiny-gemma", "--data", data, "--out", tmp_path / "e.json")
    assert f"{data}, line 2: the 'mandarin' cell runs over several lines" in line and "never closed" in line
    assert "comma is missing" not in line


def test_gb18030_manifest_names_the_encoding(manifest, tmp_path, capsys):
    """Before: a UnicodeDecodeError traceback from Path.read_text."""
    gb = tmp_path / "gb.jsonl"
    gb.write_bytes(manifest.read_text("utf-8").encode("gb18030"))
    line = _run(capsys, "evaluate", "--model", "tiny-whisper", "--data", gb, "--out", tmp_path / "e.json")
    assert f"{gb}, line 1: not UTF-8 text" in line and "GBK/GB18030" in line and "iconv -f GB18030" in line


def test_mistyped_local_path_is_a_path_not_a_hub_id(tmp_path, csv_file, capsys, monkeypatch):
    """`models/tiny-gema` with ./models present: before, 'not in the Hugging Face cache and the hub gave nothing'."""
    (tmp_path / "models" / "tiny-gemma").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    line = _run(capsys, "evaluate", "--model", "models/tiny-gema", "--data", csv_file, "--out", "e.json")
    assert "models/tiny-gema: no such folder" in line and f"did you mean {tmp_path / 'models' / 'tiny-gemma'}" in line
    assert "Hugging Face cache" not in line


# ---------------------------------------------------------------- adapters

@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_truncated_safetensors(adapters, tmp_path, csv_file, capsys, command):
    """Half an adapter_model.safetensors (an interrupted copy): before, a SafetensorError traceback."""
    broken = _copy_adapter(adapters["text"], tmp_path / "cut")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    argv = (["evaluate", "--adapter", broken, "--data", csv_file, "--out", tmp_path / "e.json"] if command == "evaluate"
            else ["export", "gguf", "--adapter", broken, "--out", tmp_path / "a.gguf"])
    line = _run(capsys, *argv)
    assert f"{weights}: unreadable or cut short" in line and "copy the adapter folder again" in line


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_invalid_adapter_config(adapters, tmp_path, csv_file, capsys, command):
    """A cut-off adapter_config.json: before, a JSONDecodeError traceback."""
    broken = _copy_adapter(adapters["text"], tmp_path / "badcfg")
    (broken / "adapter_config.json").write_text('{"r": 2,', encoding="utf-8")
    argv = (["evaluate", "--adapter", broken, "--data", csv_file, "--out", tmp_path / "e.json"] if command == "evaluate"
            else ["export", "gguf", "--adapter", broken, "--out", tmp_path / "a.gguf"])
    line = _run(capsys, *argv)
    assert f"{broken / 'adapter_config.json'}: not valid JSON" in line


def test_text_adapter_on_a_speech_manifest(adapters, manifest, tmp_path, capsys):
    """Before: 'adapter without lorakit_asr.json; ... base_model='whisper-base'' (a Whisper base for a text adapter)."""
    line = _run(capsys, "evaluate", "--adapter", adapters["text"], "--data", manifest, "--out", tmp_path / "e.json")
    assert "is a text (causal-LM) adapter" in line and "wu,mandarin,english CSV" in line
    assert "whisper-base" not in line


def test_whisper_adapter_on_a_csv(adapters, csv_file, tmp_path, capsys):
    """Before: '... is a whisper model; load_causal_lm needs a causal language model' (an internal function)."""
    line = _run(capsys, "evaluate", "--adapter", adapters["speech"], "--data", csv_file, "--out", tmp_path / "e.json")
    assert "is a Whisper (speech) adapter" in line and ".jsonl" in line and "load_causal_lm" not in line


def test_text_adapter_given_as_a_ctranslate2_model(adapters):
    """`lorakit serve --model <text adapter>` reaches load_ct2 (serve.engine): before, 'export it with
    export_ct2(...)', advice for a Whisper model; a text adapter is served with --adapter."""
    from lorakit_nb.errors import ExportError
    from lorakit_nb.export.ct2 import load_ct2

    with pytest.raises(ExportError) as err:
        load_ct2(adapters["text"])
    assert "is a text (causal-LM) LoRA adapter" in str(err.value) and f"--adapter NAME={adapters['text']}" in str(err.value)
    assert "export_ct2" not in str(err.value)


# ---------------------------------------------------------------- full and read-only disks

@pytest.fixture
def read_only(tmp_path):
    """A folder no one can write to: chmod 0555 for a normal user; for root (which ignores it) a read-only
    bind mount, or a skip where mounting is not permitted."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").write_text("x")
    except OSError:
        yield ro
        ro.chmod(0o755)
        return
    (ro / "probe").unlink()
    ro.chmod(0o755)
    mounted = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True).returncode == 0 and \
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode == 0
    if not mounted:
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("running as root (chmod 0555 is ignored) and a read-only bind mount is not permitted here")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.parametrize("command", ["train", "evaluate", "import", "export"])
def test_read_only_output_is_one_line(adapters, csv_file, read_only, tmp_path, capsys, command):
    """Before: an OSError [Errno 30] traceback from makedirs / mkstemp (train only after loading the model)."""
    out = read_only / "out"
    if command == "train":
        argv = ["train", "--config", _config(tmp_path, f"base_model: tiny-gemma\ntrain_data_dir: wu\noutput_dir: {out}\n")]
    elif command == "evaluate":
        argv = ["evaluate", "--model", "tiny-gemma", "--data", csv_file, "--out", out / "e.json"]
    elif command == "import":
        src = tmp_path / "clips"
        src.mkdir()
        (src / "a.flac").write_bytes((REPO / "data/zh_speech/audio").glob("*.flac").__next__().read_bytes())
        (src / "a.txt").write_text("你好", encoding="utf-8")
        argv = ["data", "import", src, "--out", out]
    else:
        argv = ["export", "gguf", "--adapter", adapters["text"], "--out", out / "a.gguf"]
    line = _run(capsys, *argv)
    assert f"cannot write {out}" in line and "read-only file system" in line


def test_disk_full_while_writing_names_the_file(csv_file, tmp_path, capsys, monkeypatch):
    """ENOSPC from the final fsync of the metrics JSON (the data was written, the disk filled): before, an
    OSError traceback naming no file; now the target, not the hidden temp file, and nothing half-written."""
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kit_io.os, "fsync", full)
    out = tmp_path / "e.json"
    line = _run(capsys, "evaluate", "--model", "tiny-gemma", "--data", csv_file, "--out", out)
    assert line == f"lorakit evaluate: no space left on {out}: free some disk space (or write elsewhere) and run it again"
    assert os.listdir(tmp_path) == ["pairs.csv"]  # no e.json, no .e.json.*.tmp left behind


# ---------------------------------------------------------------- notebook 03's window

def test_window_shorter_than_every_clip_names_the_longest():
    """AUDIO_SECONDS = 2 with clips of 3.0 and 4.2 s: before, '0 training clips' then a tensor error in Trainer."""
    from lorakit_nb.errors import AudioError
    from lorakit_nb.speech.whisper import fit_window

    clips = [np.zeros(16000 * 3, np.float32), np.zeros(int(16000 * 4.2), np.float32)]
    with pytest.raises(AudioError, match=r"all 2 training clips are longer than the 2 s window \(shortest 3.0 s, "
                                         r"longest 4.2 s\)\. Fix: set AUDIO_SECONDS to at least 5"):
        fit_window(clips, ["a", "b"], 2)
    assert fit_window(clips, ["a", "b"], 3)[1:] == (["a"], 1)  # one fits: trained on, the other left out
