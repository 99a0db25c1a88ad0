"""Training the supernet: data loaders and splits, the phase schedule, the trainer (progressive shrinking and
the sandwich rule, with in-place distillation), resumable training state, multi-process launch, evaluation
of subnets after BatchNorm recalibration, and the training curves.

The flow: :mod:`~elastic.training.data` → :mod:`~elastic.training.schedule` → :mod:`~elastic.training.trainer`
(saving :mod:`~elastic.training.train_state` each epoch, plotting :mod:`~elastic.training.curves`) →
:mod:`~elastic.training.evaluate`.
"""
