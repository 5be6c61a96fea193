"""Hub datasets through the real `datasets` and huggingface_hub code, against a loopback Hub:
a download phase, a disk preflight, and one sentence for a config or split that does not exist."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest

from sftwizard.core import hub_download
from sftwizard.core.config import DataSource
from sftwizard.core.data import load_examples
from sftwizard.core.data_formats import DataError
from sftwizard.core.phases import PhaseReporter
from tests.fixtures.fake_hub import FakeHub, FakeRepo, point_hub_at


def _jsonl(n: int, lang: str = "en") -> bytes:
    rows = [{"messages": [{"role": "user", "content": f"{lang} question {i}?"},
                          {"role": "assistant", "content": f"{lang} answer {i}."}]} for i in range(n)]
    return "\n".join(json.dumps(r) for r in rows).encode()


MULTI_README = b"""---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/train.jsonl
- config_name: fr
  data_files:
  - split: train
    path: fr/train.jsonl
---
"""


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub(datasets={
        "org/chat": FakeRepo({"README.md": b"# chat\n", "data/train.jsonl": _jsonl(400),
                              "data/test.jsonl": _jsonl(20)}),
        "org/multi": FakeRepo({"README.md": MULTI_README, "en/train.jsonl": _jsonl(10),
                               "fr/train.jsonl": _jsonl(10, "fr")}),
    }).start()
    point_hub_at(server, monkeypatch, tmp_path / "hf")
    yield server
    server.stop()


def test_a_hub_dataset_downloads_as_a_phase_with_the_hubs_sizes(hub, monkeypatch):
    hub.chunk_delay_s = 0.01
    monkeypatch.setattr(hub_download, "POLL_S", 0.01)
    events: list[dict] = []
    reporter = PhaseReporter(lambda kind, step=None, **f: events.append(f), interval=0.0)
    with reporter.active():
        examples, report = load_examples(DataSource(path="org/chat"))
    assert len(examples) == 400 and examples[0]["messages"][1]["content"] == "en answer 0."
    total = len(_jsonl(400)) + len(_jsonl(20))  # both splits' files: what datasets downloads
    assert events[0]["state"] == "begin" and events[0]["what"] == "org/chat" and events[0]["total"] == total
    done = [e["done"] for e in events]
    assert done == sorted(done) and events[-1]["state"] == "end" and done[-1] == total


def test_a_split_or_config_that_does_not_exist_is_one_sentence_listing_those_that_do(hub):
    with pytest.raises(DataError) as err:
        load_examples(DataSource(path="org/chat", split="validation"))
    assert str(err.value) == "org/chat: no split 'validation'; it has 'train', 'test' (set data.sources[].split)"
    with pytest.raises(DataError) as err:
        load_examples(DataSource(path="org/multi"))
    assert str(err.value) == ("org/multi: this dataset needs a config name; set data.sources[].name to one of "
                              "'en', 'fr'")
    with pytest.raises(DataError) as err:
        load_examples(DataSource(path="org/multi", name="de"))
    assert str(err.value) == "org/multi: no config 'de'; it has 'en', 'fr' (set data.sources[].name)"
    examples, _ = load_examples(DataSource(path="org/multi", name="fr"))
    assert examples[0]["messages"][0]["content"] == "fr question 0?"


def test_a_dataset_too_big_for_the_disk_is_refused_before_its_download(hub, monkeypatch, tmp_path):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(DataError) as err:
        load_examples(DataSource(path="org/chat"))
    need = 2 * (len(_jsonl(400)) + len(_jsonl(20)))  # the files, then their Arrow copy
    assert str(err.value) == (
        f"not enough disk space to download org/chat: it needs {hub_download.format_bytes(need)} and the disk of "
        f"the Hugging Face cache ({tmp_path / 'hf' / 'hub'}) has 5 KB free; free some space or point HF_HOME at a "
        "bigger disk")
    assert not [m for m, p, _ in hub.log if m == "GET" and p.endswith(".jsonl")]


def test_run_refuses_a_missing_split_before_starting_a_process(hub, tmp_path, capsys):
    from sftwizard.cli.main import main

    preset = tmp_path / "hubdata.yaml"
    preset.write_text("model:\n  id: builtin:tiny-chat\ndata:\n  sources:\n    - path: org/chat\n      split: dev\n"
                      "training:\n  max_steps: 1\nrun:\n  name: hubdata\n", encoding="utf-8")
    assert main(["run", str(preset)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("sft-wizard: error: org/chat: no split 'dev'; it has 'train', 'test' "
                   "(set data.sources[].split)")
    assert not [m for m, p, _ in hub.log if m == "GET" and p.endswith(".jsonl")]
