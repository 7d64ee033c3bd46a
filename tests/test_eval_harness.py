"""The evaluation harness end to end with the REAL SmolLM2-135M-Instruct.

Data: the hub-schema fixtures for MMLU, GSM8K and TydiQA (tests/fixtures/eval), BBH source tasks and
TruthfulQA from the BIG-bench sdist, exemplars from lm-eval. Generation: transformers, and a real
llama.cpp server on 127.0.0.1 for the server backend. A 135M model scores near chance; these tests
check the machinery (every field, every score a percentage, settings recorded, scoring paths agree),
not its accuracy. Subsampling and shot counts are small (prompt tokens dominate CPU time) to keep the file within its CI
time budget; the full-protocol prompts are the same code with larger numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ds2_hf.evaluation import TASKS, EvalConfig, evaluate_model, format_table
from ds2_hf.evaluation.backends import ServerBackend, TransformersBackend, truncate_at_stop

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
BBH_TASKS = "sports_understanding,date_understanding"  # the shortest prompts; yes/no and lettered answers
LANGUAGES = "english,arabic,russian,korean"


@pytest.fixture(scope="module")
def backend(smollm2_dir):
    return TransformersBackend.from_pretrained(smollm2_dir, dtype="float32", batch_size=4)


def small_config(model: str, **overrides) -> EvalConfig:
    options = dict(
        model=model,
        mmlu_path=str(FIXTURES / "mmlu"),
        gsm8k_path=str(FIXTURES / "gsm8k"),
        tydiqa_path=str(FIXTURES / "tydiqa"),
        bbh_path="bigbench",
        truthfulqa_path="bigbench",
        gsm8k_max_examples=2,
        bbh_tasks=BBH_TASKS,
        bbh_max_per_task=2,
        tydiqa_max_per_language=1,
        tydiqa_languages=LANGUAGES,
        truthfulqa_max_examples=2,
        gsm8k_shots=2,
        bbh_shots=1,
        max_new_tokens=24,
        batch_size=4,
    )
    options.update(overrides)
    return EvalConfig(**options)


def test_scoring_paths_agree(backend):
    prompt = "Question: Which planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Earth\nD. Mars\nAnswer:"
    letters = [" A", " B", " C", " D"]
    # One forward pass over next-token scores == full continuation log-likelihoods for 1-token choices.
    fast = backend.choice_logprobs([prompt, "Short prompt:"], letters)
    full = backend.loglikelihood([(p, c) for p in (prompt, "Short prompt:") for c in letters])
    assert fast[0] + fast[1] == pytest.approx(full, abs=1e-3)
    # Shared-context KV reuse == scoring each whole sequence (multi-token answers of one question).
    requests = [(prompt, " Mercury is closest."), (prompt, " Venus."), (prompt, " It is Mars, the red planet.")]
    backend.share_prefix = False
    whole = backend.loglikelihood(requests)
    backend.share_prefix = True
    shared = backend.loglikelihood(requests)
    assert shared == pytest.approx(whole, abs=1e-3)
    assert all(v < 0 for v in whole)


def test_batched_greedy_generation_stops_and_is_deterministic(backend):
    prompts_ = ["Q: What is 2 + 2?\nA:", "Count: one, two, three,", "Q: Name a colour.\nA:"]
    first = backend.generate(prompts_, max_new_tokens=12, stop=["\n", "Q:"])
    again = backend.generate(list(reversed(prompts_)), max_new_tokens=12, stop=["\n", "Q:"])
    assert first == list(reversed(again))  # batch order and padding do not change greedy outputs
    assert all("\n" not in text and "Q:" not in text for text in first)
    assert any(text.strip() for text in first)
    assert truncate_at_stop("7\n\nQ: next", ["Q:", "\n\n"]) == "7"


def test_ds2_eval_cli_end_to_end(smollm2_dir, tmp_path, monkeypatch, capsys):
    """`ds2 eval` on every task: the printed table, the JSON with every field, per-example outputs."""
    from ds2_hf import cli

    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})  # only the command under test
    output = tmp_path / "results.json"
    argv = [
        "eval", "--model", str(smollm2_dir), "--tasks", ",".join(TASKS), "--output", str(output),
        "--mmlu-path", str(FIXTURES / "mmlu"), "--mmlu_shots", "1",
        "--gsm8k-path", str(FIXTURES / "gsm8k"), "--gsm8k-max-examples", "2", "--gsm8k-shots", "2",
        "--tydiqa-path", str(FIXTURES / "tydiqa"), "--tydiqa-languages", LANGUAGES, "--tydiqa-max-per-language", "1",
        "--bbh-path", "bigbench", "--bbh-tasks", BBH_TASKS, "--bbh-max-per-task", "2", "--bbh-shots", "1",
        "--truthfulqa-path", "bigbench", "--truthfulqa-max-examples", "2",
        "--max-new-tokens", "24", "--batch-size", "4", "--threads", "1", "--dtype", "float32", "--subtasks",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    for name in (*TASKS, "average", "sports_understanding", "korean", "astronomy"):
        assert name in printed

    result = json.loads(output.read_text(encoding="utf-8"))
    expected_n = {"mmlu": 8, "gsm8k": 2, "bbh": 4, "tydiqa": 4, "truthfulqa": 2}
    assert list(result["tasks"]) == list(TASKS)
    for name, task in result["tasks"].items():
        assert {"score", "metric", "metrics", "n", "settings", "example_prompt", "wall_time_s"} <= set(task), name
        assert task["n"] == expected_n[name]
        assert 0.0 <= task["score"] <= 100.0 and task["score"] == task["metrics"][task["metric"]]
        for value in task["metrics"].values():
            assert 0.0 <= value <= 100.0
        assert task["example_prompt"]
    subtasks = {n: t.get("subtasks", {}) for n, t in result["tasks"].items()}
    assert set(subtasks["bbh"]) == set(BBH_TASKS.split(","))
    assert set(subtasks["tydiqa"]) == set(LANGUAGES.split(","))
    assert set(subtasks["mmlu"]) == {"astronomy", "computer_security", "high_school_mathematics", "world_religions"}
    for name in ("bbh", "mmlu"):
        assert all(0.0 <= v <= 100.0 for v in subtasks[name].values())
    assert all(0.0 <= v["f1"] <= 100.0 for v in subtasks["tydiqa"].values())
    assert set(result["tasks"]["mmlu"]["categories"]) <= {"stem", "humanities", "social_sciences", "other"}
    assert result["average"] == pytest.approx(sum(t["score"] for t in result["tasks"].values()) / 5)
    assert result["complete"] is True and result["average_over"] == list(TASKS)

    # Settings: shots, subsampling, decoding and data sources are recorded.
    settings = {n: t["settings"] for n, t in result["tasks"].items()}
    assert settings["mmlu"]["shots"] == 1 and "Answer: " in result["tasks"]["mmlu"]["example_prompt"]
    assert settings["gsm8k"] == {
        "shots": 2, "max_examples": 2, "source": str(FIXTURES / "gsm8k"),
        "decoding": "greedy", "max_new_tokens": 24, "stop": ["\n"],
    }  # fmt: skip
    assert settings["bbh"]["shots"] == 1 and settings["bbh"]["source"] == "bigbench"
    assert result["tasks"]["gsm8k"]["example_prompt"].count("The answer is") == 2  # 2 lm-eval exemplars
    assert settings["tydiqa"]["languages"] == sorted(LANGUAGES.split(","))
    assert settings["truthfulqa"]["shots"] == 6
    assert result["config"]["seed"] == 42 and result["config"]["model"] == str(smollm2_dir)
    assert result["model"] == str(smollm2_dir) and result["backend"]["backend"] == "transformers"
    assert {"transformers", "torch", "datasets"} <= set(result["versions"])
    assert result["wall_time_s"] > 0

    lines = Path(result["predictions_file"]).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == sum(expected_n.values())
    gsm = [r for r in records if r["task"] == "gsm8k"]
    assert all(isinstance(r["output"], str) and r["answer"] in {"16", "72", "2000", "120", "32"} for r in gsm)
    tqa = [r for r in records if r["task"] == "truthfulqa"]
    assert all(len(r["scores"]["mc2"]) == len(r["labels"]["mc2"]) and r["labels"]["mc1"][0] == 1 for r in tqa)
    assert format_table(result).splitlines()[-1].startswith("average")


def test_ds2_eval_offline_without_data_exits_2_naming_the_file(monkeypatch, capsys, smollm2_dir):
    import datasets
    import huggingface_hub

    from ds2_hf import cli

    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = cli.main(["eval", "--model", str(smollm2_dir), "--tasks", "gsm8k", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "openai/gsm8k" in err and "--gsm8k-path" in err and "test.jsonl" in err


def test_server_backend_against_a_real_llama_cpp_server(smollm2_gguf, backend, tmp_path):
    """Generation tasks through llama.cpp's OpenAI-compatible /v1/completions; MC tasks scored by transformers."""
    from ds2_hf.rating.llama_server import LlamaCppServer

    with LlamaCppServer(smollm2_gguf, alias="smollm2-135m", n_ctx=2048, n_threads=1) as server:
        config = small_config(
            "smollm2-135m", backend="server", server_url=server.base_url, tasks="gsm8k,tydiqa,truthfulqa",
            output=str(tmp_path / "server.json"), tydiqa_languages="english,russian", max_concurrency=2,
        )  # fmt: skip
        server_backend = ServerBackend(server.base_url, "smollm2-135m", scorer=backend, max_concurrency=2)
        result = evaluate_model(config, backend=server_backend)
        assert result["backend"]["backend"] == "server" and result["backend"]["api"] == "completions"
        assert result["backend"]["scorer"]["backend"] == "transformers"
        for task in result["tasks"].values():
            assert 0.0 <= task["score"] <= 100.0
        records = [json.loads(x) for x in Path(result["predictions_file"]).read_text(encoding="utf-8").splitlines()]
        outputs = [r["output"] for r in records if r["task"] in ("gsm8k", "tydiqa")]
        assert len(outputs) == 4 and any(o.strip() for o in outputs) and all("\n" not in o for o in outputs)

        chat = ServerBackend(server.base_url, "smollm2-135m", api="chat")  # through InferenceClient
        (reply,) = chat.generate(["Name one planet."], max_new_tokens=8, stop=[])
        assert isinstance(reply, str) and reply.strip()
        with pytest.raises(ValueError, match="need log-likelihoods"):
            chat.loglikelihood([("Q:", " A")])


def test_average_is_nan_free_for_a_subset(backend):
    result = evaluate_model(small_config("smollm2", tasks="mmlu"), backend=backend)
    assert result["complete"] is False and result["average"] == result["tasks"]["mmlu"]["score"]
    assert not math.isnan(result["average"])
    assert "average (1 of 5 tasks)" in format_table(result)


def test_gguf_file_loads_as_the_same_model(smollm2_gguf, backend):
    """`--model path/to/model.gguf` dequantises the GGUF; it scores like the safetensors copy of it."""
    gguf = TransformersBackend.from_pretrained(smollm2_gguf, dtype="float32", batch_size=4)
    prompt = "Question: What is the capital of France?\nA. Rome\nB. Paris\nC. Oslo\nD. Bern\nAnswer:"
    letters = [" A", " B", " C", " D"]
    (from_gguf,) = gguf.choice_logprobs([prompt], letters)
    (from_folder,) = backend.choice_logprobs([prompt], letters)
    assert from_gguf == pytest.approx(from_folder, abs=1e-3)
    assert gguf.describe()["model"] == str(smollm2_gguf)
