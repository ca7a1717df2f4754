"""The extractor registry: one spec per encoder; ``build_extractor(name)`` locates weights and builds it.

Each extractor maps a uint8 batch (B, H, W, 3) at its ``input_size`` to float32 features (B, dim). Patches are
resized to ``input_size`` in the reading workers (PIL bilinear with antialiasing, as CLAM's ``Resize(224)``),
so the encoder process only normalises and runs the network.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from ..errors import DnDError
from ..text import first_line
from .int8 import Int8Runner, cpu_has_fast_bf16, int8_engine
from .stain_stats import StainStats
from .weights import (dnd_weights_dir, file_sha256, hf_hub_dir, load_state_dict, locate_weights,
                      torch_hub_checkpoints)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ExtractorSpec:
    name: str
    dim: int
    input_size: Optional[int]           # square input in pixels; None = the patch as cut
    description: str
    needs_weights: bool
    builder: Callable[[Optional[Path]], nn.Module] = field(repr=False)
    weight_candidates: Callable[[], list] = field(default=lambda: [], repr=False)
    weight_suggestion: Callable[[], Path] = field(default=lambda: Path(), repr=False)
    how_to_get: str = ""
    normalize: bool = True              # ImageNet mean/std after scaling to [0, 1]
    precision_default_cuda: str = "bf16"
    int8: bool = False                  # FX-quantizable CNN: int8 on CPUs without fast bf16 (see int8.py)
    int8_float_modules: tuple = ()      # submodules kept fp32 in the int8 network
    int8_seven_bit_modules: tuple = ()  # submodules given 7-bit inputs (see int8.py: saturation without VNNI)

    def locate(self, weights: Optional[str | os.PathLike] = None) -> Path:
        """The weights file a build would use: ``weights`` if given, else the first found in the usual places.
        Raises a one-line :class:`DnDError` saying where to put it. A glob and a stat, never a load."""
        return locate_weights(self.name, weights, self.weight_candidates(), self.weight_suggestion(),
                              self.how_to_get)

    def located(self) -> Optional[Path]:
        """The weights file found without being told one, or None (also when this encoder needs none)."""
        if not self.needs_weights:
            return None
        try:
            return self.locate()
        except DnDError:
            return None

    def weights_problem(self, weights: Optional[str | os.PathLike] = None) -> Optional[str]:
        """Why this encoder cannot be built with ``weights`` (None: the file it finds), in one line, or None."""
        if not self.needs_weights:
            return None
        if weights:
            p = Path(weights).expanduser()
            return None if p.is_file() else f"no such weights file: {p}"
        if self.located() is None:
            return (f"{self.name} needs a weights file, not found on this machine: {self.how_to_get}; put it at "
                    f"{self.weight_suggestion()}")
        return None


class Extractor(nn.Module):
    """A built encoder with its preprocessing: ``forward(uint8 (B,H,W,3)) -> float32 (B, dim)``."""

    def __init__(self, spec: ExtractorSpec, net: nn.Module, weights_path: Optional[Path]):
        super().__init__()
        self.spec = spec
        self.net = net.eval()
        self.weights_path = weights_path
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False
        self.autocast_dtype: Optional[torch.dtype] = None
        self.precision = "fp32"
        self._compiled = None
        self._compiled_batch: Optional[int] = None
        self.compile_seconds = 0.0
        self.int8: Optional[Int8Runner] = None
        self.int8_given_up: Optional[str] = None     # why int8 went back to fp32, when it did

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def weights_sha256(self) -> Optional[str]:
        return file_sha256(self.weights_path) if self.weights_path else None

    def configure(self, device: str | torch.device = "cpu", precision: str = "auto") -> "Extractor":
        """Move to ``device`` and choose precision: fp32 (the reference), bf16, fp16, int8, or auto.

        auto: bf16 (or fp16) autocast on CUDA; on a CPU, bf16 where it has AVX512-BF16/AMX, else int8 for the
        CNNs that support it (checked against fp32 as it runs, see ``int8.py``), else fp32."""
        device = torch.device(device)
        self.to(device)
        is_net = not isinstance(self.net, StainStats)
        if precision == "auto":
            precision = "fp32"
            if device.type == "cuda":
                precision = self.spec.precision_default_cuda
                if precision == "bf16" and not torch.cuda.is_bf16_supported():
                    precision = "fp16"
            elif device.type == "cpu" and is_net:
                if cpu_has_fast_bf16():
                    precision = "bf16"
                elif self.spec.int8 and int8_engine() is not None:
                    precision = "int8"
        if precision not in ("fp32", "bf16", "fp16", "int8"):
            raise DnDError(f"unknown precision {precision!r} (fp32, bf16, fp16, int8, auto)")
        if precision == "fp16" and device.type != "cuda":
            raise DnDError("fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        if precision == "int8":
            if device.type != "cpu":
                raise DnDError("int8 runs on the CPU only; on a GPU use bf16 or fp16")
            if not self.spec.int8:
                raise DnDError(f"int8 is not offered for '{self.name}' "
                               f"(only {', '.join(n for n, s in EXTRACTORS.items() if s.int8)})")
            if int8_engine() is None:
                raise DnDError("this torch build has no quantized CPU kernels for int8; use fp32")
            self.int8 = Int8Runner(self.net, self.spec.int8_float_modules,
                                    self.spec.int8_seven_bit_modules)
        else:
            self.int8 = None
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}[precision]
        self.precision = precision
        # channels_last speeds up convolutions on CPU and CUDA, oneDNN's int8 ones too; ViTs ignore it
        self.channels_last = is_net and any(isinstance(m, nn.Conv2d) for m in self.net.modules())
        self.net.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def can_compile(self) -> bool:
        """torch.compile needs a neural network and a C/C++ compiler (inductor builds CPU kernels and Triton's
        launchers with it); a frozen app bundle has none, so it runs eager."""
        if isinstance(self.net, StainStats) or self.precision == "int8":
            return False
        return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)

    def enable_compile(self, batch_size: int) -> bool:
        """Compile the network for batches of exactly ``batch_size`` (a slide's last, smaller batch runs eager:
        one graph, no recompiles). Weights are frozen into the graph (inductor ``freezing``): conv+BN folding.
        Returns False, leaving the eager network, where compiling is not possible."""
        if not self.can_compile():
            return False
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
        self._compiled = torch.compile(self.net, dynamic=False)
        self._compiled_batch = int(batch_size)
        return True

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None and x.shape[0] == self._compiled_batch:
            t0 = time.perf_counter()
            first = self.compile_seconds == 0.0
            try:
                y = self._compiled(x)
            except Exception as exc:   # a broken toolchain must cost speed, never the extraction
                log.warning("torch.compile failed (%s); continuing without it", first_line(exc, 200))
                self._compiled = None
                return self.net(x)
            if first:
                self.compile_seconds = time.perf_counter() - t0
            return y
        return self.net(x)

    @torch.inference_mode()
    def forward(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = batch_uint8.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if self.spec.normalize:
            x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.int8 is not None:
            y = self.int8(x)
            if y is not None:
                return y.float().reshape(y.shape[0], -1)
            # int8 failed its check against fp32 (logged): fp32 from here on, this batch included
            self.int8_given_up, self.int8, self.precision = self.int8.failed, None, "fp32"
            y = self._run(x)
        elif self.autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                y = self._run(x)
        else:
            y = self._run(x)
        return y.float().reshape(y.shape[0], -1)


# --- ResNet-50 truncated after layer3 (CLAM's resnet50_trunc) ---------------------------------------------
class ResNet50Trunc(nn.Module):
    """torchvision ResNet-50 through layer3 (1024 channels, stride 16) + global average pool → 1024-d."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50
        r = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = r.conv1, r.bn1, r.relu, r.maxpool
        self.layer1, self.layer2, self.layer3 = r.layer1, r.layer2, r.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(x).flatten(1)


