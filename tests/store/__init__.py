"""Tests of rollwise.store (a package so its modules can share helpers.py)."""
