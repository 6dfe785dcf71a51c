"""Random draws that honour a generator on any device."""

from __future__ import annotations

import torch


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """N(0, 1) of `shape` on `device`, drawn on the generator's device (CPU or CUDA) so that a
    seeded generator gives the same numbers whatever device the result goes to."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
    """U[0, 1) of `shape` on `device`, drawn on the generator's device (see `randn`)."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)
