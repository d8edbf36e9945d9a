"""Pure domain cores: the decisions, with no anyio, no I/O and no clock of their own.

Each takes state and an input and returns the new state with what to journal and
publish; the actors around them only move messages. Imports: :mod:`protocol` only.
"""
