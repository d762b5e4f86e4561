"""Fine-tuning on tiny random models and real data: learning, early stopping, reproducibility, bad inputs,
and fine-tuned checkpoints and adapters evaluated through the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evalsuite.api import evaluate, load_tasks
from evalsuite.cli import main
from evalsuite.data import load_split
from evalsuite.engines import encode_choices, load_engine
from evalsuite.engines.classifier import encode_texts
from evalsuite.engines.models import fingerprint
from evalsuite.errors import EngineError, SpecError
from evalsuite.finetune import TrainConfig, finetune
from evalsuite.prompting import PromptRenderer
from evalsuite.results import read_samples

# Small enough to train in seconds; the learning rate is high because the models start from random weights.
FAST = dict(limit=64, validation_limit=32, max_length=64, batch_size=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One CPU thread: fast for tiny models, and the same float reduction order on every machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    from tiny_models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def rte_classifier(tiny_encoder, tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "bert-rte"
    return finetune("rte", str(tiny_encoder), output=out, data_dir=data_dir, progress=False,
                    config=TrainConfig(epochs=3, learning_rate=1e-3, **FAST))


@pytest.fixture(scope="module")
def rte_adapter(tiny_model, tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "llama-rte-lora"
    return finetune("rte", str(tiny_model), output=out, data_dir=data_dir, progress=False,
                    config=TrainConfig(epochs=2, learning_rate=1e-2, **FAST))


def card(folder: Path) -> dict:
    return json.loads((folder / "training_card.json").read_text())


def weights(folder: Path) -> dict[str, torch.Tensor]:
    [file] = [p for p in folder.iterdir() if p.suffix == ".safetensors"]
    return load_file(file)


def test_classifier_lowers_validation_loss_and_records_its_training(rte_classifier, tiny_encoder):
    info = card(rte_classifier)
    curve = info["curve"]
    assert [c["epoch"] for c in curve] == list(range(len(curve))) and curve[0]["train_loss"] is None
    assert curve[info["best_epoch"]]["validation_loss"] < curve[0]["validation_loss"]
    assert info["method"] == "classifier" and info["task"]["labels"] == ["entailment", "not_entailment"]
    assert info["base_model"]["sha256"] == fingerprint(str(tiny_encoder))
    # RTE has no validation split of its own: a seeded slice of train is held out, disjoint from training.
    data = info["data"]
    assert data["train"]["split"] == data["validation"]["split"] == "train"
    assert "seeded 10%" in data["validation"]["held_out"] and len(data["validation"]["doc_ids"]) == 32
    assert data["train"]["n"] == 64 and len(data["train"]["sha256"]) == 64
    assert info["hyperparameters"]["learning_rate"] == 1e-3 and info["train_time_s"] > 0
    config = json.loads((rte_classifier / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"}


def test_the_saved_checkpoint_is_the_best_epoch(tiny_encoder, tmp_path, data_dir):
    """Training runs on past a worse epoch; the folder holds the best epoch's weights, not the last's."""
    out = finetune("mrpc", str(tiny_encoder), output=tmp_path / "ck", data_dir=data_dir, progress=False,
                   config=TrainConfig(epochs=4, patience=4, learning_rate=3e-3, **FAST))
    info = card(out)
    losses = [c["validation_loss"] for c in info["curve"]]
    assert info["best_epoch"] == int(np.argmin(losses)) and info["best_epoch"] < len(losses) - 1
    # Recompute the validation loss from the saved checkpoint through the classification engine.
    engine = load_engine("hf", str(out))
    task = load_tasks()["mrpc"]
    renderer = PromptRenderer(task, task.prompts[0])
    docs = list(enumerate(load_split(task, "validation", data_dir).docs))[:32]
    answers = engine.classify([encode_texts(engine.tokenizer, renderer.inputs_of(d, i), 64) for i, d in docs])
    golds = [d["label"] for _, d in docs]
    recomputed = -np.mean([answer[g] for answer, g in zip(answers, golds)])
    assert recomputed == pytest.approx(losses[info["best_epoch"]], abs=1e-5)
    assert recomputed != pytest.approx(losses[-1], abs=1e-5)


def test_early_stopping_stops_after_patience_epochs(tiny_encoder, tmp_path, data_dir, caplog):
    # With a zero learning rate nothing improves, so training must stop after `patience` epochs.
    out = finetune("rte", str(tiny_encoder), output=tmp_path / "ck", data_dir=data_dir, progress=False,
                   config=TrainConfig(epochs=10, patience=2, learning_rate=0.0, **FAST))
    info = card(out)
    assert info["stopped_early"] and info["epochs_run"] == 2 and info["best_epoch"] == 0
    assert "untrained weights are kept" in caplog.text and "--monitor accuracy" in caplog.text
    assert info["steps"] == 2 * 4  # 64 documents in batches of 16, two epochs


@pytest.mark.parametrize("method", ["classifier", "lora"])
def test_same_seed_gives_the_same_weights(method, tiny_encoder, tiny_model, tmp_path, data_dir):
    model = tiny_encoder if method == "classifier" else tiny_model
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = weights(finetune("rte", str(model), output=tmp_path / name, data_dir=data_dir, progress=False,
                                      config=TrainConfig(epochs=1, learning_rate=1e-3, seed=seed, **FAST)))
    assert runs["a"].keys() == runs["b"].keys() and len(runs["a"]) > 0
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_lora_trains_on_the_gold_target_tokens_only(rte_adapter, tiny_model, data_dir):
    from transformers import AutoTokenizer

    from evalsuite.finetune.lora import _sequences

    task = load_tasks()["rte"]
    doc = load_split(task, "train", data_dir).docs[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    [(choices, gold)] = _sequences(task, task.prompts[0], tokenizer, [(0, doc)], 4096)
    instance = PromptRenderer(task, task.prompts[0]).render(doc, 0)
    request = encode_choices(tokenizer, instance.context, instance.continuations)
    ids, n_context = choices[gold]
    # Tokenised exactly as evaluation tokenises: the shared context, then the gold continuation (the loss).
    assert ids[:n_context] == list(request.context) and ids[n_context:] == list(request.continuations[gold])

    info = card(rte_adapter)
    assert info["method"] == "lora" and info["task"]["prompt"]["variant"] == "plain"
    assert info["curve"][info["best_epoch"]]["validation_loss"] < info["curve"][0]["validation_loss"]
    assert info["base_model"]["sha256"] == fingerprint(str(tiny_model))
    assert info["hyperparameters"]["lora_targets"] == ["q_proj", "v_proj"]  # peft's default for Llama
    adapter_config = json.loads((rte_adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and Path(adapter_config["base_model_name_or_path"]) == tiny_model.resolve()


def test_classification_checkpoint_is_evaluated_by_its_head(rte_classifier, tmp_path, data_dir):
    run = evaluate(str(rte_classifier), "rte", mode="fine-tuned", limit=40, data_dir=data_dir,
                   output=tmp_path, progress=False, batch_size=7)
    [ev] = run.record["evaluations"]
    assert ev["variant"] == "head" and ev["method"] == "classifier" and ev["n"] == 40
    assert {"accuracy", "f1", "mcc", "ece", "brier"} == set(ev["metrics"])  # the head's label probabilities: calibration
    acc = ev["metrics"]["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"]
    assert run.record["model"]["finetuned"] == {"base": "bert", "task": "rte", "method": "classifier"}
    samples = read_samples(run.path)
    assert samples[0]["inputs"][1] == load_split(load_tasks()["rte"], "validation", data_dir).docs[0]["sentence2"]
    for s in samples:
        assert s["pred"] == int(np.argmax(s["label_logprobs"])) and np.isclose(np.exp(s["label_logprobs"]).sum(), 1)
    assert acc["value"] == pytest.approx(np.mean([s["correct"] for s in samples]))
    # Same scores whatever the batch size.
    again = evaluate(str(rte_classifier), "rte", mode="fine-tuned", limit=40, data_dir=data_dir,
                     output=tmp_path, progress=False, batch_size=40)
    other = read_samples(again.path)
    assert np.allclose([s["label_logprobs"] for s in samples], [s["label_logprobs"] for s in other], atol=1e-6)


def test_adapter_is_evaluated_and_changes_the_base_scores(rte_adapter, tiny_model, tmp_path, data_dir):
    tuned = evaluate(str(tiny_model), "rte", mode="fine-tuned", adapter=str(rte_adapter), limit=10,
                     data_dir=data_dir, output=tmp_path, progress=False)
    base = evaluate(str(tiny_model), "rte", limit=10, data_dir=data_dir, output=tmp_path, progress=False)
    assert tuned.record["model"]["finetuned"]["method"] == "lora"
    a, b = read_samples(tuned.path), read_samples(base.path)
    assert [s["prompt"] for s in a] == [s["prompt"] for s in b]
    assert not np.allclose([s["logprobs"] for s in a], [s["logprobs"] for s in b])


# -- bad inputs: each one a clear error before any training or evaluation -------------------------------


def test_task_without_a_train_split_is_refused(tiny_model, tmp_path, data_dir, capsys):
    code = main(["finetune", "--task", "piqa", "--model", str(tiny_model), "--output", str(tmp_path / "ck"),
                 "--data-dir", str(data_dir), "--no-progress"])
    assert code == 2
    assert "piqa.yaml: field 'splits.train'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_task_without_inputs_is_refused_for_an_encoder(tiny_encoder, tmp_path, data_dir):
    with pytest.raises(SpecError, match="copa.yaml: field 'labels'"):
        finetune("copa", str(tiny_encoder), output=tmp_path / "ck", data_dir=data_dir, progress=False)
    assert not list(tmp_path.iterdir())


def test_label_mismatch_is_refused_before_training_and_before_evaluation(rte_classifier, tmp_path, data_dir):
    with pytest.raises(SpecError, match=r"head predicts \['entailment', 'not_entailment'\].*'mrpc'"):
        finetune("mrpc", str(rte_classifier), output=tmp_path / "ck", data_dir=data_dir, progress=False)
    with pytest.raises(SpecError, match=r"head predicts \['entailment', 'not_entailment'\].*'mrpc'"):
        evaluate(str(rte_classifier), "rte,mrpc", mode="fine-tuned", limit=5, data_dir=data_dir,
                 output=tmp_path / "runs", progress=False)
    with pytest.raises(SpecError, match="--mode fine-tuned"):
        evaluate(str(rte_classifier), "rte", limit=5, data_dir=data_dir, output=tmp_path / "runs", progress=False)
    assert not (tmp_path / "ck").exists() and not (tmp_path / "runs").exists()


def test_adapter_for_another_base_model_is_refused(rte_adapter, tmp_path, data_dir):
    from tiny_models import tiny_llama

    other = tiny_llama(tmp_path / "other", seed=1)
    with pytest.raises(EngineError, match="was trained on .* but the model given is"):
        evaluate(str(other), "rte", mode="fine-tuned", adapter=str(rte_adapter), limit=5, data_dir=data_dir,
                 output=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()
    # Without a training card, the base folder named in adapter_config.json is fingerprinted instead.
    bare = tmp_path / "bare"
    bare.mkdir()
    for file in rte_adapter.iterdir():
        if file.name != "training_card.json":
            (bare / file.name).write_bytes(file.read_bytes())
    with pytest.raises(EngineError, match="was trained on"):
        load_engine("hf", str(other), adapter=str(bare))
