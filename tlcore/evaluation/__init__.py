"""Measuring models: metrics, intervals and paired tests, stored evaluations, reports,
comparisons."""
