"""Revisions of the campaign store's schema (see :mod:`orchestration.store.migrations`)."""
