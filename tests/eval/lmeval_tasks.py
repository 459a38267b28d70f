"""Three tiny lm-eval tasks written by the tests (task YAML + local jsonl): one multiple_choice, one
loglikelihood_rolling, one generate_until. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

MC = [
    {"question": "The king is", "choices": [" dead.", " alive.", " a fool."], "answer": 0},
    {"question": "The queen walks in the ", "choices": ["garden", "kitchen", "tower"], "answer": 0},
    {"question": "Now is the winter of our", "choices": [" discontent", " summer", " garden"], "answer": 0},
    {"question": "the fool", "choices": [" sings.", " walks.", " is dead."], "answer": 0},
    {"question": "made glorious summer by this sun of", "choices": [" York.", " king.", " queen."], "answer": 0},
    {"question": "Long live the", "choices": [" king!", " queen!", " fool!"], "answer": 0},
]
ROLLING = [
    {"text": "The king is dead. Long live the king!"},
    {"text": "Now is the winter of our discontent made glorious summer by this sun of York. " * 3},
    {"text": "A short line."},
]
GEN = [
    {"prompt": "The king is", "target": " dead"},
    {"prompt": "The queen walks in the", "target": " garden"},
    {"prompt": "Long live the", "target": " king"},
    {"prompt": "Now is the winter of our", "target": " discontent made glorious summer by this sun of York"},
]


def write_tasks(root: Path) -> Path:
    """Write the three tasks under root/tasks; returns that folder (for --include-path)."""
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for name, rows in (("mc", MC), ("rolling", ROLLING), ("gen", GEN)):
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def head(name: str) -> str:
        return (f"task: lmf_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {tasks / (name + '.jsonl')}\ntest_split: test\n")

    (tasks / "mc.yaml").write_text(head("mc") + "output_type: multiple_choice\ndoc_to_text: \"{{question}}\"\n"
                                   "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\n"
                                   "target_delimiter: \"\"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (tasks / "rolling.yaml").write_text(head("rolling") + "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\n"
                                        "doc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: word_perplexity\n"
                                        "  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
    (tasks / "gen.yaml").write_text(head("gen") + "output_type: generate_until\ndoc_to_text: \"{{prompt}}\"\n"
                                    "doc_to_target: \"{{target}}\"\ntarget_delimiter: \"\"\n"
                                    "generation_kwargs:\n  until: [\".\", \",\", \"!\"]\n  max_gen_toks: 8\n"
                                    "  do_sample: false\nmetric_list:\n  - metric: exact_match\n")
    return tasks
