"""Every knob of ``lorakit serve``, in one place: the defaults, the types and the ``--flag`` help.

Covers: ``ServeSettings`` (one dataclass: network, model loading, limits and timeouts; each field's
``metadata["help"]`` is its flag's help), ``add_settings_flags(parser)`` which derives one
``--field-name`` flag per field (name, type and default from the dataclass) and
``ServeSettings.from_args(args)`` which reads them back. ``cli``, ``app.serve`` and ``app.create_app``
all take their defaults from here; nothing else repeats them.

Does not: say what to serve (``--model``, ``--llm``, ``--adapter``, ``--api-key-file``, ``--no-auth``
are inputs, not settings: ``cli`` declares those) or enforce anything (``limits``, ``security``, ``app``).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field


def _knob(default, help: str, **flag):
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class ServeSettings:
    """Example: ServeSettings(max_concurrency=12).max_body_bytes == 4 << 20."""

    # where to listen
    host: str = _knob("127.0.0.1", "address to bind (default 127.0.0.1: this machine only)")
    port: int = _knob(8000, "TCP port")
    log_level: str = _knob("info", "server log level", choices=("debug", "info", "warning", "error"))
    # the speech engine (CTranslate2)
    model_name: str | None = _knob(None, "model id clients pass (default: from the folder)")
    compute_type: str = _knob("int8", "CTranslate2 compute type")
    threads: int | None = _knob(None, "CTranslate2 / llama.cpp threads (default: all cores)")
    max_batch: int = _knob(8, "clips decoded together in one batch")
    max_wait_ms: float = _knob(10.0, "how long a batch waits for more clips")
    max_queue: int = _knob(32, "clips (or completions) queued or running before 503")
    repetition_guard: bool = _knob(False, "decode a looping transcript again (greedy, no repeated 3-grams) and "
                                   "keep the less repetitive text, as lorakit evaluate --repetition-guard")
    # the text engine (llama.cpp)
    parallel: int = _knob(4, "llama.cpp slots decoding text requests together")
    ctx_per_slot: int = _knob(512, "tokens of context per llama.cpp slot (prompt + completion)")
    # limits and timeouts, per request
    max_body_mb: float = _knob(4.0, "request body limit in MiB (413 beyond; a 30 s 16 kHz WAV is ~0.96 MB)")
    read_timeout: float = _knob(10.0, "seconds without a body byte before 408")
    upload_timeout: float = _knob(60.0, "seconds to receive a whole request body before 408, however it trickles")
    request_timeout: float = _knob(60.0, "seconds from admission to transcript or completion before 504")
    max_concurrency: int = _knob(64, "uploads being received or processed at once before 503")
    max_uploads_per_key: int = _knob(48, "uploads in flight per API key before 429 (0: no cap; --no-auth: one key)")
    rate: float = _knob(20.0, "requests per second per API key (0: unlimited)")
    burst: int = _knob(40, "requests per API key allowed at once")
    max_prompt_chars: int = _knob(8000, "longest completion prompt in characters (413 beyond)")
    max_audio_seconds: float = _knob(600.0, "longest speech clip in seconds (413 beyond); a clip over the model's "
                                     "window is cut by voice activity and its pieces batched")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))

    @classmethod
    def from_args(cls, args) -> ServeSettings:
        """The settings an ``argparse`` namespace carries (one attribute per field)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def flag_of(name: str) -> str:
    """Example: flag_of("max_body_mb") -> "--max-body-mb"."""
    return "--" + name.replace("_", "-")


def add_settings_flags(parser) -> None:
    """One ``--flag`` per ``ServeSettings`` field: its type (``X | None`` -> X), default and help.

    A bool field is a switch: ``--field-name`` turns it on, ``--no-field-name`` off.
    """
    hints = typing.get_type_hints(ServeSettings)
    for f in dataclasses.fields(ServeSettings):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = args[0] if args else kind
        extra = {k: v for k, v in f.metadata.items() if k != "help"}
        if kind is bool:  # a switch: --field-name / --no-field-name
            parser.add_argument(flag_of(f.name), action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata["help"] + f" (default {'on' if f.default else 'off'})")
            continue
        shown = "" if f.default is None else f" (default {f.default})"
        parser.add_argument(flag_of(f.name), type=kind, default=f.default, help=f.metadata["help"] + shown, **extra)
