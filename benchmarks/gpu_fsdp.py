"""FSDP2 on every GPU (torchrun): sharded step matches the unsharded model's loss, and the
consolidated checkpoint gather works. Prints one table row on rank 0 (called by gpu_check.sh)."""

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


def main() -> None:
    info = init_distributed("cuda")
    device = torch.device("cuda", info.local_rank)
    cfg = config_from_dict({"model": {"preset": "small", "vocab_size": 8192, "block_size": 256}})
    torch.manual_seed(0)
    ref = GPT(cfg.model).to(device)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    wrap_distributed(model, "fsdp", device)
    opt = build_optimizer(model, cfg.train, device)
    g = torch.Generator().manual_seed(info.rank)
    x = torch.randint(0, 8192, (4, 257), generator=g)
    batch = Batch(x[:, :-1], x[:, 1:], None)
    res = train_step(model, opt, [batch], StepSettings(world_size=info.world_size))
    # the same global batch through the unsharded reference on every rank
    xs = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(xs, x.to(device))
    allx = torch.cat(xs).cpu()
    with torch.no_grad():
        logits = ref(allx[:, :-1].to(device))
        want = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), allx[:, 1:].flatten().to(device)).item()
    full, osd = gather_for_save(model, opt, info.rank)
    if info.rank == 0:
        ok = abs(res.loss - want) < 1e-3 and full is not None and len(osd["state"]) > 0
        print(f"{'fsdp2 (' + str(info.world_size) + ' GPU)':<26} {'ok' if ok else 'FAIL':<7} loss {res.loss:.5f} vs "
              f"unsharded {want:.5f}; consolidated {sum(p.numel() for p in full.parameters()) / 1e6:.1f}M params")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
