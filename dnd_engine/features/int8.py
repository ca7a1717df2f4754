"""int8 convolution encoders for CPUs without fast bf16, checked against fp32 while they run.

On an AVX2 CPU bf16 is emulated (several times slower than fp32), so the only large CPU speed-up left for a
CNN encoder is int8: static post-training quantization (per-channel weights, min/max-calibrated activations, oneDNN
kernels) runs ResNet-50-trunc about 3x faster than eager fp32 on such a CPU. Quantization error depends on the
weights and on the images, neither known in advance, so nothing is trusted untested:

- the stem convolution takes 7-bit input (``seven_bit_modules``). Without VNNI, x86 int8 kernels sum pairs of
  u8 x s8 products in saturating 16-bit lanes (``vpmaddubsw``); the stem's input, a normalised image, spans the
  whole 8-bit range and saturated them: per-patch cosine 0.9985 on the bundled slide with 8 bits there, 0.9997
  with 7 (as with the stem in fp32, which ran 15 % slower). Each step alone in fp32 arithmetic (input, weights,
  stem output on 8-bit grids) kept the cosine above 0.99999, so the saturation, not the grids, was the loss.
  Later layers keep 8 bits (7 everywhere: 0.9994);
- the network is calibrated on the first batch it is given (real patches of the user's slides): half of the
  patches calibrate, the other half are compared with fp32;
- later, every ``check_every``-th batch has its first patches compared with fp32 again;
- a patch below ``min_cosine`` (0.999, the tolerance the reduced precisions are held to) recalibrates with that
  batch added; when it still fails (or after ``max_recalibrations``) the encoder goes back to fp32 for good and
  says why. The failing batch itself is recomputed in fp32, so no feature below the tolerance is ever returned
  for a checked patch.

FX graph-mode quantization (``torch.ao.quantization``) runs eagerly, with no C++ compiler, so it also works in
the frozen app bundle. It is deprecated upstream in favour of torchao's PT2E flow, which needs inductor to be
fast; the pinned torch still ships it.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Optional

import torch
import torch.nn as nn

from ..text import first_line

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
CHECK_EVERY = 16            # batches between spot checks
CHECK_PATCHES = 2           # patches compared with fp32 per spot check
MAX_RECALIBRATIONS = 3

_ENGINES = ("onednn", "x86", "fbgemm")   # fastest first on the CPUs measured (benchmarks/extract_throughput.py)


def int8_engine() -> Optional[str]:
    """The quantized-kernel backend to use on this CPU, or None where torch has none."""
    supported = torch.backends.quantized.supported_engines
    return next((e for e in _ENGINES if e in supported), None)


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 autocast beats fp32 (and int8 is not needed)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def per_patch_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1, eps=1e-12)


class Int8Runner:
    """Runs ``net`` in int8 on float image batches (normalised, N x C x H x W in any memory format),
    quantizing it on the first call."""

    def __init__(self, net: nn.Module, float_modules: tuple = (), seven_bit_modules: tuple = (),
                 min_cosine: Optional[float] = None,
                 check_every: Optional[int] = None, check_patches: Optional[int] = None,
                 max_recalibrations: Optional[int] = None):
        """None: the module's defaults (MIN_COSINE, CHECK_EVERY, CHECK_PATCHES, MAX_RECALIBRATIONS)."""
        self.net = net
        self.float_modules = tuple(float_modules)
        self.seven_bit_modules = tuple(seven_bit_modules)
        self.engine = int8_engine()
        if self.engine is None:
            raise RuntimeError("this torch build has no quantized CPU kernels")
        self.min_cosine = MIN_COSINE if min_cosine is None else float(min_cosine)
        self.check_every = max(1, int(CHECK_EVERY if check_every is None else check_every))
        self.check_patches = max(1, int(CHECK_PATCHES if check_patches is None else check_patches))
        self.max_recalibrations = MAX_RECALIBRATIONS if max_recalibrations is None else int(max_recalibrations)
        self._observed: Optional[nn.Module] = None
        self._qnet: Optional[nn.Module] = None
        self._batches = 0
        self.recalibrations = 0
        self.calibration_seconds = 0.0          # spent quantizing, all calibrations together
        self.worst_cosine = 1.0
        self.checked = 0
        self.failed: Optional[str] = None      # why int8 was given up; the caller then runs fp32

    @property
    def active(self) -> bool:
        return self.failed is None

    def _convert(self) -> None:
        from torch.ao.quantization.quantize_fx import convert_fx
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._qnet = convert_fx(copy.deepcopy(self._observed)).eval()

    def _qconfig_mapping(self):
        from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig, QConfigMapping
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        mapping = QConfigMapping().set_global(
            QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False), weight=weight))
        seven_bit = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True), weight=weight)
        for name in self.seven_bit_modules:
            mapping.set_module_name(name, seven_bit)
        for name in self.float_modules:
            mapping.set_module_name(name, None)
        return mapping

    def _calibrate(self, x: torch.Tensor) -> None:
        from torch.ao.quantization.quantize_fx import prepare_fx
        t0 = time.perf_counter()
        torch.backends.quantized.engine = self.engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._observed is None:
                # FX traces a copy; the float network itself is left untouched for the fp32 checks
                self._observed = prepare_fx(copy.deepcopy(self.net).eval(), self._qconfig_mapping(),
                                            (x[:1],))
            self._observed(x)                  # min/max observers: a recalibration widens the ranges
        self._convert()
        self.calibration_seconds += time.perf_counter() - t0

    def _check(self, y: torch.Tensor, ref: torch.Tensor) -> bool:
        cos = per_patch_cosine(y, ref)
        self.checked += len(cos)
        self.worst_cosine = min(self.worst_cosine, float(cos.min()))
        return bool((cos >= self.min_cosine).all())

    def _give_up(self, why: str) -> None:
        self.failed = why
        self._qnet = self._observed = None
        log.warning("int8 encoder turned off, fp32 from here on: %s", why)

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """int8 features for ``x``, or None once int8 has been given up (run fp32 then)."""
        if self.failed is not None:
            return None
        self._batches += 1
        if self._qnet is None:
            # first batch: calibrate on the even patches, check on the odd ones (all of one, for a batch of one)
            cal, chk = (x[0::2], x[1::2]) if len(x) > 1 else (x, x)
            try:
                self._calibrate(cal)
            except Exception as exc:    # a network FX cannot trace, or a torch without these modules
                self._give_up(f"the network could not be quantized: {type(exc).__name__}: "
                              f"{first_line(exc, 200)}")
                return None
            ref = self.net(chk)
            if not self._check(self._qnet(chk), ref):
                self._calibrate(chk)
                self.recalibrations += 1
                if not self._check(self._qnet(chk), ref):
                    self._give_up(f"int8 features differ from fp32 (cosine {self.worst_cosine:.4f} < "
                                  f"{self.min_cosine}) on the first patches")
                    return None
            return self._qnet(x)
        y = self._qnet(x)
        if self._batches % self.check_every == 0:
            k = min(self.check_patches, len(x))
            ref = self.net(x[:k])
            if not self._check(y[:k], ref):
                if self.recalibrations >= self.max_recalibrations:
                    self._give_up(f"cosine {self.worst_cosine:.4f} < {self.min_cosine} after "
                                  f"{self.recalibrations} recalibrations")
                    return None
                self._calibrate(x)
                self.recalibrations += 1
                y = self._qnet(x)
                if not self._check(y[:k], ref):
                    self._give_up(f"cosine {self.worst_cosine:.4f} < {self.min_cosine} even after recalibrating "
                                  "on the patches that failed")
                    return None
                log.info("int8 encoder recalibrated (%d so far) on a batch whose check failed",
                         self.recalibrations)
        return y

    def summary(self) -> str:
        if self.failed is not None:
            return f"int8 given up ({self.failed})"
        return (f"int8 ({self.engine}), {self.checked} patches checked against fp32, worst cosine "
                f"{self.worst_cosine:.5f}, {self.recalibrations} recalibrations")
