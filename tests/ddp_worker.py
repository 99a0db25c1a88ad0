"""Worker for the 2-process DDP test (module-level so that torch.multiprocessing can spawn it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def run(rank: int, world: int, data_dir: str, out_dir: str, port: int, record_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "OFAKIT_CACHE": str(Path(record_dir) / f"cache{rank}")})
    import torch

    import elastic.training.train_state
    import elastic.training.trainer as trainer_mod
    import model_zoo
    from elastic.training import distributed
    from elastic.training.data import DataSource, load_splits
    from elastic.training.schedule import Phase
    from elastic.training.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    drawn: list[str] = []
    original_draw = trainer_mod.draw_subnets

    def recording_draw(*args, **kwargs):
        cfgs = original_draw(*args, **kwargs)
        drawn.extend(c.to_json() for c in cfgs)
        return cfgs

    saves: list[int] = []
    original_save = trainer_mod.save_train_state

    def recording_save(*args, **kwargs):
        saves.append(rank)
        return original_save(*args, **kwargs)

    trainer_mod.draw_subnets = recording_draw
    trainer_mod.save_train_state = recording_save
    assert elastic.training.train_state.save_train_state is original_save
    splits = load_splits(DataSource("fashion-mnist", Path(data_dir)), val_size=32, seed=0, train_limit=64)
    torch.manual_seed(0)
    net = model_zoo.get_supernet("ofa_mbv3_tiny", resolutions=(28,))
    phases = [Phase("teacher", 1, 0.05), Phase("elastic", 1, 0.05, ks=(3, 5, 7), e=(3, 4, 6), d=(2, 3, 4),
                                               subnets_per_step=2, kd_weight=1.0)]
    config = TrainConfig(batch_size=16, seed=5, calib_images=16, epoch_calib_images=16, eval_images=16,
                         eval_random_subnets=1, eval_batch_size=16, log_every=0)
    Trainer(net, splits, phases, config, out_dir, progress=False).run()
    # parameters must match exactly; BN running stats are re-broadcast from rank 0 before every forward
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in net.parameters()))
    Path(record_dir, f"rank{rank}.json").write_text(json.dumps(
        {"drawn": drawn, "saves": saves, "weights": digest.hexdigest(),
         "world": torch.distributed.get_world_size()}))
    distributed.cleanup()
