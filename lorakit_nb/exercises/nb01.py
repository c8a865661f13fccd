"""Notebook 01's exercises: reference solutions, checks, synthetic examples."""
from __future__ import annotations

EXERCISES: dict = {}
