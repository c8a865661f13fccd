"""Uploaded bytes -> 16 kHz mono float32, in memory, with a clear refusal for anything else.

Covers:
- ``decode_audio``: ``speech.audio.decode`` on the uploaded bytes (the same decoder and checks as
  ``speech.data.read_audio`` for files, so a served clip gets the same samples and refusals as the
  same file read offline: container sniffed from the first bytes, rate and decoded size checked
  before decoding, truncated WAV/FLAC refused); this module only maps the refusal's ``kind`` to an
  HTTP status and error code.
- ``decode_base64`` and ``parse_multipart`` (an in-memory multipart/form-data parser on top of
  ``python-multipart``: starlette's own parser spools parts over 1 MB to a temporary file, and this
  service writes nothing to disk per request).
Every refusal is a ``ServeError``: 400 (empty, corrupt, truncated, no samples, rate too low, NaN
samples, bad base64 or form), 413 (longer than the model's window, or too large to decode), 415 (not a
supported audio container).

Does not: read files from disk, trim silence, split long audio into windows, or compute features.
"""
from __future__ import annotations

import base64
import binascii

import numpy as np

from lorakit_nb.serve.errors import ServeError
from lorakit_nb.speech.audio import AudioDecodeError, decode, sniff  # noqa: F401  (sniff: re-exported)
from lorakit_nb.speech.window import SAMPLE_RATE

SEND = "send 16 kHz mono WAV or FLAC (e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`)"
FORMATS = ("wav", "flac", "ogg", "mp3")


def decode_audio(data: bytes, max_seconds: float) -> tuple[np.ndarray, dict]:
    """(samples at 16 kHz, float32 mono, shape (n,); facts) or a ``ServeError``.

    ``facts``: {"format", "sample_rate" (as sent), "channels", "seconds"}. A clip longer than
    ``max_seconds`` (the model's audio window) is refused with 413 before its samples are decoded.
    Example: decode_audio(open("clip.flac", "rb").read(), 5) -> (array of 51,200 floats, {...})
    """
    if not data:
        raise ServeError(400, "empty_file", f"the uploaded audio is empty (0 bytes); {SEND}")
    try:
        return decode(data, max_seconds, SAMPLE_RATE, formats=FORMATS)  # never what libsndfile might also guess
    except AudioDecodeError as e:  # speech.audio owns the checks; here only kind -> HTTP status and code
        fmt = (e.facts.get("format") or "audio").upper()
        if e.kind == "unsupported_format":
            raise ServeError(415, "unsupported_audio_format", "the upload is not WAV, FLAC, OGG or MP3 audio "
                             f"(unrecognised first bytes); {SEND}") from None
        if e.kind == "too_long":
            raise ServeError(413, "audio_too_long", f"{e.reason.replace('clip is', 'the clip is', 1)}; "
                             f"cut it into clips of at most {max_seconds:g} s and send each one "
                             f"(e.g. `ffmpeg -i IN -f segment -segment_time {max_seconds:g} -ar 16000 -ac 1 "
                             "part%03d.wav`)") from None
        if e.kind == "too_large":
            raise ServeError(413, "audio_too_large", f"the {fmt} upload is too large: {e.reason}; {SEND}") from None
        if e.kind == "empty":
            raise ServeError(400, "no_samples", f"the {fmt} upload holds no samples (0 frames); "
                             "send a recording that contains speech") from None
        if e.kind == "rate_too_low":
            raise ServeError(400, "sample_rate_too_low", f"{e.reason}; {SEND}") from None
        if e.kind == "truncated":
            raise ServeError(400, "truncated_audio", f"the {fmt} upload is cut short ({e.reason}); "
                             f"send the whole file; {SEND}") from None
        what = "holds NaN or infinite samples" if e.kind == "not_finite" else f"cannot be decoded ({e.reason})"
        raise ServeError(400, "invalid_audio", f"the {fmt} upload {what}; {SEND}") from None


def _short(exc: Exception) -> str:
    return str(exc).replace("<_io.BytesIO object", "<upload").splitlines()[0][:160] if str(exc) else type(exc).__name__


def decode_base64(text) -> bytes:
    """Bytes of a base64 string (standard or URL-safe alphabet; a ``data:...;base64,`` prefix is allowed)."""
    if not isinstance(text, str) or not text.strip():
        raise ServeError(400, "invalid_base64", 'field "audio" must be a non-empty base64 string of a WAV or '
                         'FLAC file, e.g. {"audio": "UklGR..."}')
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    s = "".join(text.split())
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(400, "invalid_base64", 'field "audio" is not valid base64; encode the file bytes, '
                         'e.g. `base64 -w0 clip.wav` or base64.b64encode(open("clip.wav", "rb").read())') from None


def parse_multipart(body: bytes, content_type: str, max_fields: int = 16) -> tuple[dict, dict]:
    """(fields {name: str}, files {name: bytes}) of a multipart/form-data body, all in memory.

    Example: a body built by ``openai`` ``client.audio.transcriptions.create(file=..., model=...)`` ->
    ({"model": "whisper-1", ...}, {"file": b"RIFF..."})
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ServeError(415, "unsupported_media_type", "send multipart/form-data with a `file` part "
                         "(e.g. `curl -F file=@clip.wav -F model=whisper-1 ...`)")
    parts: list[dict] = []
    state = {"field": b"", "value": b""}

    def on_part_begin():
        parts.append({"headers": {}, "data": bytearray()})

    def on_part_data(data, start, end):
        parts[-1]["data"] += data[start:end]

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        parts[-1]["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    callbacks = {"on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except Exception as e:  # python_multipart.exceptions.MultipartParseError and friends
        raise ServeError(400, "invalid_form", f"the multipart/form-data body cannot be parsed ({_short(e)}); "
                         "send it as a standard form upload (curl -F, requests files=, the openai client)") from None
    if len(parts) > max_fields:
        raise ServeError(400, "invalid_form", f"the form has {len(parts)} parts; at most {max_fields} are accepted")
    fields, files = {}, {}
    for part in parts:
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp:
            files[name] = bytes(part["data"])
        else:
            fields[name] = part["data"].decode("utf-8", "replace")
    return fields, files
