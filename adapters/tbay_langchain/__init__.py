"""Adapter package; implemented by the framework adapters issue."""
