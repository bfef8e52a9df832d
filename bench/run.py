"""The benchmark: both stages x both prompt styles, trained, run and scored in one process."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bench import measure
from utils.lm.training import LEARNING_RATE

BASELINE, DEFAULT, FUSED = "per_utterance", "conversation", "fused"
BOTH = "both"  # the fused variant's stage: one adapter, one read, both answers
# The default runs first in each stage: one-off first-run costs (kernel set-up, lazy imports, page
# faults) then slow the default down, never the baseline, so the speed ratios err against us.
RUN_ORDER = (DEFAULT, BASELINE)
STAGES = ("emotion", "cause")
CONVERSATION_LOSSES = ("answers", "vocabulary")


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures (the command-line options, resolved)."""

    data: str = ""  # an ECF file (Subtask 1 or 2 format); "" = the bundled synthetic sample
    limit: int = 0  # first N conversations of the file, before the split; 0 = all
    model: str = "smollm2"  # alias, folder, .gguf file or hub id; ignored with smoke (tiny random model)
    out: str = "results_test/bench.json"
    train_steps: int = 4  # optimizer steps of each timed training run
    eval_limit: int = 25  # test conversations each style is run on
    batch_size: int = 4  # training batch (both styles)
    eval_batch_size: int = 8  # inference batch (both styles)
    max_length: int = 1024  # both styles' token limit, as the notebooks' MAX_LENGTH
    learning_rate: float = LEARNING_RATE  # the shared default (utils.lm.training_params)
    stages: tuple[str, ...] = STAGES
    cpu_bf16: bool = False  # bf16 autocast on CPUs with bf16 hardware
    quantize: bool = True  # CUDA: 4-bit NF4 QLoRA (the notebooks' default); False: bf16/fp16 LoRA
    peak_tflops: float = 790.0  # the accelerator's dense peak, for MFU (CUDA only)
    tokens_only: bool = False  # count training tokens only: no training, no inference
    fused: bool = True  # with both stages: also the fused style (one adapter, one read for both stages)
    inference: bool = True  # False: train only (speed and memory rows of big shapes)
    shape: str = ""  # random weights of a published shape (bench.shapes.SHAPES), tokenizer of ``model``
    smoke: bool = False
    seed: int = 42
    # the conversation style's training loss: "answers" (softmax over the label words at the read
    # positions, as the notebooks train) or "vocabulary" (the LM loss over every token id there)
    conversation_loss: str = "answers"
    test_frac: float = 0.1
    val_frac: float = 0.1

    def __post_init__(self) -> None:
        if self.conversation_loss not in CONVERSATION_LOSSES:
            raise ValueError(f"conversation_loss {self.conversation_loss!r}: choose from {list(CONVERSATION_LOSSES)}")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ValueError(f"stages {list(self.stages)}: choose from {list(STAGES)}")
        for name in ("train_steps", "eval_limit", "batch_size", "eval_batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: use a positive number")
        if self.limit < 0:
            raise ValueError(f"limit={self.limit}: use 0 for all conversations or a positive count")
        from bench.shapes import SHAPES

        if self.shape and (self.shape not in SHAPES or self.smoke):
            raise ValueError(f"shape={self.shape!r}: choose from {list(SHAPES)}, without --smoke")


# ---------------------------------------------------------------- data and model

def load_data(cfg: BenchConfig) -> dict[str, list[dict]]:
    """The file's first ``limit`` conversations, split as the notebooks split them; eval = test[:eval_limit]."""
    from utils.ecf.data import SAMPLE_PATH, load_ecf, split_conversations
    from utils.env import resolve

    convs = load_ecf(resolve(cfg.data) if cfg.data else SAMPLE_PATH)
    convs = convs[: cfg.limit] if cfg.limit else convs
    splits = split_conversations(convs, cfg.test_frac, cfg.val_frac, cfg.seed)
    if not splits["train"] or not splits["test"]:
        raise ValueError(f"{len(convs)} conversations leave an empty train or test split: raise --limit")
    return {"train": splits["train"], "eval": splits["test"][: cfg.eval_limit]}


