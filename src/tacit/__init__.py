"""Tacit: privacy-first personalization and experimentation."""
