"""Device latency: block keys, ONNX Runtime timing, tables, calibration, the device-side runner.

Kept free of imports so that `python -m bignas.latency.device` runs where torch is not installed.
"""

# `bignas latency-check` (see `check`), here so that the CLI's help can say them without torch.
QUICK_CHILDREN = 10  # `--quick`: about a minute on a small space
REPEAT_CHILDREN = 20  # re-timed in the second pass of a full check: the noise floor
STATS = ("p50", "p90")  # latency statistics a table predicts and a budget can be on: median, 90th percentile

# `bignas profile`: default calibration children of a profile (and a bundle) / a transfer. Refits
# of the four tables that had 30 on 40 random subsets of 25 predicted 100 fresh children within
# 10 % for at least 95 % of them in every draw; with 20, one draw in 20 fell to 76-87 % on cpu-2t
# cifar-small, and leave-one-out did not flag it (tools/bench_calibration_children.py).
PROFILE_CHILDREN, TRANSFER_CHILDREN = 25, 20