def smoke_model(folder: Path, convs: list[dict]) -> str:
    """A tiny random Llama whose tokenizer is trained on the conversations (every label word one token)."""
    from utils.ecf.data import EMOTIONS
    from utils.lm.tiny import build_tiny_llama
    from utils.ecf.prompts import ANSWERS

    texts = [u["text"] for c in convs for u in c["conversation"]]
    return str(build_tiny_llama(folder / "tiny_llama", texts, (*EMOTIONS, *ANSWERS)))


def prepare_model(cfg: BenchConfig, work: Path, data: dict[str, list[dict]]) -> tuple[str, str]:
    """(model path or id, description): the tiny smoke model, a random shape, or ``cfg.model``."""
    from bench.shapes import SHAPES, build_random

    if cfg.smoke:
        return smoke_model(work, data["train"] + data["eval"]), "tiny random Llama (smoke)"
    if cfg.shape:
        return (str(build_random(SHAPES[cfg.shape], cfg.model, work / cfg.shape, cfg.seed)),
                f"random-weight {cfg.shape} shape (tokenizer of {cfg.model})")
    return cfg.model, cfg.model


def strategy_for(cfg: BenchConfig):
    """The loading strategy both styles share."""
    from utils.lm.modeling import choose_strategy

    return choose_strategy(quantize=cfg.quantize, cpu_bf16=cfg.cpu_bf16)


# ---------------------------------------------------------------- one variant

def _fused_examples(train: list[dict], tokenizer: Any, style: str, max_length: int) -> list[dict]:
    from utils.ecf.examples import fused_examples

    return fused_examples(train, tokenizer, max_length)


def _fused_predict(lm: Any, tokenizer: Any, inputs: list[dict], style: str, batch_size: int, max_length: int):
    """The fused one read over conversations without labels: emotions (plain argmax) and causes on them."""
    from utils.ecf.data import strip_labels
    from utils.ecf.predict import predict_causes

    return predict_causes(lm, tokenizer, strip_labels(inputs), FUSED, batch_size, max_length=max_length,
                          decide_offsets={})


def stage_fns(stage: str) -> tuple[Callable, Callable]:
    """(example builder, predictor) of a stage ("both": the fused style's)."""
    from utils.ecf import examples, predict

    if stage == BOTH:
        return _fused_examples, _fused_predict
    if stage == "emotion":
        return examples.emotion_examples, predict.predict_emotions
    return examples.cause_examples, predict.predict_causes


def count_tokens(cfg: BenchConfig, stage: str, style: str, tokenizer: Any, train: list[dict]):
    """(examples, record): one epoch's training examples and their token counts."""
    from utils.ecf.examples import example_stats

    build, _ = stage_fns(stage)
    start = time.perf_counter()
    examples = build(train, tokenizer, style, cfg.max_length)
    lengths = [len(e["input_ids"]) for e in examples]
    record = {"stage": stage, "style": style, **example_stats(examples),
              "tokenize_s": time.perf_counter() - start,
              "longest": max(lengths, default=0),
              "steps_per_epoch": measure.steps_per_epoch(len(examples), cfg.batch_size),
              "padded_tokens_random": measure.padded_tokens(lengths, cfg.batch_size, False, cfg.seed),
              "padded_tokens_grouped": measure.padded_tokens(lengths, cfg.batch_size, True, cfg.seed)}
    return examples, record


def answer_vocabulary(tokenizer: Any, stage: str, style: str, loss: str = "answers") -> tuple[int, ...]:
    """The ids the conversation style's loss is restricted to (as the notebooks train it); () for
    per_utterance, whose recipe is the LM loss over the whole vocabulary, and for loss="vocabulary"."""
    from utils.lm.modeling import label_token_ids
    from utils.ecf.examples import answer_words

    words = answer_words(style, "emotion" if stage == BOTH else stage) if loss == "answers" else ()
    return tuple(label_token_ids(tokenizer, words)) if words else ()


