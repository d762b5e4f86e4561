"""Fine-tuning an encoder (BERT-style) with a classification head over the task's labels.

The head's ``id2label`` is the task's ``labels`` in order, so a prediction's index is the label's index.
Inputs are the task's ``inputs`` (a text or text pair), encoded by the same function the classification
engine uses at evaluation time.
"""

from __future__ import annotations

from typing import Any

from evalsuite.engines.classifier import ClassificationRequest, batch_inputs, encode_texts, is_classifier
from evalsuite.errors import SpecError
from evalsuite.finetune.config import TrainConfig
from evalsuite.finetune.data import TrainingData
from evalsuite.finetune.loop import TrainResult, sorted_batches, train
from evalsuite.prompting import PromptRenderer
from evalsuite.spec import TaskSpec


def check_task(task: TaskSpec, model_path: str) -> None:
    """Labels and inputs declared; an existing head (a classification checkpoint) must predict the same labels."""
    if task.labels is None or task.inputs is None:
        missing = "labels" if task.labels is None else "inputs"
        raise SpecError(f"{task.path}: field '{missing}': an encoder is fine-tuned on a task that declares its "
                        "labels and its inputs (e.g. inputs: [sentence1, sentence2])")
    if is_classifier(model_path):
        head = _head_labels(model_path)
        if head != list(task.labels):
            raise SpecError(f"{model_path} is a classification checkpoint whose head predicts {head}, but task "
                            f"'{task.name}' has labels {list(task.labels)}: start from the base encoder instead")


def _head_labels(model_path: str) -> list[str]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def _examples(task: TaskSpec, tokenizer: Any, docs: list[tuple[int, dict]], max_length: int
              ) -> tuple[list[ClassificationRequest], list[int]]:
    renderer = PromptRenderer(task, task.prompts[0])
    requests, golds = [], []
    for doc_id, doc in docs:
        gold, _ = renderer.gold_of(doc, doc_id, renderer.choices_of(doc, doc_id))
        if not 0 <= gold < len(task.labels):
            raise SpecError(f"{task.path}: field 'target' gave no label index (got {gold}) on document {doc_id}")
        requests.append(encode_texts(tokenizer, renderer.inputs_of(doc, doc_id), max_length))
        golds.append(gold)
    return requests, golds


def finetune_classifier(task: TaskSpec, model_path: str, data: TrainingData, config: TrainConfig,
                        learning_rate: float, max_length: int, progress: bool) -> tuple[Any, Any, TrainResult]:
    """Train a head (and the encoder under it); the returned model holds the best epoch's weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_requests, train_golds = _examples(task, tokenizer, data.train, max_length)
    val_requests, val_golds = _examples(task, tokenizer, data.validation, max_length)
    labels = list(task.labels)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "newly initialized weights" is the point of fine-tuning a new head
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, dtype=torch.float32,
        )
    finally:
        logging.set_verbosity(verbosity)
    pad = tokenizer.pad_token_id or 0

    def step_loss(net: Any, batch: list[int]) -> Any:
        inputs = batch_inputs([train_requests[i] for i in batch], pad)
        logits = net(**inputs).logits
        return torch.nn.functional.cross_entropy(logits, torch.tensor([train_golds[i] for i in batch]))

    def validate(net: Any) -> tuple[float, float]:
        total, correct = 0.0, 0
        with torch.inference_mode():
            for batch in sorted_batches([len(r.input_ids) for r in val_requests], config.batch_size):
                logits = net(**batch_inputs([val_requests[i] for i in batch], pad)).logits.double()
                gold = torch.tensor([val_golds[i] for i in batch])
                total += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
                correct += int((logits.argmax(dim=-1) == gold).sum())
        return total / len(val_requests), correct / len(val_requests)

    lengths = [len(r.input_ids) for r in train_requests]
    result = train(model, lengths, step_loss, validate, config, learning_rate, progress)
    return model, tokenizer, result
