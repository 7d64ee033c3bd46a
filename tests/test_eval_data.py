"""Evaluation data and prompts: lm-eval exemplars, BIG-bench adapters, hub-schema fixtures, local layouts,
offline errors, subsampling and the per-task prompt formats. No model is loaded here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ds2_hf.evaluation import data as eval_data
from ds2_hf.evaluation import exemplars, prompts
from ds2_hf.evaluation.bigbench import BBH_TO_BIGBENCH, bbh_examples, bigbench_root, truthfulqa_examples

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
PACKAGE = Path(__file__).parents[1] / "ds2_hf"
TYDI_LANGUAGES = ("english", "arabic", "russian", "korean", "bengali", "telugu", "finnish", "indonesian", "swahili")


@pytest.fixture(scope="module", autouse=True)
def _bigbench_cached():
    """Extract every BIG-bench folder used here in one pass over the sdist (downloaded once per machine)."""
    bigbench_root(*BBH_TO_BIGBENCH, "truthful_qa")


# --------------------------------------------------------------------------------------------- exemplars


def test_exemplars_come_from_lm_eval_task_files():
    gsm = exemplars.gsm8k_template()
    assert len(gsm.samples) == 8
    assert all(s["target"].rstrip().endswith(".") and "The answer is" in s["target"] for s in gsm.samples)
    assert Path(gsm.source).is_relative_to(exemplars.lm_eval_tasks_dir())
    for task in exemplars.BBH_TASKS:
        template = exemplars.bbh_template(task)
        assert len(template.samples) == 3, task
        assert all("the answer is" in s["target"].lower() for s in template.samples), task
    primer = prompts.truthfulqa_prompt({"question": "Can pigs fly?"})[0]
    assert primer.count("Q: ") == 7 and primer.endswith("Q: Can pigs fly?\nA:")  # 6-shot primer + the question
    categories = exemplars.mmlu_categories()
    assert len(categories) == 57
    assert set(categories.values()) == {"stem", "humanities", "social_sciences", "other"}


def test_no_third_party_prompt_text_is_pasted_into_the_package():
    """The exemplars are read at run time; their text must not live in our source files."""
    needles = [exemplars.gsm8k_template().samples[0]["question"][:60]]
    needles += [exemplars.bbh_template(t).samples[0]["input"][:60] for t in ("date_understanding", "navigate")]
    needles.append(prompts.truthfulqa_prompt({"question": "x"})[0].split("\n")[0])
    for path in PACKAGE.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".json", ".yaml", ".txt", ".md", ".jinja"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            for needle in needles:
                assert needle not in text, f"{path} contains exemplar text {needle!r}"


def test_prompts_dir_overrides_lm_eval(tmp_path):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    (folder / "gsm8k-cot.yaml").write_text(
        'doc_to_text: "Problem: {{question}}\\nSolution:"\n'
        "fewshot_config:\n  samples:\n  - question: One plus one?\n    target: 1 + 1 = 2. The answer is 2.\n",
        encoding="utf-8",
    )
    prompt = prompts.gsm8k_prompt({"question": "Two plus two?"}, n_shots=1, prompts_dir=tmp_path)
    assert prompt == (
        "Problem: One plus one?\nSolution: 1 + 1 = 2. The answer is 2.\n\nProblem: Two plus two?\nSolution:"
    )
    with pytest.raises(ValueError, match="only 1 exemplars"):
        prompts.gsm8k_prompt({"question": "x"}, n_shots=2, prompts_dir=tmp_path)
    # Files the user did not copy still come from lm-eval.
    bbh = prompts.bbh_prompt({"input": "x"}, "navigate", 3, prompts_dir=tmp_path)
    assert bbh.endswith("Q: x\nA: Let's think step by step.\n")


# --------------------------------------------------------------------------------------------- BIG-bench


def test_bbh_from_bigbench_lettered_options_with_shuffled_answers():
    rows = bbh_examples("date_understanding")
    assert len(rows) > 300
    assert all("\nOptions:\n(A) " in r["input"] and r["target"][0] == "(" for r in rows)
    # BIG-bench lists the right date first; the adapter shuffles so "(A)" is not a free win.
    top_share = Counter(r["target"] for r in rows).most_common(1)[0][1] / len(rows)
    assert top_share < 0.3
    shots = [s["input"] for s in exemplars.bbh_template("date_understanding").samples]
    assert not any(r["input"].split("\nOptions:")[0] in shot for r in rows for shot in shots)
    assert bbh_examples("date_understanding") == rows  # seeded: the same on every call


def test_bbh_from_bigbench_maps_answers_onto_the_exemplars_vocabulary():
    causal = bbh_examples("causal_judgement")
    assert {r["target"] for r in causal} == {"Yes", "No"} and all("Options:\n- Yes\n- No" in r["input"] for r in causal)
    sports = bbh_examples("sports_understanding")  # BIG-bench says plausible/implausible, BBH yes/no
    assert {r["target"] for r in sports} == {"yes", "no"}
    navigate = bbh_examples("navigate")  # BIG-bench says True/False, BBH Yes/No
    assert {r["target"] for r in navigate} == {"Yes", "No"}
    counting = bbh_examples("object_counting")  # BIG-bench lists ["three", "3"]; BBH answers in digits
    assert all(r["target"].isdigit() for r in counting)
    for task in ("logical_deduction_three_objects", "tracking_shuffled_objects_five_objects"):
        assert all(r["target"] in {"(A)", "(B)", "(C)", "(D)", "(E)"} for r in bbh_examples(task))
    with pytest.raises(ValueError, match="generated by code"):
        bbh_examples("web_of_lies")
    assert len(BBH_TO_BIGBENCH) == 24


def test_truthfulqa_from_bigbench_in_hub_schema():
    rows = truthfulqa_examples()
    assert len(rows) == 299
    for row in rows:
        mc1, mc2 = row["mc1_targets"], row["mc2_targets"]
        assert mc1["labels"][0] == 1 and sum(mc1["labels"]) == 1 and len(mc1["labels"]) == len(mc1["choices"])
        assert 1 <= sum(mc2["labels"]) < len(mc2["labels"]) and mc1["choices"][0] in mc2["choices"]


# --------------------------------------------------------------------------------------------- local data


def test_fixtures_load_in_hub_schema():
    rows, shots = eval_data.load_mmlu(str(FIXTURES / "mmlu"), max_examples=None, seed=42, n_shots=1)
    assert len(rows) == 8 and set(shots) == {r["subject"] for r in rows}
    assert all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 for r in rows)
    gsm = eval_data.load_gsm8k(str(FIXTURES / "gsm8k"), max_examples=3, seed=42)
    assert len(gsm) == 3 and all("####" in r["answer"] for r in gsm)
    tydi, tydi_shots = eval_data.load_tydiqa(str(FIXTURES / "tydiqa"), max_per_language=None, seed=42, n_shots=1)
    languages = {r["language"] for r in tydi}
    assert languages == set(TYDI_LANGUAGES)
    assert set(tydi_shots) == languages and all(len(v) == 1 for v in tydi_shots.values())
    for row in tydi + [s for v in tydi_shots.values() for s in v]:
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start : start + len(text)] == text  # character offsets, as on the hub


def test_tydiqa_per_language_cap_and_language_filter():
    rows, _ = eval_data.load_tydiqa(
        str(FIXTURES / "tydiqa"), max_per_language=1, seed=0, n_shots=0, languages=["english", "korean"]
    )
    assert Counter(r["language"] for r in rows) == {"english": 1, "korean": 1}
    with pytest.raises(ValueError, match="No TydiQA questions in languages \\['thai'\\]"):
        eval_data.load_tydiqa(str(FIXTURES / "tydiqa"), max_per_language=1, seed=0, n_shots=0, languages=["thai"])


def test_bbh_release_layout_and_hub_snapshot_layout(tmp_path):
    # The BBH release: one JSON per task with an "examples" list.
    bbh = tmp_path / "bbh"
    bbh.mkdir()
    examples = [
        {"input": f"Is {i} even?\nOptions:\n- Yes\n- No", "target": "Yes" if i % 2 == 0 else "No"} for i in range(5)
    ]
    (bbh / "causal_judgement.json").write_text(json.dumps({"canary": "x", "examples": examples}), encoding="utf-8")
    out = eval_data.load_bbh(str(bbh), ["causal_judgement"], max_per_task=3, seed=42)
    assert len(out["causal_judgement"]) == 3 and all(r in examples for r in out["causal_judgement"])
    with pytest.raises(eval_data.EvalDataError, match="navigate"):
        eval_data.load_bbh(str(bbh), ["navigate"], max_per_task=3, seed=42)
    # A hub snapshot: <config>/<split>-00000-of-00001.parquet.
    import datasets

    snapshot = tmp_path / "gsm8k-snapshot" / "main"
    snapshot.mkdir(parents=True)
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    datasets.Dataset.from_list(rows).to_parquet(str(snapshot / "test-00000-of-00001.parquet"))
    assert eval_data.load_gsm8k(str(snapshot.parent), max_examples=None, seed=1) == rows


def test_offline_hub_id_fails_fast_naming_the_file_to_provide(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(eval_data.EvalDataError) as err:
        eval_data.load_mmlu("cais/mmlu", max_examples=None, seed=42, n_shots=0)
    message = str(err.value)
    assert "'cais/mmlu'" in message and "--mmlu-path" in message and "test.jsonl" in message
    assert "question (str), subject (str), choices" in message
    with pytest.raises(FileNotFoundError, match="'bigbench' for the offline BIG-bench source"):
        eval_data.load_truthfulqa("truthfulqa/truthful_qa", max_examples=2, seed=42)


def test_local_path_errors_say_what_is_missing(tmp_path):
    with pytest.raises(eval_data.EvalDataError, match="no such file or folder"):
        eval_data.load_gsm8k(str(tmp_path / "nope"), max_examples=1, seed=42)
    (tmp_path / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n', encoding="utf-8")
    with pytest.raises(eval_data.EvalDataError, match="no test file"):
        eval_data.load_gsm8k(str(tmp_path), max_examples=1, seed=42)
    (tmp_path / "test.jsonl").write_text('{"problem": "q", "solution": "1"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="lacks columns \\['question', 'answer'\\]"):
        eval_data.load_gsm8k(str(tmp_path), max_examples=1, seed=42)
    dev_only = tmp_path / "tydi"
    dev_only.mkdir()
    (dev_only / "validation.jsonl").write_text((FIXTURES / "tydiqa" / "validation.jsonl").read_text(encoding="utf-8"))
    with pytest.raises(eval_data.EvalDataError, match="train split for the shots.*tydiqa_shots=0"):
        eval_data.load_tydiqa(str(dev_only), max_per_language=1, seed=42, n_shots=1)


def test_subsample_is_seeded_sorted_and_bounded():
    a = eval_data.subsample(1000, 40, seed=42)
    assert a == eval_data.subsample(1000, 40, seed=42) and a == sorted(a) and len(set(a)) == 40
    assert a != eval_data.subsample(1000, 40, seed=43)
    assert eval_data.subsample(5, 40, seed=42) == [0, 1, 2, 3, 4]
    assert eval_data.subsample(5, None, seed=42) == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------------- prompts


def test_tydiqa_prompt_uses_the_question_language(tmp_path):
    rows, shots = eval_data.load_tydiqa(str(FIXTURES / "tydiqa"), max_per_language=1, seed=42, n_shots=1,
                                        languages=["arabic"])
    prompt = prompts.tydiqa_prompt(rows[0], shots["arabic"])
    templates = prompts.load_tydiqa_templates()
    arabic = templates["arabic"]
    assert prompt.startswith(arabic["instruction"])
    assert f"{arabic['answer']}: {shots['arabic'][0]['answers']['text'][0]}\n\n" in prompt  # the gold shot
    assert prompt.endswith(f"{arabic['question']}: {rows[0]['question']}\n{arabic['answer']}:")
    assert set(templates) >= set(TYDI_LANGUAGES)
    thai = prompts.tydiqa_prompt({**rows[0], "language": "thai"}, [], templates)
    assert thai.startswith(templates["english"]["instruction"])  # unknown language: English wording
    custom = tmp_path / "t.json"
    custom.write_text(json.dumps({"thai": {"instruction": "I", "passage": "P", "question": "Q", "answer": "A"}}))
    thai_custom = prompts.tydiqa_prompt({**rows[0], "language": "thai"}, [], prompts.load_tydiqa_templates(custom))
    assert thai_custom == f"I\n\nP: {rows[0]['context']}\nQ: {rows[0]['question']}\nA:"
    custom.write_text(json.dumps({"thai": {"instruction": "I"}}))
    with pytest.raises(ValueError, match="lacks \\['passage', 'question', 'answer'\\]"):
        prompts.load_tydiqa_templates(custom)


def test_mmlu_prompt_header_shots_and_letter_continuations():
    rows, shots = eval_data.load_mmlu(str(FIXTURES / "mmlu"), max_examples=None, seed=42, n_shots=1,
                                      subjects=["astronomy"])
    prompt, continuations = prompts.mmlu_prompt(rows[0], shots["astronomy"])
    assert continuations == [" A", " B", " C", " D"]
    assert prompt.startswith("The following are multiple choice questions (with answers) about astronomy.")
    shot = shots["astronomy"][0]
    assert f"\nAnswer: {'ABCD'[shot['answer']]}\n\n" in prompt and prompt.endswith("\nAnswer:")
    with pytest.raises(ValueError, match="exactly 4 choices"):
        prompts.mmlu_prompt({**rows[0], "choices": ["a", "b", "c", "d", "e"]})


def test_eval_config_validation():
    from ds2_hf.evaluation import EvalConfig

    assert EvalConfig(model="m", tasks=["gsm8k", " bbh "]).task_list == ["gsm8k", "bbh"]
    with pytest.raises(ValueError, match="choose from: mmlu, gsm8k"):
        EvalConfig(model="m", tasks="gsm8k,arc")
    with pytest.raises(ValueError, match="Unknown BBH tasks \\['causal_judgment'\\]"):
        EvalConfig(model="m", bbh_tasks="causal_judgment")  # BBH spells it causal_judgement
    with pytest.raises(ValueError, match="needs server_url"):
        EvalConfig(model="m", backend="server")
    with pytest.raises(ValueError, match="gsm8k_shots must be >= 0"):
        EvalConfig(model="m", gsm8k_shots=-1)


def test_truthfulqa_local_copy_in_hub_schema(tmp_path):
    rows = truthfulqa_examples()[:3]
    with open(tmp_path / "validation.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    assert eval_data.load_truthfulqa(str(tmp_path), max_examples=None, seed=42) == rows
    assert len(eval_data.load_truthfulqa(str(tmp_path / "validation.jsonl"), max_examples=2, seed=42)) == 2


def test_ds2_eval_yaml_config_and_flags_build_one_eval_config(tmp_path, monkeypatch):
    from ds2_hf import cli
    from ds2_hf.commands._common import config_from_args
    from ds2_hf.evaluation import EvalConfig

    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})
    config_file = tmp_path / "eval.yaml"
    config_file.write_text("model: ./my-model\ntasks: gsm8k,bbh\nbbh_shots: 1\nbatch_size: 2\n", encoding="utf-8")
    parser, subparsers = cli.build_parser()
    cli._apply_yaml(subparsers["eval"], str(config_file))
    args = parser.parse_args(["eval", "--config", str(config_file), "--batch-size", "16", "--bbh-path", "bigbench"])
    config = config_from_args(EvalConfig, args)
    assert (config.model, config.tasks, config.bbh_shots) == ("./my-model", "gsm8k,bbh", 1)  # from YAML
    assert (config.batch_size, config.bbh_path) == (16, "bigbench")  # flags win
    assert config.gsm8k_max_examples == 200 and config.seed == 42  # paper defaults