def train_variant(cfg: BenchConfig, model: str, strategy: Any, examples: list[dict], out_dir: Path,
                  params: dict[str, int], epoch_tokens: int, answer_ids: tuple[int, ...] = ()) -> dict[str, Any]:
    """A timed LoRA run of ``train_steps`` steps; tokens/s, projected epoch time, peak memory, MFU."""
    from utils.lm.training import TrainConfig, train

    tcfg = TrainConfig(output_dir=str(out_dir), max_steps=cfg.train_steps, learning_rate=cfg.learning_rate,
                       batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                       save_steps=cfg.train_steps + 1, logging_steps=1, resume=False, answer_ids=answer_ids)
    timer = measure.step_timer()
    with measure.PeakMemory(strategy.device) as mem:
        result = train(model, examples, None, tcfg, strategy=strategy, callbacks=[timer])
    steady, steady_cpu = measure.steady_rates(timer.marks)
    rate = steady or result.tokens_per_s  # one step: nothing to leave out
    out = {"steps": result.global_step, "session_tokens": result.session_tokens, "wall_s": result.wall_s,
           "tokens_per_s": result.tokens_per_s, "steady_tokens_per_s": steady,
           "steady_tokens_per_cpu_s": steady_cpu, "samples_per_s": result.samples_per_s,
           "projected_epoch_s": epoch_tokens / rate if rate else None,
           "projected_epoch_cpu_s": epoch_tokens / steady_cpu if steady_cpu else None,
           "loss_first": result.train_loss_first, "loss_last": result.train_loss_last,
           "adapter_dir": result.adapter_dir, "strategy": result.strategy, **mem.result, "mfu": None}
    if strategy.device == "cuda":
        out["mfu"] = measure.mfu(params["total"], result.session_tokens, result.wall_s, cfg.peak_tflops)
        out["steady_mfu"] = measure.mfu(params["total"], steady, 1.0, cfg.peak_tflops) if steady else None
    return out


def infer_variant(cfg: BenchConfig, model: str, tokenizer: Any, strategy: Any, stage: str, style: str,
                  adapter: str, inputs: list[dict]) -> tuple[list[dict], dict[str, Any]]:
    """The trained adapter over the eval conversations: wall time, throughput, valid outputs, memory."""
    from utils.lm.modeling import autocast, load_model

    _, predict = stage_fns(stage)
    with measure.PeakMemory(strategy.device) as mem:
        lm = load_model(model, strategy=strategy, adapter=adapter)
        # a warm-up on one conversation, kept out of the timed run: one-off costs (first kernels, fresh
        # pages after the heap was handed back) are paid before the clock starts, by both styles alike
        with autocast(strategy), measure.Stopwatch() as warm:
            predict(lm, tokenizer, inputs[:1], style, batch_size=cfg.eval_batch_size, max_length=cfg.max_length)
        with autocast(strategy), measure.Stopwatch() as clock:  # the model load is left out: both pay it alike
            found = predict(lm, tokenizer, inputs, style, batch_size=cfg.eval_batch_size, max_length=cfg.max_length)
            pred, stats = found.convs, found.stats
        del lm
    n_out, wall = stats["n_outputs"], clock.wall_s
    return pred, {"wall_s": wall, "cpu_s": clock.cpu_s, "warmup_wall_s": warm.wall_s,
                  "conversations": stats["conversations"],
                  "utterances": stats["utterances"],
                  "utterances_per_s": stats["utterances"] / wall if wall > 0 else None,
                  "n_prompts": stats["n_prompts"], "prompt_tokens": stats["prompt_tokens"],
                  "n_outputs": n_out, "invalid_outputs": stats["invalid_outputs"],
                  "valid_output_share": (n_out - stats["invalid_outputs"]) / n_out if n_out else None,
                  **mem.result}


def inference_inputs(stage: str, gold: list[dict]) -> list[dict]:
    """What a model is run on: no emotions (emotion stage) or gold emotions without pairs (cause stage)."""
    from utils.ecf.data import strip_labels, with_pairs

    return strip_labels(gold) if stage in ("emotion", BOTH) else [with_pairs(c, []) for c in gold]


def score(stage: str, pred: list[dict], gold: list[dict]) -> float:
    """Emotion weighted F1, or the official Subtask 2 weighted pair F1 (the fused variant: end to end, on the
    emotions it predicted)."""
    from utils.ecf.metric import emotion_scores_convs, score_subtask2

    if stage == "emotion":
        return emotion_scores_convs(pred, gold)["weighted_f1"]
    return score_subtask2(pred, gold)["weighted_f1"]


