"""Compression training: audio data, DistilHuBERT / FitHuBERT distillation, LightHuBERT
supernet training, HJ/DPHuBERT structured pruning, and the (DDP) trainer they share.

    from edgekit.train.data import AudioFolder
    from edgekit.train.distill import make_distill_task, resolve_model, resolve_spec, save_final
    from edgekit.train.prune import PruneConfig, PruneTask
    from edgekit.train.supernet_train import SupernetTask
    from edgekit.train.trainer import Trainer, TrainConfig
    result = Trainer(TrainConfig(steps=1000), "runs/x").run(task, AudioFolder("audio"))

Modules are imported on use (supernet training needs edgekit.supernet, the rest does not).
"""
