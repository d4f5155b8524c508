"""Exceptions of the analysis package: refused input versus a failed analysis."""

from __future__ import annotations


class AnalysisInputError(ValueError):
    """Input the analysis refuses (missing folder, unreadable dataset, bad site list); CLI exit 2."""


class AnalysisFitError(RuntimeError):
    """An analysis that ran but failed (fit did not converge, too few points); CLI exit 1."""