def baseline_score(stage: str, train: list[dict], gold: list[dict]) -> dict[str, Any]:
    """The baseline every report shows beside the models."""
    from utils.ecf.baselines import majority_emotion, self_and_previous_causes

    if stage == "emotion":
        return {"name": "majority", "value": score(stage, majority_emotion(train, inference_inputs(stage, gold)), gold)}
    if stage == BOTH:  # the same heuristic on the majority emotion: what end to end means with no model
        labelled = majority_emotion(train, inference_inputs(stage, gold))
        return {"name": "self_and_previous_majority_emotions",
                "value": score(stage, self_and_previous_causes(labelled), gold)}
    return {"name": "self_and_previous_gold_emotions",
            "value": score(stage, self_and_previous_causes(inference_inputs(stage, gold)), gold)}


# ---------------------------------------------------------------- ratios

def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def stage_ratios(base: dict, dflt: dict) -> dict[str, Any]:
    """per_utterance / conversation for costs (> 1: the default is cheaper), the default's valid share."""
    out = {"train_tokens_ratio": _ratio(base["tokens"], dflt["tokens"]),
           "loss_tokens_ratio": _ratio(base["answer_tokens"], dflt["answer_tokens"]),
           "padded_tokens_ratio": _ratio(base["padded_tokens_grouped"], dflt["padded_tokens_grouped"])}
    if "train" in dflt:
        out.update(
            projected_epoch_time_ratio=_ratio(base["train"]["projected_epoch_s"], dflt["train"]["projected_epoch_s"]),
            projected_epoch_cpu_time_ratio=_ratio(base["train"]["projected_epoch_cpu_s"],
                                                  dflt["train"]["projected_epoch_cpu_s"]),
            train_peak_memory_ratio=_ratio(base["train"]["peak_mb"], dflt["train"]["peak_mb"]))
    if "inference" in dflt:
        out.update(
            inference_speedup=_ratio(base["inference"]["wall_s"], dflt["inference"]["wall_s"]),
            inference_cpu_time_speedup=_ratio(base["inference"]["cpu_s"], dflt["inference"]["cpu_s"]),
            valid_output_share=dflt["inference"]["valid_output_share"],
            valid_output_share_per_utterance=base["inference"]["valid_output_share"],
            score_difference=dflt["score"]["value"] - base["score"]["value"])
    return out


def fused_headline(variants: list[dict]) -> dict[str, Any] | None:
    """The fused style against per_utterance, both stages together: token ratio, inference speed-up, valid share;
    None where the fused variant was not run."""
    fused = next((v for v in variants if v["style"] == FUSED), None)
    recipe = [v for v in variants if v["style"] == BASELINE]
    if fused is None or len(recipe) != len(STAGES):
        return None
    tokens = sum(v["tokens"] for v in recipe)
    out: dict[str, Any] = {"train_tokens": fused["tokens"], "train_tokens_ratio": _ratio(tokens, fused["tokens"]),
                           "inference_wall_s": None, "inference_speedup": None, "valid_output_share": None}
    if "inference" in fused and all("inference" in v for v in recipe):
        inf = fused["inference"]
        out.update(inference_wall_s=inf["wall_s"],
                   inference_speedup=_ratio(sum(v["inference"]["wall_s"] for v in recipe), inf["wall_s"]),
                   valid_output_share=inf["valid_output_share"])
    return out


def headline(variants: list[dict]) -> dict[str, Any]:
    """The top-level numbers, both stages together: token ratio, inference speed-up, valid share."""
    def total(style: str, get: Callable[[dict], float]) -> float:
        return sum(get(v) for v in variants if v["style"] == style)

    tokens = {s: total(s, lambda v: v["tokens"]) for s in RUN_ORDER}
    out: dict[str, Any] = {"train_tokens": tokens, "train_tokens_ratio": _ratio(tokens[BASELINE], tokens[DEFAULT]),
                           "inference_wall_s": None, "inference_speedup": None, "valid_output_share": None}
    if variants and all("inference" in v for v in variants):
        wall = {s: total(s, lambda v: v["inference"]["wall_s"]) for s in RUN_ORDER}
        outputs = [v["inference"] for v in variants if v["style"] == DEFAULT]
        n = sum(i["n_outputs"] for i in outputs)
        out.update(inference_wall_s=wall, inference_speedup=_ratio(wall[BASELINE], wall[DEFAULT]),
                   valid_output_share=(n - sum(i["invalid_outputs"] for i in outputs)) / n if n else None)
    return out


