"""Device latency: block keys, ONNX Runtime timing, tables, calibration, the device-side runner.

Kept free of imports so that `python -m bignas.latency.device` runs where torch is not installed.
"""
