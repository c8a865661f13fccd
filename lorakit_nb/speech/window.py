"""Whisper's audio window: the one place that knows how seconds, mel frames and encoder positions relate.

Covers: ``window_seconds`` (read the window a model is built for), ``set_processor_window`` (make the
feature extractor pad/cut to it), ``recorded_window`` / ``window_of`` (the window a saved adapter or
export was trained with, read from its sidecar JSON) and the constants behind them. The window lives in three objects
(the encoder's ``embed_positions``/``max_source_positions``, the model config, the feature extractor)
and every other module asks this one to read or set it, so the three can never disagree.
Does not: shrink a model's encoder (``speech.whisper.shrink_audio_context``, which calls this module).

The arithmetic: 16 kHz audio, hop 160 samples -> 100 mel frames per second; conv2 has stride 2, so
two frames make one encoder position -> 50 positions per second. Whisper's full window is 30 s =
3000 frames = 1500 positions.
"""
from __future__ import annotations

from pathlib import Path

SAMPLE_RATE = 16_000  # Whisper's feature extractor works at 16 kHz (the kit's one sample rate)
FRAMES_PER_SECOND = 100  # hop_length 160 samples at 16 kHz
POSITIONS_PER_SECOND = 50  # conv2 stride 2: two mel frames -> one encoder position
FULL_WINDOW_SECONDS = 30  # Whisper's own window


def frames_for(seconds: int) -> int:
    """Mel frames in a window. Example: frames_for(5) -> 500; frames_for(30) -> 3000."""
    return int(seconds) * FRAMES_PER_SECOND


def positions_for(seconds: int) -> int:
    """Encoder positions in a window. Example: positions_for(5) -> 250; positions_for(30) -> 1500."""
    return int(seconds) * POSITIONS_PER_SECOND


def window_seconds(model) -> int:
    """The window (whole seconds) a Whisper model is built for, read from its encoder positions.

    Example: window_seconds(whisper_base) -> 30; after shrink_audio_context(model, processor, 5) -> 5.
    """
    config = getattr(model, "config", model)
    return int(config.max_source_positions) // POSITIONS_PER_SECOND


def model_frames(model) -> int:
    """Mel frames a Whisper encoder takes: two per position (conv2 has stride 2).

    Example: model_frames(whisper_base) -> 3000; after shrink_audio_context(model, processor, 5) -> 500.
    """
    config = getattr(model, "config", model)
    return int(config.max_source_positions) * FRAMES_PER_SECOND // POSITIONS_PER_SECOND


def set_processor_window(processor, seconds: int) -> None:
    """Make the feature extractor pad/cut every clip to ``seconds`` (``seconds * 100`` frames).

    Example: set_processor_window(processor, 5); processor.feature_extractor.nb_max_frames -> 500
    """
    fe = getattr(processor, "feature_extractor", processor)
    fe.chunk_length = int(seconds)
    fe.n_samples = int(seconds) * fe.sampling_rate
    fe.nb_max_frames = frames_for(seconds)


def recorded_window(folder) -> int | None:
    """The audio window a model was trained with, if its folder recorded it (adapter or export), else None.

    Example: recorded_window("runs/03/adapter") -> 5 (lorakit_asr.json says audio_seconds 5)
    """
    from lorakit_nb.adapter_files import ExportSidecar, SpeechSidecar

    folder = Path(folder)
    adapter, export = SpeechSidecar.load(folder), ExportSidecar.load(folder)
    if adapter and adapter.audio_seconds:
        return int(adapter.audio_seconds)
    if export:
        seconds = (export.trained_with or {}).get("audio_seconds") or export.audio_seconds
        return int(seconds) if seconds else None
    return None


def window_of(folder, override=None) -> int:
    """The window to run a saved model at: `override` if given, else the one it recorded, else 30 s.

    The one owner of that fallback (scoring, the CT2 export, the server and its load test all ask here).
    Example: window_of("runs/04/ct2_int8") -> 5; window_of("runs/04/ct2_int8", override=8) -> 8;
    window_of(a folder without a sidecar) -> 30
    """
    return int(override or recorded_window(folder) or FULL_WINDOW_SECONDS)
