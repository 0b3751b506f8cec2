"""Results on disk: append-only JSONL survives crashes; JSON files are replaced atomically."""

from __future__ import annotations

import json
import math
import os

import pytest

from sim2real.records import JsonlWriter, RecordsError, read_jsonl, write_json_atomic

RECORDS = [{"strategy": "finetune", "seed": i, "steps": 1000 * i, "success": i / 4, "note": "é"}
           for i in range(4)]


def _write(path, records=RECORDS):
    with JsonlWriter(path) as writer:
        for record in records:
            writer.write(record)


def test_roundtrip_and_each_record_visible_as_soon_as_written(tmp_path):
    path = tmp_path / "run" / "results.jsonl"
    writer = JsonlWriter(path)
    for i, record in enumerate(RECORDS):
        writer.write(record)
        assert read_jsonl(path) == RECORDS[: i + 1]
    writer.fsync()
    writer.close()
    writer.close()
    assert read_jsonl(path) == RECORDS


def test_context_manager_closes_and_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "results.jsonl"
    _write(path, RECORDS[:2])
    with JsonlWriter(path) as writer:
        writer.write(RECORDS[2])
    assert writer._file.closed
    assert read_jsonl(path) == RECORDS[:3]


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "results.jsonl"
    _write(path)
    with open(path, "ab") as file:
        file.write(b'{"strategy": "finetune", "se')
    assert read_jsonl(path) == RECORDS


def test_every_crash_like_truncation_reads_the_complete_prefix(tmp_path):
    path = tmp_path / "results.jsonl"
    _write(path)
    data = path.read_bytes()
    ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        complete = sum(end <= cut for end in ends)
        # A record whose closing brace made it but whose newline did not is still whole.
        whole_tail = cut in [end - 1 for end in ends]
        assert read_jsonl(path) == RECORDS[: complete + whole_tail], cut


def test_writer_reopened_after_a_crash_cuts_the_torn_tail(tmp_path):
    path = tmp_path / "results.jsonl"
    _write(path, RECORDS[:2])
    with open(path, "ab") as file:
        file.write(b'{"strategy": "fine')
    _write(path, RECORDS[2:])
    assert read_jsonl(path) == RECORDS


def test_writer_reopened_after_a_lost_newline_keeps_the_whole_record(tmp_path):
    path = tmp_path / "results.jsonl"
    _write(path, RECORDS[:2])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    _write(path, RECORDS[2:])
    assert read_jsonl(path) == RECORDS


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [json.dumps(r) for r in RECORDS]
    lines[1] = lines[1][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordsError, match=r"results\.jsonl, line 2"):
        read_jsonl(path)


def test_a_json_value_that_is_not_an_object_is_corrupt(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n{"a": 3}\n')
    with pytest.raises(RecordsError, match="line 2: not a JSON object"):
        read_jsonl(path)


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_non_finite_record_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "results.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(RECORDS[0])
        with pytest.raises(RecordsError, match=r"results\.jsonl: cannot write record"):
            writer.write({"return": math.nan})
    assert read_jsonl(path) == RECORDS[:1]


def test_write_json_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out" / "report.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2, "b": [1.5, "x"]})
    assert json.loads(path.read_text()) == {"a": 2, "b": [1.5, "x"]}
    assert os.listdir(path.parent) == ["report.json"]


def test_write_json_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(RecordsError, match=r"report\.json: cannot write as JSON"):
        write_json_atomic(path, {"a": math.inf})

    def crash(*_args):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["report.json"]
