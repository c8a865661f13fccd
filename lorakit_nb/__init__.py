"""lorakit_nb — the helper package behind the lorakit-nb notebooks.

The notebooks tell the story; these modules do the work, one concern each (see README "Layout").
Import what you need from its module, e.g. `from lorakit_nb.lora.layer import LoRALinear`.
"""
from lorakit_nb.quiet import silence_known_noise

__version__ = "0.1.0"
silence_known_noise()  # before any module of the kit imports bitsandbytes (see quiet.py for what and why)
