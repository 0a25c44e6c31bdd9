"""Measuring and running trained networks: metrics, baselines, evaluation and the robustness
sweep, tiled inference, and the logic of the predict / blur_score / export tools (their
``python -m deblur.<tool>`` entry points compose the config and call these)."""