def _build_resnet50_trunc(weights: Optional[Path]) -> nn.Module:
    net = ResNet50Trunc()
    if weights is not None:
        sd = load_state_dict(weights)
        own = net.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
        missing = [k for k in own if k not in sd]
        if missing:
            raise DnDError(f"weights file {weights} is not a ResNet-50 checkpoint: {len(missing)} missing tensors "
                           f"(first: {missing[0]})")
        bad = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
        if bad:
            raise DnDError(f"weights file {weights} has wrong shapes for ResNet-50 (first: {bad[0]})")
        net.load_state_dict(sd, strict=True)
    return net


def _resnet_candidates() -> list:
    return [
        dnd_weights_dir() / "resnet50_trunc" / "*.safetensors",
        dnd_weights_dir() / "resnet50_trunc" / "*.pth",
        torch_hub_checkpoints() / "resnet50-0676ba61.pth",          # torchvision IMAGENET1K_V1
        hf_hub_dir() / "models--timm--resnet50.tv_in1k" / "snapshots" / "*" / "model.safetensors",
    ]


# --- UNI (ViT-L/16, MahmoodLab) -----------------------------------------------------------------------------
def _build_uni(weights: Optional[Path]) -> nn.Module:
    import timm
    net = timm.create_model("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
                            num_classes=0, dynamic_img_size=True, pretrained=False)
    if weights is not None:
        sd = load_state_dict(weights)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise DnDError(f"weights file {weights} does not fit UNI's ViT-L/16: "
                           f"{str(exc).splitlines()[1].strip()[:200] if len(str(exc).splitlines()) > 1 else exc}") from None
    return net


