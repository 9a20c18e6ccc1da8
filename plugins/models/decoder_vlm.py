"""Moved to the public plugin API: ``from vlmbench.api import DecoderVLM``.

This module re-exports it for one release so that plugins written against the old path keep working.
"""

from vlmbench.api import DecoderVLM

__all__ = ["DecoderVLM"]
