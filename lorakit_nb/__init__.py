"""lorakit_nb."""
