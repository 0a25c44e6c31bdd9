"""Metrics, baselines, inference, and the logic of the evaluate / robustness / predict tools."""
