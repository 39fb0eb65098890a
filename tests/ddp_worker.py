"""Run by tests/test_ddp.py under torchrun: for each VARIANT=DATA argument, a few steps of that model
family on this rank's shard, then every rank's parameter digest gathered to rank 0, which writes them
to OUT as JSON, {variant: [one digest per rank]}. One launch for all the variants: a torchrun start-up
(a launcher and two workers, each importing torch) costs more than the training does.
Usage: ddp_worker.py OUT VARIANT=DATA [VARIANT=DATA ...], VARIANT in cycle_gan | aux_wgangp | pix2pix | dcgan.
"""

import json
import sys

import torch
import torch.distributed as dist

from fastcycle.checkpoint import digest
from fastcycle.config import DataConfig
from fastcycle.data.contract import LoaderSpec
from fastcycle.data.loader import build_loader
from fastcycle.data.scan import scan_domain
from fastcycle.presets import dcgan, pix2pix
from fastcycle.runtime import resolve_precision
from fastcycle.train.distributed import finish, init_distributed
from fastcycle.train.env import ModelEnv
from fastcycle.train.families import build_model
from tests.test_train import tiny


def model_and_loader(variant: str, data: str, info, device, precision):
    env = ModelEnv(device, precision, dist=info)
    common = dict(policy="resize_and_crop", flip=True, serial_batches=False, seed=0, batch_size=1)
    common |= dict(device=device, channels_last=False, rank=info.rank, world_size=info.world_size)
    common |= dict(num_workers=0)
    if variant == "pix2pix":
        from fastcycle.data.aligned import open_aligned

        cfg = tiny(data=data, batch_size=1)
        cfg.model, cfg.loss = pix2pix().model, pix2pix().loss
        cfg.model.netG, cfg.model.ngf, cfg.model.ndf = "unet_128", 4, 4
        model = build_model(cfg, env)
        return model, open_aligned(data, "AtoB", load_size=128, crop_size=128, **common)
    if variant == "dcgan":
        from fastcycle.data.single import open_single

        cfg = dcgan()
        cfg.model.ngf, cfg.model.ndf, cfg.optim.batch_size = 4, 4, 1
        model = build_model(cfg, env)
        return model, open_single(data, load_size=64, crop_size=64, **common)
    aux = variant == "aux_wgangp"  # a class head (tuple outputs through DDP) and the penalty's pass
    extra = dict(aux_classifier=True, gan_mode="wgangp", norm="batch") if aux else {}
    cfg = tiny(data=data, batch_size=1, pool_size=4, **extra)
    scans = [scan_domain(data, d) for d in ("trainA", "trainB")]
    labels = (torch.tensor([0, 1] * 3), torch.tensor([1, -1, 0, 1, 0])) if aux else None
    model = build_model(cfg, env, labels=labels, n_classes=2 if aux else 0)
    spec = LoaderSpec(
        *scans, "resize_and_crop", 36, 32, True, False, 0, 1, device, False, info.rank, info.world_size
    )
    loader, _ = build_loader(DataConfig(data=data, loader="torch", num_workers=0), spec, None)
    return model, loader


def main(out: str, runs: list[str]) -> None:
    info, device = init_distributed("cpu")
    precision = resolve_precision(False, "auto", device)
    gathered = {}
    for run in runs:
        variant, data = run.split("=", 1)
        model, loader = model_and_loader(variant, data, info, device, precision)
        for batch in loader.epoch(0):
            model.step(batch)
        digests = [None] * info.world_size
        # Parameters, not buffers: on CPUs batch norm keeps per-rank running statistics (SyncBatchNorm
        # is for GPUs), so only the trained weights must agree.
        params = {k: dict(n.named_parameters()) for k, n in model.nets.items()}
        dist.all_gather_object(digests, digest(params))
        gathered[variant] = digests
        del model, loader  # as in the training loop: DDP is gone before the process group is destroyed
    if info.is_main:
        with open(out, "w") as f:
            json.dump(gathered, f)
    finish(info)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
