"""Benchmark adapters: each published format parses into the expected QA items, malformed files fail naming the
file and line, and the hub is only reached (here: a fake `datasets` module) for the exact hub ids."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repair.tasks import QA
from repair.tasks.adapters import (corrupt_answers, load_jsonl_qa, load_mmlu, load_text, load_tofu, load_wmdp)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """A fake `datasets` module: records hub calls and returns canned rows, so no test can reach the network."""
    calls: list[tuple] = []
    rows = {"cais/wmdp": [{"question": "q?", "choices": ["a", "b"], "answer": 1}],
            "cais/mmlu": [{"question": "q?", "subject": "astronomy", "choices": ["a", "b"], "answer": 0},
                          {"question": "r?", "subject": "virology", "choices": ["a", "b"], "answer": 1}],
            "locuslab/TOFU": [{"question": "q?", "answer": "a."}],
            "roneneldan/TinyStories": [{"text": " One. "}, {"text": "Two."}]}

    def load_dataset(hub_id, *args, split):
        calls.append((hub_id, *args, split))
        return rows[hub_id]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------------------ parsing


def test_wmdp_folder_layout_parses_published_parquet():
    items = load_wmdp(str(FIXTURES / "wmdp"))
    assert len(items) == 3
    assert items[0] == QA(question="Which organelle is known as the powerhouse of the cell?", answer="Mitochondrion",
                          attribute="wmdp-bio", choices=("Nucleus", "Ribosome", "Mitochondrion", "Golgi apparatus"),
                          label=2)
    assert [q.label for q in items] == [2, 0, 3]
    file = FIXTURES / "wmdp" / "wmdp-bio" / "test-00000-of-00001.parquet"
    assert load_wmdp(str(file), subset="wmdp-bio") == items
    with pytest.raises(ValueError, match="wmdp-chem/test-"):
        load_wmdp(str(FIXTURES / "wmdp"), subset="wmdp-chem")


def test_mmlu_original_csv_layout():
    items = load_mmlu(str(FIXTURES / "mmlu"))
    assert len(items) == 6 and [q.subject for q in items] == ["astronomy"] * 3 + ["high_school_geography"] * 3
    assert items[1] == QA(question="Which planet, apart from Earth, has liquid water oceans on its surface today?",
                          answer="None of them, as far as we know", subject="astronomy",
                          choices=("Mars", "Venus", "None of them, as far as we know", "Europa"), label=2)
    assert items[5].question.startswith("A map's scale of 1:100,000") and items[5].answer == "1 km on the ground"
    geo = load_mmlu(str(FIXTURES / "mmlu"), subjects=["high_school_geography"])
    assert geo == items[3:]
    with pytest.raises(ValueError, match=r"no MMLU subject\(s\) \['astronmy'\]"):
        load_mmlu(str(FIXTURES / "mmlu"), subjects=["astronmy"])


def test_mmlu_flat_file_with_hub_fields(tmp_path):
    rows = [{"question": "q?", "subject": "virology", "choices": ["a", "b", "c", "d"], "answer": 3}]
    path = write(tmp_path / "mmlu.jsonl", "\n".join(json.dumps(r) for r in rows))
    assert load_mmlu(path) == [QA(question="q?", answer="d", subject="virology", choices=("a", "b", "c", "d"),
                                  label=3)]


def test_tofu_json_lines_with_paraphrase():
    items = load_tofu(str(FIXTURES / "tofu"), split="forget01")
    assert len(items) == 3 and [len(q.paraphrases) for q in items] == [0, 1, 0]
    assert items[1] == QA(question="What genre does Mirela Vostani usually write in?",
                          answer="Mirela Vostani mostly writes literary mysteries set in port cities.",
                          paraphrases=("In which genre are most of Mirela Vostani's books?",))
    assert load_tofu(str(FIXTURES / "tofu" / "forget01.json")) == items
    with pytest.raises(ValueError, match="retain90.json"):
        load_tofu(str(FIXTURES / "tofu"), split="retain90")


def test_tofu_json_array_also_accepted(tmp_path):
    path = write(tmp_path / "full.json", json.dumps([{"question": "q?", "answer": "a."}]))
    assert load_tofu(path) == [QA(question="q?", answer="a.")]


def test_text_paragraphs_jsonl_and_endoftext(tmp_path):
    stories = load_text(str(FIXTURES / "stories.txt"))
    assert len(stories) == 3
    assert stories[0] == ("Once upon a time, a little fox lived in a quiet village.\n"
                          "One day, the fox wanted to find a red ball.")
    assert load_text(str(FIXTURES / "stories.txt"), limit=2) == stories[:2]
    txt = write(tmp_path / "valid.txt", "Story one.\n\nStill one.\n<|endoftext|>\nStory two.\n<|endoftext|>\n")
    assert load_text(txt) == ["Story one.\n\nStill one.", "Story two."]
    jsonl = write(tmp_path / "t.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    assert load_text(jsonl) == ["a", "b"]


def test_generic_jsonl_mixes_free_text_and_choices():
    items = load_jsonl_qa(str(FIXTURES / "qa.jsonl"))
    assert items[0] == QA(question="Who wrote Hamlet?", answer="William Shakespeare", subject="literature",
                          paraphrases=("Hamlet was written by whom?", "Name the author of Hamlet."))
    assert [(q.label, q.answer) for q in items[1:4]] == [(1, "4"), (1, "Jupiter"), (1, "Mars")]
    assert items[2].subject == "astronomy" and items[2].choices == ("Mars", "Jupiter", "Venus")
    assert items[4] == QA(question="What is the boiling point of water at sea level?", answer="100 degrees Celsius",
                          attribute="boiling_point")


# ------------------------------------------------------------------------------------------------ corruption


def test_corrupt_answers_is_seeded_and_always_wrong():
    items = load_wmdp(str(FIXTURES / "wmdp")) + load_mmlu(str(FIXTURES / "mmlu"))
    bad = corrupt_answers(items, seed=0)
    assert bad == corrupt_answers(items, seed=0)
    assert corrupt_answers(items[2:], seed=0) == bad[2:]  # an item's corruption does not depend on its neighbours
    assert any(corrupt_answers(items, seed=s) != bad for s in range(1, 4))
    for seed in range(5):
        for orig, q in zip(items, corrupt_answers(items, seed=seed), strict=True):
            assert q.label != orig.label and q.answer == q.choices[q.label] != orig.answer
            assert dict(vars(q), label=0, answer="") == dict(vars(orig), label=0, answer="")
    with pytest.raises(ValueError, match="item 1 .* not multiple choice"):
        corrupt_answers([items[0], QA(question="free?", answer="text")], seed=0)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("lines, message", [
    (['{"question": "a", "answer": "b"}', "", '{"answer": "b"}'], "line 3: missing field 'question'"),
    (['{"question": "a", "answer": "b"}', '{"question": "a", "choices": ["w", "x", "y", "z"], "answer": 7}'],
     "line 2: answer index 7 out of range for 4 choices"),
    (['{"question": "a", "answer": "b"}', '{"question": "a", "answer": "b",}'], "line 2: invalid JSON"),
    (['{"question": "a", "choices": ["w", "x"], "answer": "E"}'], "line 1: answer 'E' is neither one of"),
    (['{"question": "a", "answer": 2}'], "line 1: field 'answer' must be str"),
    (['["question", "answer"]'], "line 1: expected a JSON object"),
    (['{"question": "a", "answer": "b", "paraphrases": "c"}'], "line 1: field 'paraphrases' must be"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, lines, message):
    path = write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        load_jsonl_qa(path)
    assert path in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("rows, message", [
    ('"Multi-line\nquestion?",a,b,c,d,A\nq?,a,b,c,D\n', "line 3: expected 6 columns"),
    ("q?,a,b,c,d,A\nq?,a,b,c,d,E\n", "line 2: answer 'E' is not a letter A-D"),
])
def test_malformed_mmlu_csv_names_file_and_line(tmp_path, rows, message):
    path = write(tmp_path / "mmlu" / "test" / "virology_test.csv", rows)
    with pytest.raises(ValueError) as err:
        load_mmlu(str(tmp_path / "mmlu"))
    assert path in str(err.value) and message in str(err.value)


def test_malformed_parquet_names_file_and_row(tmp_path):
    path = tmp_path / "wmdp-bio" / "test-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"answer": [0, 4], "question": ["q1?", "q2?"],
                             "choices": [["a", "b", "c", "d"], ["a", "b", "c", "d"]]}), path)
    with pytest.raises(ValueError, match=rf"{path} row 2: answer index 4 out of range for 4 choices"):
        load_wmdp(str(tmp_path))


def test_malformed_tofu_and_text_name_file_and_line(tmp_path):
    tofu = write(tmp_path / "forget01.json", '{"question": "q?", "answer": "a"}\n{"question": "q2?"}\n')
    with pytest.raises(ValueError, match=rf"{tofu} line 2: missing field 'answer'"):
        load_tofu(str(tmp_path), split="forget01")
    text = write(tmp_path / "t.jsonl", '{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(ValueError, match=rf"{text} line 2: missing field 'text'"):
        load_text(text)
    array = write(tmp_path / "arr.json", '[\n{"question": "q?", "answer": "a"},\n{"question": }\n]')
    with pytest.raises(ValueError, match=rf"{array} line 3: invalid JSON"):
        load_tofu(array)


@pytest.mark.parametrize("loader, hub_id", [(load_wmdp, "cais/wmdp"), (load_mmlu, "cais/mmlu"),
                                            (load_tofu, "locuslab/TOFU"), (load_text, "roneneldan/TinyStories"),
                                            (load_jsonl_qa, None)])
def test_unknown_source_names_path_and_accepted_forms(tmp_path, no_hub, loader, hub_id):
    missing = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(ValueError, match="no such file") as err:
        loader(missing)
    assert missing in str(err.value)
    if hub_id:
        assert repr(hub_id) in str(err.value) and "accepted:" in str(err.value)
        with pytest.raises(ValueError, match="not the hub id"):
            loader(hub_id.upper())  # only the exact id reaches the hub
    assert no_hub == []


def test_hub_ids_are_opt_in_and_exact(no_hub):
    assert load_wmdp("cais/wmdp", subset="wmdp-cyber")[0].attribute == "wmdp-cyber"
    assert [q.subject for q in load_mmlu("cais/mmlu", subjects=["virology"])] == ["virology"]
    assert load_tofu("locuslab/TOFU", split="forget10") == [QA(question="q?", answer="a.")]
    assert load_text("roneneldan/TinyStories", limit=1) == ["One."]
    assert no_hub == [("cais/wmdp", "wmdp-cyber", "test"), ("cais/mmlu", "all", "test"),
                      ("locuslab/TOFU", "forget10", "train"), ("roneneldan/TinyStories", "validation[:1]")]
