"""lorakit_nb — the helper package behind the lorakit-nb notebooks.

The notebooks tell the story; these modules do the work, one concern each (see README "Layout").
Import what you need from its module, e.g. `from lorakit_nb.lora.layer import LoRALinear`.
"""
__version__ = "0.1.0"
