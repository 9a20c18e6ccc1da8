"""Moved to the public plugin API: ``from vlmbench.api import ChatVLM``.

This module re-exports it for one release so that plugins written against the old path keep working.
"""

from vlmbench.api import ChatVLM

__all__ = ["ChatVLM"]