def _uni_candidates() -> list:
    env = os.environ.get("UNI_CKPT_PATH")
    return ([env] if env else []) + [
        dnd_weights_dir() / "uni_v1" / "pytorch_model.bin",
        dnd_weights_dir() / "uni_v1" / "*.safetensors",
        hf_hub_dir() / "models--MahmoodLab--UNI" / "snapshots" / "*" / "pytorch_model.bin",
        hf_hub_dir() / "models--MahmoodLab--uni" / "snapshots" / "*" / "pytorch_model.bin",
    ]


EXTRACTORS: dict[str, ExtractorSpec] = {}


def _register(spec: ExtractorSpec) -> None:
    EXTRACTORS[spec.name] = spec


_register(ExtractorSpec(
    name="stain_stats", dim=StainStats.dim, input_size=None, needs_weights=False, normalize=False,
    precision_default_cuda="fp32",
    description="weight-free H&E colour-deconvolution + texture statistics (offline/demo choice; no download)",
    builder=lambda w: StainStats(),
))
_register(ExtractorSpec(
    name="resnet50_trunc", dim=1024, input_size=224, needs_weights=True,
    description="ResNet-50 ImageNet (torchvision V1) truncated after layer3 + average pool, 224 px input (CLAM)",
    builder=_build_resnet50_trunc, weight_candidates=_resnet_candidates, int8=True,
    int8_seven_bit_modules=("conv1",),
    weight_suggestion=lambda: torch_hub_checkpoints() / "resnet50-0676ba61.pth",
    how_to_get="it is torchvision's ResNet50_Weights.IMAGENET1K_V1 file, resnet50-0676ba61.pth",
))
_register(ExtractorSpec(
    name="uni_v1", dim=1024, input_size=224, needs_weights=True,
    description="UNI ViT-L/16 (MahmoodLab), CLS token, 224 px input; gated weights from the UNI model page",
    builder=_build_uni, weight_candidates=_uni_candidates, precision_default_cuda="fp16",
    weight_suggestion=lambda: dnd_weights_dir() / "uni_v1" / "pytorch_model.bin",
    how_to_get="request access to MahmoodLab/UNI and copy its pytorch_model.bin there (or set UNI_CKPT_PATH)",
))


def list_extractors() -> list[str]:
    return list(EXTRACTORS)


def get_spec(name: str) -> ExtractorSpec:
    if name not in EXTRACTORS:
        raise DnDError(f"unknown extractor '{name}' (choose from: {', '.join(EXTRACTORS)})")
    return EXTRACTORS[name]


def default_extractor() -> str:
    """The encoder to offer first: CLAM's ResNet-50 when its weights are on this machine, else the weight-free
    stain_stats (a first run must not stop on a missing download)."""
    return "resnet50_trunc" if get_spec("resnet50_trunc").located() is not None else "stain_stats"


def build_extractor(name: str, weights: Optional[str | os.PathLike] = None, random_init: bool = False,
                    device: str | torch.device = "cpu", precision: str = "auto") -> Extractor:
    """Build extractor ``name`` with its weights located locally.

    ``random_init`` skips the weights (for speed benchmarks and tests only: the features mean nothing).
    """
    spec = get_spec(name)
    path = None
    if weights and not spec.needs_weights:
        # silently ignoring the file would let a user believe features came from the weights they named
        raise DnDError(f"{name} takes no weights; drop --weights")
    if spec.needs_weights and not random_init:
        path = spec.locate(weights)
    torch.manual_seed(0)
    net = spec.builder(path)
    return Extractor(spec, net, path).configure(device, precision)
