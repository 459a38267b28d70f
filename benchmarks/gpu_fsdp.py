"""FSDP2 on every GPU (torchrun), with AdamW and with Muon: two sharded steps match the unsharded
model stepped on the same global batch, and the consolidated checkpoint gather works. Prints one table
row per optimiser on rank 0 (called by gpu_check.sh)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from lmforge.config import config_from_dict
from lmforge.model import GPT
from lmforge.tokens.batch import Batch
from lmforge.train.build import wrap_distributed
from lmforge.train.distributed import init_distributed
from lmforge.train.optim import build_optimizer
from lmforge.train.state_io import gather_for_save
from lmforge.train.step import StepSettings, train_step


def check(optimizer: str, info, device: torch.device) -> None:
    cfg = config_from_dict({"model": {"preset": "small", "vocab_size": 8192, "block_size": 256},
                            "train": {"optimizer": optimizer, "lr": 1e-3}})
    torch.manual_seed(0)
    ref = GPT(cfg.model).to(device)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    wrap_distributed(model, "fsdp", device)
    opt = build_optimizer(model, cfg.train, device)
    ref_opt = build_optimizer(ref, cfg.train, device)
    g = torch.Generator().manual_seed(info.rank)
    x = torch.randint(0, 8192, (4, 257), generator=g)
    xs = [torch.empty_like(x, device=device) for _ in range(info.world_size)]
    dist.all_gather(xs, x.to(device))
    allx = torch.cat(xs).cpu()  # the same global batch for the unsharded reference, on every rank
    got = [train_step(model, opt, [Batch(x[:, :-1], x[:, 1:], None)], StepSettings(world_size=info.world_size)).loss
           for _ in range(2)]
    want = [train_step(ref, ref_opt, [Batch(allx[:, :-1], allx[:, 1:], None)], StepSettings()).loss for _ in range(2)]
    full, osd = gather_for_save(model, opt, info.rank)
    if info.rank == 0:
        ok = all(abs(a - b) < 2e-3 for a, b in zip(got, want)) and full is not None and len(osd["state"]) > 0
        print(f"{'fsdp2 ' + optimizer + ' (' + str(info.world_size) + ' GPU)':<26} {'ok' if ok else 'FAIL':<7} "
              f"losses {got[0]:.5f}, {got[1]:.5f} vs unsharded {want[0]:.5f}, {want[1]:.5f}; consolidated "
              f"{sum(p.numel() for p in full.parameters()) / 1e6:.1f}M params", flush=True)


def main() -> None:
    info = init_distributed("cuda")
    device = torch.device("cuda", info.local_rank)
    for optimizer in ("adamw", "muon"):
        check(optimizer, info, device)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
