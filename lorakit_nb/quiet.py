"""Known third-party noise the kit silences at its source, each filter narrow and explained.

Covers: bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" log line. On a
CPU with AVX512-BF16, ``import bitsandbytes`` (also through peft and transformers) tries the
Hugging Face ``kernels`` package, which fetches a compiled kernel from the Hub; this kit is offline
and does not install it, so bitsandbytes logs that warning on every import and then uses its own CPU
4-bit path, the one the course measures. Only that message from that logger is dropped; every other
bitsandbytes message still shows.
Also: transformers 5's FutureWarning "`is_gradient_checkpointing` is deprecated", which peft's
``get_peft_model`` triggers on every call by reading that old attribute (peft's code, not the learner's:
nothing in a notebook can act on it). One ``warnings`` filter, for that message and category only.
Does not: touch any other warning or logger, or change what bitsandbytes or peft compute.
The papermill kernel's "running over TCP without encryption" warning is answered in
``runner.kernel_config`` (the kernel's sockets get encrypted) rather than hidden here.
"""
from __future__ import annotations

import logging
import warnings

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
PEFT_CHECKPOINTING_WARNING = r"`is_gradient_checkpointing` is deprecated"


class _DropMessage(logging.Filter):
    """Drops records whose unformatted message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_known_noise() -> None:
    """Install the filters above (idempotent). Runs on ``import lorakit_nb``, before bitsandbytes loads.

    Example: after it, logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: %s", "x") prints nothing.
    """
    logger = logging.getLogger(BNB_CPU_LOGGER)  # the same object bitsandbytes' getLogger(__name__) returns
    if not any(isinstance(f, _DropMessage) and f.prefix == BNB_KERNELS_MESSAGE for f in logger.filters):
        logger.addFilter(_DropMessage(BNB_KERNELS_MESSAGE))
    warnings.filterwarnings("ignore", message=PEFT_CHECKPOINTING_WARNING, category=FutureWarning)
