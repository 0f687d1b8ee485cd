"""The scale workloads: ResNet-20 (CIFAR), ResNet-18 (torchvision layout), data.

Both ResNets are written here (torchvision cannot be imported beside the CPU
torch of this project). Everything is rebuilt from seeds, so a fresh process
gets the same model and data; the trained weights travel as ``.npz`` (no
pickles).

ResNet-20
    He et al. 2016, section 4.2: a 3×3 stem of 16 channels, three stages of
    three basic blocks (16, 32, 64 channels, stride 2 between stages), global
    average pooling, a linear layer. The shortcut between stages is a 1×1
    convolution and BatchNorm (the projection shortcut), as in PyHessian's
    example model: 272,474 parameters with 10 classes.
ResNet-18
    The layout of ``torchvision.models.resnet18(num_classes=10)``: the
    ImageNet stem (7×7 convolution of stride 2, 3×3 max-pool of stride 2),
    four stages of two basic blocks (64, 128, 256, 512 channels), 1×1
    projection shortcuts with BatchNorm, adaptive average pooling, a linear
    layer: 11,181,642 parameters. On 32×32 inputs the stem leaves 8×8 maps.
    ``stem="cifar"`` swaps in the usual CIFAR stem (a 3×3 convolution of
    stride 1, no max-pool: 11,173,962 parameters, 16× the activations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a shortcut (a projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(out + short)


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(cin, cout, stride)]
    layers += [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init(model: nn.Module) -> None:
    # He initialisation of the convolutions (fan-out), unit BatchNorm scale:
    # the initialisation of both the CIFAR paper and torchvision.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs (He et al. 2016, section 4.2)."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            msg = f"depth must be 6n+2, got {depth}"
            raise ValueError(msg)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = _stage(width, width, n, 1)
        self.layer2 = _stage(width, 2 * width, n, 2)
        self.layer3 = _stage(2 * width, 4 * width, n, 2)
        self.fc = nn.Linear(4 * width, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNet18(nn.Module):
    """The layout of ``torchvision.models.resnet18`` (same module names, same shapes)."""

    def __init__(
        self, num_classes: int = 10, width: int = 64, stem: str = "imagenet"
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            msg = f"stem must be 'imagenet' or 'cifar', got {stem!r}"
            raise ValueError(msg)
        self.stem = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = _stage(width, width, 2, 1)
        self.layer2 = _stage(width, 2 * width, 2, 2)
        self.layer3 = _stage(2 * width, 4 * width, 2, 2)
        self.layer4 = _stage(4 * width, 8 * width, 2, 2)
        self.fc = nn.Linear(8 * width, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.stem == "imagenet":
            x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet20(width: int = 16) -> nn.Module:
    """ResNet-20 for CIFAR (272,474 parameters at the paper's width 16)."""
    return ResNetCifar(20, width)


def resnet18(width: int = 64, stem: str = "imagenet") -> nn.Module:
    """ResNet-18 in torchvision's layout with 10 classes (11,181,642 parameters)."""
    return ResNet18(10, width, stem)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cifar_like(
    num: int, seed: int = 0, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` CIFAR-shaped images (standard normal, 3×32×32) and labels, from a seed."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num, 3, 32, 32, generator=gen)
    y = torch.randint(0, num_classes, (num,), generator=gen)
    return x, y


def prepare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
) -> None:
    """A short training (Adam, train mode, full batch), then BatchNorm statistics.

    The statistics are the exact mean and variance of this data under the
    final weights (``momentum=None`` averages over the passes), so the
    eval-mode Hessian is the one of the trained network on this data.
    """
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for start in range(0, x.shape[0], 128):
            model(x[start : start + 128])
    for m in bns:
        m.momentum = 0.1
    model.eval()


def save_state(model: nn.Module, path: Path, extra: dict[str, Any]) -> None:
    """Parameters and buffers (and ``extra`` arrays) as ``.npz``, written whole."""
    arrays = {
        f"state/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()
    }
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_state(model: nn.Module, path: Path) -> dict[str, np.ndarray]:
    """Load what :func:`save_state` wrote into ``model``; return the other arrays."""
    with np.load(path) as f:
        state = {
            k.removeprefix("state/"): torch.from_numpy(f[k])
            for k in f.files
            if k.startswith("state/")
        }
        rest = {k: f[k] for k in f.files if not k.startswith("state/")}
    model.load_state_dict(state)
    model.eval()
    return rest
