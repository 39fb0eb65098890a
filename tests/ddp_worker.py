"""Run by tests/test_ddp.py under torchrun: a few CycleGAN steps on this rank's shard, then every rank's
parameter digest gathered to rank 0, which writes them to OUT (a JSON list, one digest per rank)."""

import json
import sys

import torch.distributed as dist

from fastcycle.checkpoint import digest
from fastcycle.config import DataConfig
from fastcycle.data.loader import LoaderSpec, build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.train import CycleGAN
from fastcycle.train.distributed import finish, init_distributed
from fastcycle.train.runtime import resolve_precision
from tests.test_train import tiny

out, data = sys.argv[1], sys.argv[2]
info, device = init_distributed("cpu")
cfg = tiny(data=data, batch_size=1, pool_size=4)
model = CycleGAN(cfg, device, resolve_precision(False, "auto", device), "torch", info)
scans = [scan_domain(data, d) for d in ("trainA", "trainB")]
spec = LoaderSpec(
    *scans, "resize_and_crop", 36, 32, True, False, 0, 1, device, False, info.rank, info.world_size
)
loader, _ = build_loader(DataConfig(data=data, loader="torch", num_workers=0), spec, None)
for batch in loader.epoch(0):
    model.train_step(batch.A, batch.B)
digests = [None] * info.world_size
dist.all_gather_object(digests, digest({k: n.state_dict() for k, n in model.nets.items()}))
if info.is_main:
    with open(out, "w") as f:
        json.dump(digests, f)
finish(info)
