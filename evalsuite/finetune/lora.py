"""LoRA fine-tuning of a causal LM on the task's prompt -> gold answer pairs.

Each training document is rendered zero-shot through one prompt variant (the task's default unless
chosen) and tokenised exactly as evaluation tokenises it (:func:`~evalsuite.engines.encode_choices`):
the loss is the mean negative log-likelihood of the gold continuation's tokens only. Validation reports
that loss on held-out documents and their accuracy scored as evaluation scores it (argmax over the
choices' summed log-likelihoods).
"""

from __future__ import annotations

from typing import Any

from evalsuite.engines import encode_choices
from evalsuite.errors import SpecError
from evalsuite.finetune.config import TrainConfig
from evalsuite.finetune.data import TrainingData
from evalsuite.finetune.loop import TrainResult, sorted_batches, train
from evalsuite.prompting import PromptRenderer
from evalsuite.spec import PromptSpec, TaskSpec

# One scored sequence: token ids and how many of them are context (the rest is the continuation).
Scored = tuple[list[int], int]


def prompt_of(task: TaskSpec, variant: str | None) -> PromptSpec:
    """The prompt variant trained on; it must score choices by log-likelihood (the target is the gold choice)."""
    prompt = task.prompt(variant) if variant else task.prompts[0]
    if prompt.method != "loglikelihood" or not (prompt.choices or task.choices):
        raise SpecError(f"{prompt.path}: LoRA fine-tuning trains on a log-likelihood prompt with choices (the "
                        f"target is the gold choice); variant '{prompt.name}' is a {prompt.method} prompt")
    return prompt


def _sequences(task: TaskSpec, prompt: PromptSpec, tokenizer: Any, docs: list[tuple[int, dict]], max_length: int
               ) -> list[tuple[list[Scored], int]]:
    """Per document: one (ids, context length) per choice, and the gold choice's index."""
    renderer = PromptRenderer(task, prompt)
    out = []
    for doc_id, doc in docs:
        instance = renderer.render(doc, doc_id)
        if not 0 <= instance.gold < len(instance.continuations):
            raise SpecError(f"{task.path}: field 'target' gave no choice index (got {instance.gold}) on document {doc_id}")
        request = encode_choices(tokenizer, instance.context, instance.continuations)
        choices = []
        for continuation in request.continuations:
            # The context is cut on the left when too long, as the evaluation engine does.
            context = list(request.context[-max(max_length - len(continuation), 1):])
            choices.append((context + list(continuation), len(context)))
        out.append((choices, instance.gold))
    return out


def _target_logprobs(net: Any, sequences: list[Scored], pad: int) -> tuple[Any, Any]:
    """Log-probability of every continuation token, and the index of the sequence it belongs to.

    The output head runs only at positions that predict a continuation token.
    """
    import torch

    width = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    rows, positions, targets = [], [], []
    for b, (seq, n_context) in enumerate(sequences):
        ids[b, : len(seq)], mask[b, : len(seq)] = torch.tensor(seq), 1
        for j in range(n_context, len(seq)):
            rows.append(b)
            positions.append(j - 1)
            targets.append(seq[j])
    causal_lm = net.get_base_model()
    hidden = causal_lm.base_model(input_ids=ids, attention_mask=mask)[0]
    rows_t = torch.tensor(rows)
    logits = causal_lm.get_output_embeddings()(hidden[rows_t, torch.tensor(positions)]).float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(targets)[:, None]).squeeze(1)
    return logprobs, rows_t


def finetune_lora(task: TaskSpec, model_path: str, prompt: PromptSpec, data: TrainingData, config: TrainConfig,
                  learning_rate: float, max_length: int, progress: bool) -> tuple[Any, TrainResult, list[str]]:
    """Train a LoRA adapter; returns the PEFT model (best epoch's adapter weights), the result, target modules."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_docs = _sequences(task, prompt, tokenizer, data.train, max_length)
    val_docs = _sequences(task, prompt, tokenizer, data.validation, max_length)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets) if config.lora_targets else None)
    model = get_peft_model(base, lora)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    gold_train = [choices[gold] for choices, gold in train_docs]

    def step_loss(net: Any, batch: list[int]) -> Any:
        logprobs, _ = _target_logprobs(net, [gold_train[i] for i in batch], pad)
        return -logprobs.mean()

    flat = [(d, k, seq) for d, (choices, _) in enumerate(val_docs) for k, seq in enumerate(choices)]

    def validate(net: Any) -> tuple[float, float]:
        sums = [[0.0] * len(choices) for choices, _ in val_docs]
        nll, tokens = 0.0, 0
        with torch.inference_mode():
            for batch in sorted_batches([len(seq[0]) for _, _, seq in flat], config.batch_size):
                logprobs, owner = _target_logprobs(net, [flat[i][2] for i in batch], pad)
                per_sequence = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, owner, logprobs.double())
                for row, i in enumerate(batch):
                    d, k, (seq, n_context) = flat[i]
                    sums[d][k] = float(per_sequence[row])
                    if k == val_docs[d][1]:
                        nll -= sums[d][k]
                        tokens += len(seq) - n_context
        correct = sum(max(range(len(s)), key=s.__getitem__) == gold for s, (_, gold) in zip(sums, val_docs))
        return nll / max(tokens, 1), correct / len(val_docs)

    lengths = [len(seq) for seq, _ in gold_train]
    result = train(model, lengths, step_loss, validate, config, learning_rate, progress)
    targets = sorted(model.peft_config["default"].target_modules)
    return model, result, targets
