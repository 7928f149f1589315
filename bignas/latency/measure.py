"""Timing ONNX models with ONNX Runtime exactly as a device profile says, against a reference.

This machine's raw medians drift by about 10% from minute to minute (shared cores, clocks), but
two models timed in alternation drift together: the ratio of their medians moves by 1-2.5%. So
every model is timed interleaved with one fixed reference model and stored as that ratio. No
torch here (the device runner uses this module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bignas.console import quiet
from bignas.errors import BignasError
from bignas.latency.profiles import DeviceProfile, ProfileError

_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


class BundleError(BignasError):
    """A bundle, or a model file to time, is missing or malformed; the message names the file and field."""


def session_options(profile: DeviceProfile, affinity: bool = True, config: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = profile.intra_op_threads
    so.inter_op_num_threads = profile.inter_op_threads
    so.execution_mode = getattr(ort.ExecutionMode, _MODES[profile.execution_mode])
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[profile.graph_optimization_level])
    so.log_severity_level = 3  # errors only: ORT's warnings would interleave with the progress line
    if affinity and profile.affinity is not None:
        so.add_session_config_entry("session.intra_op_thread_affinities", profile.affinity)
    if config:
        for key, value in profile.session_config.items():
            so.add_session_config_entry(key, value)
    return so


def open_session(profile: DeviceProfile, model: str | Path):
    """An ONNX Runtime session for `model` under `profile`; BundleError if the file is the problem
    (missing, cut short, not ONNX), else ProfileError if ORT cannot honour the profile."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if profile.provider not in available:
        raise ProfileError(f"{profile.source}: field 'provider': '{profile.provider}' is not available "
                           f"in this ONNX Runtime build (available: {available})")
    try:
        session = _session(profile, model, affinity=True, options=True, config=True)
    except Exception as e:  # ORT raises bare RuntimeError/Fail subclasses
        check_model_file(model)  # a file cut short by a partial copy is no profile field's fault
        raise ProfileError(f"{profile.source}: field '{_culprit(profile, model)}': ONNX Runtime rejects "
                           f"it: {str(e).strip().splitlines()[0]}") from None
    if session.get_providers()[0] != profile.provider:
        raise ProfileError(f"{profile.source}: field 'provider': ONNX Runtime fell back from "
                           f"'{profile.provider}' to {session.get_providers()}")
    return session


def _session(profile: DeviceProfile, model: str | Path, affinity: bool, options: bool, config: bool):
    import onnxruntime as ort

    provider = (profile.provider, profile.provider_options if options else {})
    with quiet():  # a failing provider prints its fallback attempt on stdout
        return ort.InferenceSession(str(model), session_options(profile, affinity, config), providers=[provider])


def file_problem(path: Path, size: int | None = None) -> str | None:
    """Why the model file `path` cannot be what was written (missing, not a regular file, not the
    `size` bytes the bundle recorded), or None. Only a stat: cheap enough for every file up front."""
    if not path.exists():
        return "is missing (was the bundle copied in part?)"
    if not path.is_file():
        return "is not a regular file"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return (f"is {'cut short' if actual < size else 'longer than written'}: {actual} bytes, the bundle "
                f"wrote {size} (was it copied in part?)")
    return None


def check_model_file(model: str | Path) -> None:
    """Refuse a model file that is missing, not a regular file, or that ONNX Runtime cannot load with
    default settings (cut short, damaged, not ONNX at all); the BundleError names the file."""
    import onnxruntime as ort

    path = Path(model)
    problem = file_problem(path)
    if problem:
        raise BundleError(f"{path}: model file {problem}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        with quiet():
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        with path.open("rb") as f:
            # A serialized ONNX model opens with its ir_version field (tag 0x08).
            onnx_like = f.read(1) in (b"\x08", b"")
        what = "cut short or damaged (was it copied in part?)" if onnx_like else "not an ONNX model"
        raise BundleError(f"{path}: model file is {what}: ONNX Runtime cannot load its {path.stat().st_size} "
                          f"bytes even with default settings: {str(e).strip().splitlines()[0]}") from None


def _culprit(profile: DeviceProfile, model: str | Path) -> str:
    """Which profile field ORT rejects: add the optional settings back one at a time."""
    for affinity, options, config, blame in ((False, False, False, "intra_op_threads"),
                                             (True, False, False, "affinity"),
                                             (True, True, False, "provider_options"),
                                             (True, True, True, "session_config")):
        try:
            _session(profile, model, affinity, options, config)
        except Exception:
            return blame
    return "provider"


def random_feed(session, batch: int) -> dict[str, np.ndarray]:
    """One random float input per model input; a symbolic (batch) axis gets `batch`."""
    rng = np.random.default_rng(0)
    feed = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in inp.shape]
        feed[inp.name] = rng.standard_normal(shape, dtype=np.float32)
    return feed


# The estimator, chosen by tools/bench_repeatability.py: on a shared host, interference only ever
# adds time, so a low percentile of each model's runs, divided by the same percentile of a
# reference timed in alternation, repeats far better than medians do (cifar-small, cpu-1t, 40
# children timed twice 3 minutes apart: 97 % within 5 % of their own re-measurement against an
# anchor of their size, 80 % with the former median ratio to the small reference).
LOW = 10  # percentile


@dataclass(frozen=True)
class Timing:
    ratio: float  # LOW percentile of the model's runs / the same of the reference's, timed interleaved
    ms: float  # raw median of the model, milliseconds (drifts; for information)
    reference_ms: float  # raw median of the reference during this measurement
    p90_ms: float = float("nan")  # raw 90th percentile of the model, milliseconds


def interleaved(runs: list[tuple[object, dict[str, np.ndarray]]], repeats: int, warmup: int = 0) -> np.ndarray:
    """(repeats, len(runs)) seconds: each repeat times every (session, feed) of `runs` once, in
    turn, so that they share whatever the host does meanwhile. Each timed run follows one untimed
    run of the same model: otherwise a model runs in caches the previous one just filled, slower
    the larger that one was, and every comparison is biased by size."""
    for _ in range(warmup):
        for session, feed in runs:
            session.run(None, feed)
    clock = time.perf_counter
    samples = np.empty((repeats, len(runs)))
    for i in range(repeats):
        for j, (session, feed) in enumerate(runs):
            session.run(None, feed)
            t0 = clock()
            session.run(None, feed)
            samples[i, j] = clock() - t0
    return samples


class Timer:
    """Times models under one profile, each interleaved with the same reference model."""

    def __init__(self, profile: DeviceProfile, reference: str | Path) -> None:
        self.profile = profile
        self.reference = open_session(profile, reference)
        self.reference_feed = random_feed(self.reference, profile.batch)
        self.reference_samples: list[float] = []

    def time(self, model: str | Path) -> Timing:
        session = open_session(self.profile, model)
        runs = [(self.reference, self.reference_feed), (session, random_feed(session, self.profile.batch))]
        samples = interleaved(runs, self.profile.repeats, self.profile.warmup)
        rs, ts = samples[:, 0], samples[:, 1]
        self.reference_samples.extend(rs.tolist())
        ratio = float(np.percentile(ts, LOW) / np.percentile(rs, LOW))
        return Timing(ratio, 1e3 * float(np.median(ts)), 1e3 * float(np.median(rs)), 1e3 * float(np.percentile(ts, 90)))

    @property
    def reference_ms(self) -> float:
        """Median of every reference run so far: the unit that converts ratios to milliseconds."""
        return float(np.median(self.reference_samples)) * 1e3
