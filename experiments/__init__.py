"""Controlled rollouts: pure statistics, deterministic assignment and decision rules.

Storage-free: callers pass sufficient statistics in and record the `Evaluation` out.
"""
