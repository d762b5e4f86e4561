"""Fine-tuning: ``evalsuite finetune`` trains on a task's train split, validating on held-out documents.

Encoders get a classification head over the task's labels (a normal transformers checkpoint); causal LMs
get a LoRA adapter trained on the task's prompt -> gold answer pairs. Either is saved with a
``training_card.json`` (base model and its weights fingerprint, task, data hashes, hyper-parameters,
validation curve, best epoch, time) and evaluated with ``evalsuite run --mode fine-tuned``.
"""

from evalsuite.finetune.config import METHODS, TrainConfig
from evalsuite.finetune.run import finetune

__all__ = ["METHODS", "TrainConfig", "finetune"]
