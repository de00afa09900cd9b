"""Process placement for training: one process, or torchrun's ranks joined in a process group
(DistributedDataParallel's set-up and teardown; NCCL on CUDA, gloo on CPU)."""

from __future__ import annotations

import os

from zoedepth_ros.train.config import ConfigError


class Distributed:
    """Process placement: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) or one process."""

    def __init__(self, device_setting: str):
        import torch

        from zoedepth_ros.inference.engines import resolve_device

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        try:
            device = resolve_device(device_setting)
        except ValueError as exc:
            raise ConfigError(f"train.device: {exc}") from None
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.local_rank)
        self.device = device
        self.backend = None
        if self.world > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                torch.cuda.set_device(device)
            self.backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(self.backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        import torch

        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
