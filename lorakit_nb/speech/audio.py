"""The kit's one audio decoder: a file path or uploaded bytes -> 16 kHz mono float32 plus facts.

Covers: ``decode`` (libsndfile via ``soundfile``, mono mix-down, soxr resampling) with every check in
one place, so offline reading (``speech.data.read_audio``, ``speech.importers``) and serving
(``serve.audio.decode_audio``) refuse the same files for the same reasons. Checks, in order: missing
file, empty bytes, unsupported/corrupt header, rate below 8 kHz and decoded size (rate x channels x
seconds) *before* decoding, length against ``max_seconds`` (from the header when it declares one; a
streamed FLAC declaring 0/unknown samples is decoded in blocks and checked on its real samples),
frames decoded against the frames the WAV/FLAC header declares (a cut file is "truncated", never a
shorter clip), no samples, NaN/inf samples. Every refusal is one ``AudioDecodeError`` whose ``kind``
is one of ``KINDS``; callers map the kind (importer summary, HTTP status) and never parse messages.
Also ``is_silent``: an RMS no-speech gate (below -45 dBFS) a transcription path may apply before decoding.
Does not: trim silence, split long audio, compute features, or write files.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lorakit_nb.errors import AudioError
from lorakit_nb.speech.window import FULL_WINDOW_SECONDS, SAMPLE_RATE

MIN_SR = 8_000  # telephone quality; below this the speech band (up to ~4 kHz) is already lost
MAX_SECONDS = float(FULL_WINDOW_SECONDS)
MAX_DECODED_VALUES_PER_SECOND = 96_000 * 2  # 96 kHz stereo: the largest input a speech clip needs
FIX = "re-export it as 16 kHz mono WAV/FLAC (e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`)"
KINDS = ("missing", "unsupported_format", "corrupt", "truncated", "empty", "rate_too_low", "too_long",
         "too_large", "not_finite")


class AudioDecodeError(AudioError):
    """One refusal of ``decode``: ``kind`` (one of ``KINDS``), ``reason`` and ``fix`` (no file name)."""

    def __init__(self, kind: str, reason: str, fix: str, name: str = "", facts: dict | None = None):
        self.kind, self.reason, self.fix, self.name, self.facts = kind, reason, fix, name, facts or {}
        super().__init__(f"{name}: {reason}; {fix}." if name else f"{reason}; {fix}.")


def sniff(data: bytes) -> str | None:
    """The audio container from its magic bytes, or None.

    Example: sniff(b"RIFF\\x24\\x00\\x00\\x00WAVEfmt ") -> "wav"; sniff(b"fLaC...") -> "flac"
    """
    head = bytes(data[:12])
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def declared_frames(data: bytes) -> int | None:
    """Frames the WAV ``data`` chunk or FLAC STREAMINFO declares; None when unknown (streamed) or other.

    Example: declared_frames(open("clip.wav", "rb").read(4096 + 44)) -> 32000 for a 2 s 16 kHz clip
    """
    fmt = sniff(data)
    if fmt == "flac" and len(data) >= 26:
        total = int.from_bytes(data[18:26], "big") & ((1 << 36) - 1)  # STREAMINFO: 36-bit total samples
        return total or None
    if fmt == "wav" and data[:4] == b"RIFF":
        pos, align, size = 12, 0, None
        while pos + 8 <= len(data):
            cid, n = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
            if cid == b"fmt " and pos + 22 <= len(data):
                align = int.from_bytes(data[pos + 20:pos + 22], "little")  # bytes per frame
            if cid == b"data":
                size = n
                break
            pos += 8 + n + (n & 1)
        if size is None or not align or size in (0, 0xFFFFFFFF):
            return None
        return size // align
    return None


def decode(source: str | Path | bytes, max_seconds: float = MAX_SECONDS, target_sr: int = SAMPLE_RATE,
           name: str = "", formats: tuple[str, ...] | None = None) -> tuple[np.ndarray, dict]:
    """(samples at ``target_sr``, float32 mono, shape (n,); facts) or an ``AudioDecodeError``.

    ``source`` is a path (its name prefixes the message) or the file's bytes; ``formats`` limits the
    containers accepted by their magic bytes (None: whatever libsndfile reads). ``facts``:
    {"format", "sample_rate" (as stored), "channels", "seconds"}.
    Example: decode("clip.flac") -> (array of 32,000 floats, {"format": "flac", "sample_rate": 16000, ...})
    """
    import soundfile as sf

    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise AudioDecodeError("missing", "audio file not found", "fix the path in the manifest", name)
        data = path.read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise AudioDecodeError("empty", "the audio is empty (0 bytes)", "re-record it or delete the row", name)
    fmt = sniff(data)
    if formats is not None and fmt not in formats:
        raise AudioDecodeError("unsupported_format", f"not {', '.join(f.upper() for f in formats)} audio "
                               "(unrecognised first bytes)", FIX, name)
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # libsndfile: LibsndfileError / RuntimeError on bad headers
        kind = "corrupt" if fmt else "unsupported_format"
        raise AudioDecodeError(kind, f"cannot decode audio ({_short(e)}); the file is corrupt or in an "
                               "unsupported format", FIX, name, {"format": fmt}) from None
    fmt = fmt or str(info.format).lower()
    sr, ch = int(info.samplerate), int(info.channels)
    facts = {"format": fmt, "sample_rate": sr, "channels": ch}
    if sr < MIN_SR:
        raise AudioDecodeError("rate_too_low", f"sample rate {sr} Hz is below {MIN_SR} Hz, too low for speech",
                               "use a recording made at 8 kHz or more", name, facts)
    declared = declared_frames(data)
    known = declared is not None or fmt not in ("wav", "flac")
    frames = declared if declared is not None else int(info.frames)
    if known and frames == 0:
        raise AudioDecodeError("empty", "audio holds no samples (0 frames)", "re-record it or delete the row",
                               name, facts)
    if known and frames / sr > max_seconds:
        raise AudioDecodeError("too_long", f"clip is {frames / sr:.1f} s, longer than {max_seconds:g} s "
                               "(the model's audio window)", "cut it into shorter clips "
                               f"(e.g. `ffmpeg -i IN -f segment -segment_time {max_seconds:g} -ar 16000 -ac 1 "
                               "part%03d.wav`)", name, {**facts, "seconds": frames / sr})
    cap = int(MAX_DECODED_VALUES_PER_SECOND * max_seconds)  # float32 values the decoded clip may hold
    if known and frames * ch > cap:
        raise AudioDecodeError("too_large", f"{sr} Hz x {ch} channels x {frames / sr:.2f} s decodes to "
                               f"{frames * ch * 4 / 1e6:.0f} MB, over the {cap * 4 / 1e6:.0f} MB limit", FIX,
                               name, facts)
    x, err = _read(data, sr, ch, cap, max_seconds, name, facts)  # (n_frames, channels), libsndfile error
    if declared is not None and x.shape[0] < declared:  # a WAV cut short reads silently; a FLAC loses sync
        raise AudioDecodeError("truncated", f"the file is cut short: header declares {declared} frames, "
                               f"{x.shape[0]} decoded", "copy or upload the whole file again", name, facts)
    if err:
        raise AudioDecodeError("corrupt", f"cannot decode audio ({err}); the file is corrupt", FIX, name, facts)
    if x.shape[0] == 0:
        raise AudioDecodeError("empty", "audio holds no samples", "re-record it or delete the row", name, facts)
    if not np.isfinite(x).all():
        raise AudioDecodeError("not_finite", "audio holds NaN or infinite samples", FIX, name, facts)
    x = x.mean(axis=1)  # (n_frames,): mono mix-down
    if sr != target_sr:
        import soxr
        x = soxr.resample(x, sr, target_sr)  # (round(n_frames * target_sr / sr),)
    x = np.ascontiguousarray(x, dtype=np.float32)
    facts["seconds"] = len(x) / target_sr
    return x, facts


def _read(data: bytes, sr: int, ch: int, cap: int, max_seconds: float, name: str,
          facts: dict) -> tuple[np.ndarray, str]:
    """(frames decoded, shape (n, ch); libsndfile's error text or "") in 1 s blocks, length checked per block.

    Reads through libsndfile's ``sf_readf_float`` directly: ``SoundFile.read`` seeks after every block
    and fails ("psf_fseek() failed") on a streamed FLAC whose header declares 0 samples.
    """
    import soundfile as sf

    blocks, n, err = [], 0, ""
    with sf.SoundFile(io.BytesIO(data)) as f:
        while True:
            block = np.empty((sr, ch), np.float32)
            got = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", block.ctypes.data), sr)
            code = sf._snd.sf_error(f._file)
            blocks.append(block[:got])
            n += got
            if code:
                err = sf._ffi.string(sf._snd.sf_error_number(code)).decode("utf-8", "replace")
                break
            if n / sr > max_seconds:
                raise AudioDecodeError("too_long", f"clip is over {max_seconds:g} s (the model's audio window)",
                                       "cut it into shorter clips", name, facts)
            if n * ch > cap:
                raise AudioDecodeError("too_large", "the decoded audio is over the size limit", FIX, name, facts)
            if got < sr:
                break
    return np.concatenate(blocks), err


def _short(exc: Exception) -> str:
    s = str(exc).replace("<_io.BytesIO object", "<upload")
    return s.splitlines()[0][:160] if s else type(exc).__name__


SILENCE_RMS_DBFS = -45.0  # committed zh_speech clips: quietest RMS -21.6 dBFS (460 clips), 23 dB above this


def is_silent(samples: np.ndarray, rms_dbfs: float = SILENCE_RMS_DBFS) -> bool:
    """True when a clip's RMS level is below ``rms_dbfs`` (digital silence, faint room noise).

    A no-speech gate for callers that choose to return an empty transcript instead of what Whisper
    writes for speech-free input (e.g. "你"); the caller decides, this only measures.
    Example: is_silent(np.zeros(16000, np.float32)) -> True; is_silent(a spoken clip) -> False
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return True
    rms = float(np.sqrt(np.mean(x * x)))
    return rms < 10 ** (rms_dbfs / 20)
