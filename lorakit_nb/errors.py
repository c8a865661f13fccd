"""Exceptions a learner can cause, one class per kind of problem.

Covers: the base `LorakitError` and its subclasses. Every message names the file, the row or line,
and the fix, so a learner can act on it without reading a traceback.
Does not: wrap errors from torch/transformers that signal bugs rather than bad input.

Each subclass also inherits the built-in exception it refines (e.g. `ValueError`), so code that
already catches `ValueError` keeps working.
"""
from __future__ import annotations


class LorakitError(Exception):
    """Base class of every error lorakit_nb raises on purpose for bad input."""


class AudioError(LorakitError, ValueError):
    """A speech manifest row or its audio file cannot be used (missing, corrupt, too long, ...)."""


class ConfigError(LorakitError, ValueError):
    """A training config (YAML) has an unknown key, a bad value, or points at a missing model or file."""


class DataError(LorakitError, ValueError):
    """A data file (e.g. a wu,mandarin,english CSV) has a bad header, row, encoding or split overlap."""


class ScoringError(LorakitError, ValueError):
    """References and hypotheses cannot be scored (unpaired, empty, not text)."""


class ExportError(LorakitError, ValueError):
    """An adapter cannot be merged or exported as asked (wrong base model, missing files, bad format)."""


class MissingFileError(LorakitError, FileNotFoundError):
    """A file or folder the user named is not there (the message says what was expected and how to make it)."""


class AdapterError(LorakitError, ValueError):
    """A saved LoRA adapter folder is broken (unreadable config, cut-short weights) or of the wrong kind."""