# ---------------------------------------------------------------- the run

@dataclass
class Bench:
    """What every variant of one run shares: the model, its tokenizer and strategy, the data."""

    cfg: BenchConfig
    model: str
    tokenizer: Any
    strategy: Any
    params: dict[str, int]
    data: dict[str, list[dict]]
    work: Path
    log: Callable[[str], None]


def measure_variant(b: Bench, stage: str, style: str, baseline: dict | None) -> dict[str, Any]:
    """Tokens per epoch; then (unless tokens_only) a timed training run; then inference and the score."""
    cfg, n_train, n_eval = b.cfg, len(b.data["train"]), len(b.data["eval"])
    b.log(f"[bench] {stage} / {style}: tokenizing {n_train} training conversations")
    examples, record = count_tokens(cfg, stage, style, b.tokenizer, b.data["train"])
    if cfg.tokens_only:
        return record
    b.log(f"[bench] {stage} / {style}: training {cfg.train_steps} steps on {len(examples)} sequences")
    answers = answer_vocabulary(b.tokenizer, stage, style, cfg.conversation_loss)
    record["train"] = train_variant(cfg, b.model, b.strategy, examples, b.work / stage / style, b.params,
                                    record["tokens"], answers)
    adapter = record["train"].pop("adapter_dir")
    if cfg.inference:
        b.log(f"[bench] {stage} / {style}: inference on {n_eval} conversations")
        pred, record["inference"] = infer_variant(cfg, b.model, b.tokenizer, b.strategy, stage, style, adapter,
                                                  inference_inputs(stage, b.data["eval"]))
        record["score"] = {"value": score(stage, pred, b.data["eval"]), "baseline": baseline}
    return record


def run_bench(cfg: BenchConfig, command: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every stage x style on the same model and conversations; returns the JSON record."""
    from transformers import AutoConfig

    import utils.ecf.examples  # noqa: F401  imported now, so the fingerprint below is of the code that runs
    import utils.ecf.predict  # noqa: F401  (both stages)
    from utils.env import ROOT
    from utils.lm.modeling import LoraSettings, load_tokenizer
    from utils.lm.sources import local_source

    started, machine, load_start = time.perf_counter(), measure.machine_info(), measure.load_average()
    code = measure.code_fingerprint(ROOT)
    data = load_data(cfg)
    work = Path(tempfile.mkdtemp(prefix="emocause_bench_"))
    try:
        model, model_name = prepare_model(cfg, work, data)
        strategy = strategy_for(cfg)
        lora = LoraSettings()  # what train() adds: r16 on q/k/v/o
        params = measure.parameter_counts(AutoConfig.from_pretrained(local_source(model)), lora.r, lora.target_modules)
        b = Bench(cfg, model, load_tokenizer(model), strategy, params, data, work, log)
        variants = []
        for stage in cfg.stages:
            baseline = baseline_score(stage, data["train"], data["eval"]) if cfg.inference else None
            variants += [measure_variant(b, stage, style, baseline) for style in RUN_ORDER]
        if cfg.fused and set(cfg.stages) == set(STAGES):
            baseline = baseline_score(BOTH, data["train"], data["eval"]) if cfg.inference else None
            variants.append(measure_variant(b, BOTH, FUSED, baseline))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {(v["stage"], v["style"]): v for v in variants}
    return clean({
        "command": command, "machine": machine, "code": code, "load_average_start": load_start,
        "load_average_end": measure.load_average(), "total_wall_s": time.perf_counter() - started,
        "config": asdict(cfg), "model": model_name,
        "strategy": {"name": strategy.name, "device": strategy.device, "precision": strategy.precision},
        "parameters": params,
        "data": {"train_conversations": len(data["train"]), "eval_conversations": len(data["eval"]),
                 "eval_utterances": sum(len(c["conversation"]) for c in data["eval"])},
        **headline(variants),
        "fused": fused_headline(variants),
        "ratios": {stage: stage_ratios(by[stage, BASELINE], by[stage, DEFAULT]) for stage in cfg.stages},
        "variants": variants,
    })


def clean(obj: Any) -> Any:
    """NaN/inf become None (strict JSON), tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj
