"""Tests of the ABO data pipeline (a package, so that its conftest and helpers have their own names)."""
