"""export.longform: VAD pieces within the window, and a long clip's transcript against its clips'.

Unit tests run on synthetic speech-region lists; one real-model test (the whisper-base offline pack,
zero-shot) joins the committed other-voice test clips (natural voice: zero-shot whisper-base is on firm
ground there) with 0.8 s pauses into ~60 s and checks CER and piece times.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lorakit_nb.export.longform import join_texts, plan_pieces
from tests.models import test_ct2_reader
from tests.models.test_ct2_reader import needs_pack

converted = test_ct2_reader.converted  # the real whisper-base pack as CT2 + transformers folders (a fixture)
SR = 16_000
OTHER_VOICE = Path(__file__).resolve().parents[2] / "data" / "zh_speech_other_voice" / "test.jsonl"
GAP = 0.8  # seconds of silence between joined clips


def _covers(regions, pieces, max_len):
    assert all(e - s <= max_len for s, e in pieces), pieces
    assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:])), "pieces overlap or are out of order"
    for s, e in regions:  # every speech sample lies in exactly one piece
        inside = sum(max(0, min(e, pe) - max(s, ps)) for ps, pe in pieces)
        assert inside == e - s, (s, e, pieces)


@pytest.mark.parametrize("regions,max_len,expected", [
    ([(0, 2), (3, 4), (6, 14)], 5, [(0, 4), (6, 10), (10, 14)]),  # merge two, split one of 8 into 4 + 4
    ([(0, 5), (5, 10)], 5, [(0, 5), (5, 10)]),                      # exactly the window: no merge
    ([(0, 1), (2, 3), (4, 5)], 5, [(0, 5)]),                        # three short ones fit together
    ([(10, 21)], 5, [(10, 13), (13, 17), (17, 21)]),                # 11 -> three near-equal parts
    ([], 5, []),
])
def test_plan_pieces_merges_and_splits(regions, max_len, expected):
    pieces = plan_pieces(regions, max_len)
    assert pieces == expected
    _covers(regions, pieces, max_len)


def test_plan_pieces_random_regions_stay_within_window():
    rng = np.random.default_rng(0)
    for _ in range(50):
        edges = np.cumsum(rng.integers(1, 40_000, size=2 * rng.integers(1, 30)))
        regions = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
        _covers(regions, plan_pieces(regions, 80_000), 80_000)


def test_join_texts_spaces_only_between_words_of_spaced_languages():
    assert join_texts(["你好 ", "", " 世界"], "zh") == "你好世界"
    assert join_texts(["hello", "world "], "en") == "hello world"


@needs_pack
@pytest.mark.skipif(not OTHER_VOICE.is_file(), reason="speech data not generated")
def test_long_clip_cer_and_piece_times_match_its_clips(converted):
    """~60 s of test clips with 0.8 s pauses, cut at a 5 s window: the joined transcript's CER is no more
    than 3 points above the clips transcribed one by one (cutting loses no speech), and every piece starts and ends within 0.5 s of a clip edge."""
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_decode_batch, load_ct2, prompt_ids
    from lorakit_nb.export.longform import transcribe_long
    from lorakit_nb.metrics import cer
    from lorakit_nb.speech.data import load_manifest, read_audio

    ct2_dir, hf_dir = converted
    processor = WhisperProcessor.from_pretrained(hf_dir)  # whisper-base pads every piece to its 30 s
    model = load_ct2(ct2_dir, "int8")
    clips, refs, total = [], [], 0.0
    for row in load_manifest(OTHER_VOICE):
        if total >= 60:
            break
        clips.append(read_audio(row["audio"]))
        refs.append(row["text"])
        total += len(clips[-1]) / SR + GAP
    gap = np.zeros(int(GAP * SR), np.float32)
    audio = np.concatenate([x for c in clips for x in (c, gap)])
    starts = np.cumsum([0] + [len(c) + len(gap) for c in clips[:-1]]) / SR
    edges = np.concatenate([starts, starts + np.array([len(c) for c in clips]) / SR])

    out = transcribe_long(model, processor, audio, 5)
    alone = [t for t, _ in ct2_decode_batch(model, processor, clips, prompt_ids(processor.tokenizer))]
    cer_long, cer_alone = cer(["".join(refs)], [out["text"]]), cer(["".join(refs)], ["".join(alone)])
    print(f"{len(clips)} clips, {len(audio) / SR:.1f} s, {len(out['segments'])} pieces; "
          f"CER joined {cer_long:.4f} vs clips alone {cer_alone:.4f}")
    assert len(out["segments"]) >= len(clips) // 2  # cut, not decoded as one 5 s window
    assert all(s["end"] - s["start"] <= 5 for s in out["segments"])
    off = [min(abs(edges - t)) for s in out["segments"] for t in (s["start"], s["end"])]
    assert max(off) <= 0.5, off
    assert cer_long <= cer_alone + 0.03, (cer_long, cer_alone)
