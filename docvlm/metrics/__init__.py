"""Metrics with the reference implementations' exact semantics, one module per domain."""

from docvlm.metrics.text import cer, exact_match
