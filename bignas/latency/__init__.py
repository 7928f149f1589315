"""Device latency: block keys, ONNX Runtime timing, tables, calibration, the device-side runner.

Kept free of imports so that `python -m bignas.latency.device` runs where torch is not installed.
"""

# `bignas latency-check` (see `check`), here so that the CLI's help can say them without torch.
QUICK_CHILDREN = 10  # `--quick`: about a minute on a small space
REPEAT_CHILDREN = 20  # re-timed in the second pass of a full check: the noise floor
STATS = ("p50", "p90")  # latency statistics a table predicts and a budget can be on: median, 90th percentile
