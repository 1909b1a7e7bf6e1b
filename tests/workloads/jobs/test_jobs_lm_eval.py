"""lm-eval adapter and eval job, offline, on task files the tests write: each score equals a direct
computation with the model (a continuation's log-likelihood is the sum of its log-probs; is_greedy is the
argmax; batched equals one by one; offloaded equals on device; SCONE's served F equals A_fgram on tags)."""

import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from workloads.data import DataConfig
from workloads.jobs import checkpoint, evaluate
from workloads.jobs.evaluate import EvalJobConfig, EvalTask
from workloads.jobs.lm_eval_adapter import IsoLM
from workloads.jobs.result import JobContext
from workloads.jobs.setup import (
    build_model,
    prepare_job,
)
from workloads.jobs.spec import ModelOverrides
from workloads.l3.offload import offload_l3_tables
from workloads.models.moe import serve_dropless
from workloads.scone.serve import FgramTable

DATA = DataConfig(vocab_size=512, max_documents=50, seq_len=32)
OVERRIDES = ModelOverrides(vocab_size=512)
PAIRS = [  # (context, continuation): ragged lengths, a leading-space continuation, an empty context
    ("The module defines", " a function"),
    ("Return the value of", " the attribute named by the argument"),
    ("x", " = 1"),
    ("", "Hello world"),
    ("A long context that keeps going for a while before", " it ends"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("lm-eval-cache"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


@pytest.fixture(scope="module")
def built(cache, tmp_path_factory):
    """family -> (model, data, scone data): the job's real model (LZW rows, SCONE f-grams) at random init."""
    out = {}
    task = tmp_path_factory.mktemp("task") / "t.jsonl"
    task.write_text("{}\n")
    for family in ("dense", "l3", "scone", "moe"):
        cfg = EvalJobConfig(
            "debug", family, tasks=(EvalTask("t", str(task)),), overrides=OVERRIDES, data=DATA
        )
        specialize = lambda m, cfg=cfg: evaluate.resolve(cfg, cuda=False, model=m).model  # noqa: E731
        job = prepare_job(cfg.model_spec(), None, DATA, cache, specialize)
        model_cfg, counts, data, scone = job.model, job.counts, job.data, job.scone
        fgrams = scone.fgrams if scone is not None else None
        model = build_model(model_cfg, counts, "cpu", seed=3, fgrams=fgrams).eval()
        if model_cfg.moe is not None:
            serve_dropless(model)  # as the eval job serves MoE
        out[family] = (model, data, scone)
    return out


def _encode(lm: IsoLM, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """What TemplateLM does: the whole string tokenized, split where the context's tokens end."""
    if not context:
        return [lm.eot_token_id], lm.tok_encode(continuation)
    whole, ctx = lm.tok_encode(context + continuation), lm.tok_encode(context)
    return ctx, whole[len(ctx) :]


@torch.no_grad()
def _direct(model, context: list[int], continuation: list[int], scone=None) -> tuple[float, bool]:
    """One sequence, one forward: Σ log p(continuation_i | everything before), and whether each is argmax.
    SCONE: A_fgram on the sequence's own longest-suffix tags (the training path)."""
    ids = torch.tensor([context + continuation])
    x = ids[:, :-1]
    kw = {} if scone is None else {"fgram_ids": torch.from_numpy(scone.matcher.tag(x[0].numpy()))[None]}
    logprobs = F.log_softmax(model(x, **kw)[0].float(), -1)[0, len(context) - 1 :]
    target = ids[0, len(context) :]
    return logprobs.gather(1, target[:, None]).sum().item(), bool((logprobs.argmax(-1) == target).all())


def _requests(*args_list):
    return [SimpleNamespace(args=args) for args in args_list]


@pytest.mark.parametrize("family", ["dense", "l3", "scone", "moe"])
def test_loglikelihood_is_the_sum_of_the_models_log_probs(family, built):
    model, data, scone = built[family]
    handle = (
        FgramTable(scone.matcher, model.precompute_fgram_table()).serve(model, "device") if scone else None
    )
    try:
        lm = IsoLM(model, data.tokenizer, data.eot_id, batch_size=3)
        got = lm.loglikelihood(_requests(*PAIRS), disable_tqdm=True)
    finally:
        if handle is not None:
            handle.remove()
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got, strict=True):
        want, want_greedy = _direct(model, *_encode(lm, context, continuation), scone=scone)
        assert logprob == pytest.approx(want, rel=1e-4, abs=1e-4) and logprob < 0
        assert greedy == want_greedy


@pytest.mark.parametrize("family", ["dense", "l3", "moe"])
def test_is_greedy_is_true_exactly_for_the_argmax_continuation(family, built):
    model, data, _ = built[family]
    lm = IsoLM(model, data.tokenizer, data.eot_id)
    context = lm.tok_encode("The module defines a function that")
    with torch.no_grad():
        greedy = model(torch.tensor([context]))[0][0].argmax(-1).tolist()
    seq = list(context)
    for _ in range(3):  # three greedy tokens, one forward each
        with torch.no_grad():
            seq.append(int(model(torch.tensor([seq]))[0][0, -1].argmax()))
    best = seq[len(context) :]
    assert best[0] == greedy[-1]
    wrong = best[:-1] + [(best[-1] + 1) % model.config.vocab_size]
    got = lm._loglikelihood_tokens([(("", ""), context, best), (("", ""), context, wrong)])
    assert got[0][1] is True and got[1][1] is False
    assert got[0][0] > got[1][0]  # the argmax token is the likelier last token


@pytest.mark.parametrize("family", ["dense", "l3", "scone", "moe"])
def test_batched_equals_one_by_one(family, built):
    model, data, scone = built[family]
    handle = FgramTable(scone.matcher, model.precompute_fgram_table()).serve(model, "host") if scone else None
    try:
        requests = _requests(*PAIRS)
        one = IsoLM(model, data.tokenizer, data.eot_id, batch_size=1).loglikelihood(requests, True)
        batched = IsoLM(model, data.tokenizer, data.eot_id, batch_size=4).loglikelihood(requests, True)
    finally:
        if handle is not None:
            handle.remove()
    for (a, ga), (b, gb) in zip(one, batched, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5) and ga == gb


@pytest.mark.parametrize("family", ["l3", "scone"])
def test_offloaded_equals_on_device(family, built):
    model, data, scone = built[family]
    requests = _requests(*PAIRS)
    table = FgramTable(scone.matcher, model.precompute_fgram_table()) if scone else None
    scores = {}
    for placement in ("device", "offload"):
        if table is not None:
            handle = table.serve(model, "host" if placement == "offload" else "device")
        else:
            handle = offload_l3_tables(model) if placement == "offload" else None
        try:
            scores[placement] = IsoLM(model, data.tokenizer, data.eot_id, 2).loglikelihood(requests, True)
        finally:
            if handle is not None:
                handle.remove()
    for (a, ga), (b, gb) in zip(scores["device"], scores["offload"], strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5) and ga == gb


def test_rolling_loglikelihood_sums_disjoint_windows(built):
    model, data, _ = built["dense"]
    text = "Return the value of the named attribute of object. " * 3
    whole = IsoLM(model, data.tokenizer, data.eot_id).loglikelihood_rolling(_requests((text,)), True)[0]
    ids = IsoLM(model, data.tokenizer, data.eot_id).tok_encode(text)
    assert len(ids) + 1 <= model.config.max_seq_len  # one window: every token after the separator
    assert whole == pytest.approx(_direct(model, [data.eot_id], ids)[0], rel=1e-4)
    small = IsoLM(model, data.tokenizer, data.eot_id, batch_size=2, max_length=8)
    windowed = small.loglikelihood_rolling(_requests((text,), ("short",)), True)
    # max_length 8: the first 8 tokens after the separator, then each next 8 with the 8 tokens before
    want, done = _direct(model, [data.eot_id], ids[:8])[0], 8
    while done < len(ids):
        end = min(done + 8, len(ids))
        context = ids[max(0, end - 9) : done]
        want += _direct(model, context, ids[done:end])[0]
        done = end
    assert windowed[0] == pytest.approx(want, rel=1e-4)
    assert windowed[1] == pytest.approx(_direct(model, [data.eot_id], small.tok_encode("short"))[0], rel=1e-4)


def test_generate_until_is_greedy_and_stops(built):
    model, data, _ = built["dense"]
    lm = IsoLM(model, data.tokenizer, data.eot_id, batch_size=2)
    contexts = ["def f(x):", "The module", "class A:"]
    out = lm.generate_until(_requests(*((c, {"until": ["\n\n"], "max_gen_toks": 6}) for c in contexts)), True)
    for context, text in zip(contexts, out, strict=True):
        seq = lm.tok_encode(context)
        for _ in range(6):
            with torch.no_grad():
                seq.append(int(model(torch.tensor([seq]))[0][0, -1].argmax()))
        want = lm.tok_decode(seq[len(lm.tok_encode(context)) :])
        assert text == want.split("\n\n")[0]
    with pytest.raises(ValueError, match="only greedy"):
        lm.generate_until(_requests(("x", {"do_sample": True})), True)


def _write_tasks(tmp_path):
    rows = [
        {"question": "The module defines", "choices": [" a function", " the end", " zz"], "answer": 0},
        {"question": "Return the", "choices": [" value", " qq", " of object"], "answer": 2},
        {"question": "import", "choices": [" os", " sys"], "answer": 1},
        {"question": "x =", "choices": [" 1", " None", " []", " x"], "answer": 3},
    ]
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ppl = tmp_path / "ppl.jsonl"
    ppl.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["Return the value.", "A module docstring."])
    )
    return rows, mc, ppl


def _no_network(*args, **kwargs):
    raise AssertionError(f"the eval job reached for the network: connect{args[1:]}")


def test_eval_job_on_local_task_files_equals_a_direct_computation(built, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)  # local tasks never touch the network
    model, data, _ = built["l3"]
    rows, mc, ppl = _write_tasks(tmp_path)
    checkpoint.save_weights(tmp_path / "ckpt", model)
    tasks = (EvalTask("mc", str(mc)), EvalTask("ppl", str(ppl), kind="perplexity", target="{{text}}"))
    cfg = EvalJobConfig("debug", "l3", tasks=tasks, overrides=OVERRIDES, data=DATA, batch_size=3,
                        l3_placement="offload")  # fmt: skip
    result = evaluate.run(cfg, JobContext(cache_dir=cache, checkpoint_dir=str(tmp_path / "ckpt")))
    m = result.metrics
    lm = IsoLM(model, data.tokenizer, data.eot_id)
    correct = []
    for row in rows:
        scores = [_direct(model, *_encode(lm, row["question"], c))[0] for c in row["choices"]]
        correct.append(max(range(len(scores)), key=scores.__getitem__) == row["answer"])
    acc = sum(correct) / len(rows)
    assert m["lm_eval/mc/acc"] == pytest.approx(acc)
    assert m["lm_eval/mc/acc_stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) / (len(rows) - 1)))
    texts = [json.loads(line)["text"] for line in ppl.read_text().splitlines()]
    nats = sum(_direct(model, [data.eot_id], lm.tok_encode(t))[0] for t in texts)
    n_bytes = sum(len(t.encode()) for t in texts)
    assert m["lm_eval/ppl/bits_per_byte"] == pytest.approx(-nats / n_bytes / math.log(2), rel=1e-4)
    assert {"lm_eval/mc/acc_norm", "lm_eval/ppl/word_perplexity", "lm_eval/ppl/byte_perplexity"} <= m.keys()
    datasets = {d["name"]: d for d in json.loads(result.info["datasets"])}
    assert datasets["mc"]["n_docs"] == 4 and datasets["mc"]["context"] == "eval"
    training = [d for d in json.loads(result.info["datasets"]) if d["context"] == "training"]
    assert [d["digest"] for d in training] == [data.fingerprint]  # the corpus the weights were trained on
    assert len(datasets["mc"]["digest"]) == 64 and datasets["mc"]["digest"] != datasets["ppl"]["digest"]
    assert result.kind == "eval" and result.info["weights"].endswith("final-model.pt")


def test_a_dense_eval_with_offload_placement_has_nothing_to_place(built, cache, tmp_path):
    model, _, _ = built["dense"]
    _, mc, _ = _write_tasks(tmp_path)
    checkpoint.save_weights(tmp_path, model)
    cfg = EvalJobConfig("debug", "dense", tasks=(EvalTask("mc", str(mc)),), overrides=OVERRIDES, data=DATA,
                        l3_placement="offload", limit=2)  # fmt: skip
    result = evaluate.run(cfg, JobContext(cache_dir=cache, checkpoint_dir=str(tmp_path)))
    assert result.info["placement"] == "device" and 0 <= result.metrics["lm_eval/mc/acc"] <= 1
    assert json.loads(result.info["datasets"])[1]["n_docs"] == 2  # limit: the first 2 documents


def test_eval_job_refuses_random_weights_and_bad_tasks(cache, tmp_path, monkeypatch):
    _write_tasks(tmp_path)
    tasks = (EvalTask("mc", str(tmp_path / "mc.jsonl")),)
    cfg = EvalJobConfig("debug", "dense", tasks=tasks, overrides=OVERRIDES, data=DATA)
    with pytest.raises(ValueError, match="final weights are missing"):
        evaluate.run(cfg, JobContext(cache_dir=cache, checkpoint_dir=str(tmp_path)))
    (tmp_path / "step-00000004").mkdir()  # a train job that checkpoints: its last step's folder
    assert evaluate._weights(cfg, JobContext(checkpoint_dir=str(tmp_path))) == str(tmp_path)
    checkpoint.save_weights(tmp_path, torch.nn.Linear(1, 1))  # the final weights come first
    assert evaluate._weights(cfg, JobContext(checkpoint_dir=str(tmp_path))).endswith("final-model.pt")
    assert (
        evaluate._weights(replace(cfg, checkpoint="w.pt"), JobContext(checkpoint_dir=str(tmp_path))) == "w.pt"
    )
    with pytest.raises(ValueError, match="EvalTask.path must end in"):
        EvalTask("x", "tasks.csv")
    with pytest.raises(ValueError, match="EvalTask.name"):
        EvalTask("a/b")
    with pytest.raises(ValueError, match="names repeat"):
        EvalJobConfig("debug", "dense", tasks=(EvalTask("a"), EvalTask("a")))
    assert evaluate.resolve(replace(cfg, l3_placement="offload"), cuda=False).l3_placement == "offload"
    with pytest.raises(ValueError, match=r"tasks\[1\].path: no such file"):
        evaluate.resolve(replace(cfg, tasks=(*tasks, EvalTask("b", str(tmp_path / "b.jsonl")))), cuda=False)
    monkeypatch.setattr(evaluate, "harness_tasks", lambda: frozenset({"hellaswag"}))
    evaluate.resolve(replace(cfg, tasks=(*tasks, EvalTask("hellaswag"))), cuda=False)
    with pytest.raises(ValueError, match=r"unknown lm-eval task\(s\) \['hellaswg'\]"):
        evaluate.resolve(replace(cfg, tasks=(EvalTask("hellaswg"),)), cuda=False)


@pytest.mark.slow
def test_the_papers_tasks_are_harness_tasks():
    assert {
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "winogrande",
        "wikitext",
    } <= evaluate.harness_tasks()


def test_local_tasks_set_the_hub_offline(tmp_path, monkeypatch):
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    evaluate._offline_env((EvalTask("a", "a.jsonl"),), tmp_path)
    assert os.environ["HF_DATASETS_OFFLINE"] == os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    evaluate._offline_env((EvalTask("a", "a.jsonl"), EvalTask("hellaswag")), tmp_path)
    assert "HF_DATASETS_OFFLINE" not in os.environ  # a harness task downloads its data on first use


def test_lm_eval_core_and_the_adapter_import_no_transformers():
    code = (
        "import sys, lm_eval.api.model, lm_eval.tasks, workloads.jobs.lm_eval_adapter, "
        "workloads.jobs.evaluate;"
        "print(sorted(m for m in ('transformers', 'accelerate', 'peft', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
