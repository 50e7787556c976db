"""The sidecar's reading of metrics.jsonl (llm/sidecar/history.py): only complete lines, only new ones."""

from __future__ import annotations

from pathlib import Path

from llm.sidecar.history import MetricsFile
from llm.telemetry.schema import parse_event
from tests.test_sidecar import line, train


def seqs(lines: list[tuple[int, bytes]]) -> list[int]:
    return [parse_event(text).seq for _, text in lines]


def test_a_line_still_being_written_is_read_once_it_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first, second = line(train("r", 0)), line(train("r", 1))
    path.write_text(first + "\n" + second[:50])
    reader = MetricsFile(path)
    assert seqs(reader.read_new()) == [0]
    assert reader.read_new() == []  # unchanged file: not even opened
    with path.open("a") as handle:
        handle.write(second[50:] + "\n")
    assert seqs(reader.read_new()) == [1]
    path.write_text(first + "\n")  # replaced by a shorter file: read again from the start
    assert seqs(reader.read_new()) == [0]


def test_lines_already_held_are_skipped_without_parsing_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(line(train("r", s)) + "\n" for s in range(2_000)))
    reader = MetricsFile(path)
    reader.skip_held(1_989, tail_bytes=16 * 1024)  # the trainer socket brought up to 1,989
    assert reader.offset > 0
    assert seqs(reader.read_new()) == list(range(1_990, 2_000))
    far = MetricsFile(path)
    far.skip_held(5, tail_bytes=16 * 1024)  # seq 5 is not in the tail: read it all
    assert far.offset == 0 and len(far.read_new()) == 2_000
