"""The local chain's journal (:mod:`ledger.chain.store`) told apart a crash's torn tail from damage in the
middle of a segment: before, a bad record anywhere in the last segment was taken for a torn tail, called
"cut short by the crash", and every whole record after it was cut off the file at the next start."""

from __future__ import annotations

from ledger.chain.store import JournalWriter, Store, damage_at, read_segment


def _journal(tmp_path, count: int = 20):
    store = Store(tmp_path / "store")
    writer = JournalWriter(store)
    for n in range(1, count + 1):
        record = {"t": "b", "n": n, "h": f"0x{n:064x}", "p": f"0x{n - 1:064x}", "ts": n, "tx": ["0x" + "ab" * 300]}
        writer.append(record)
    writer.close()
    return store, store.segments()[-1][1]


def test_damage_in_the_middle_of_the_journal_is_reported_and_kept_not_cut_off_as_a_torn_tail(tmp_path):
    store, path = _journal(tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 10] = b"\xff" * 10  # bit rot inside record ~10 of 20
    path.write_bytes(bytes(data))
    view = store.view()
    assert not view.torn_tail and view.damaged_tail is not None, view
    name, offset = view.damaged_tail
    assert name == path.name and 0 < offset < middle
    assert damage_at(path) == offset
    writer = JournalWriter(store)  # what the supervisor opens after a restore: it cuts the bad tail ...
    writer.close()
    assert writer.kept_aside is not None and writer.kept_aside.read_bytes() == bytes(data)  # ... a copy first
    assert path.stat().st_size == offset
    assert store.segments()[-1][1] == path  # the copy is not taken for a segment


def test_a_torn_tail_is_still_cut_off_quietly_with_no_copy(tmp_path):
    store, path = _journal(tmp_path)
    whole = path.read_bytes()
    last_start = list(read_segment(path))[-2][1]
    path.write_bytes(whole[: last_start + 8 + 100])  # the last record cut after 100 bytes of its payload
    assert damage_at(path) is None
    view = store.view()
    assert view.torn_tail and view.damaged_tail is None and view.head == 19
    zeros = tmp_path / "zeros"
    zeros.mkdir()
    store2, path2 = _journal(zeros)
    path2.write_bytes(path2.read_bytes() + b"\0" * 4096)  # a crash that left a zero-filled page
    assert damage_at(path2) is None and store2.view().torn_tail
    writer = JournalWriter(store2)
    writer.close()
    assert writer.kept_aside is None and not list(zeros.glob("store/*.damaged-*"))


def test_blocks_lost_in_an_older_damaged_segment_end_the_replay_there_instead_of_skipping_them(tmp_path):
    """A segment that is not the last, damaged in its middle: the blocks it lost are missing between whole
    records of the segments after it. Replaying the later blocks on top of the gap would build another
    chain (or stop the restore with "replaying block N mined block M"), so the replay ends at the gap and
    the view names the blocks it leaves out."""
    store = Store(tmp_path / "store")
    writer = JournalWriter(store)
    for n in range(1, 21):
        writer.append(
            {"t": "b", "n": n, "h": f"0x{n:064x}", "p": f"0x{n - 1:064x}", "ts": n, "tx": ["0x" + "ab" * 300]}
        )
        if n == 10:
            writer.rotate()
    writer.close()
    first = store.segments()[0][1]
    data = bytearray(first.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 10] = b"\xff" * 10  # bit rot inside record ~5 of segment 1
    first.write_bytes(bytes(data))
    view = store.view()
    assert view.bad_segment == first.name and view.head == 20
    records = view.after(0)
    lost = records[-1]["n"] + 1
    assert [r["n"] for r in records] == list(range(1, lost)) and 2 <= lost <= 10
    assert view.gap == (lost, 20)
    assert [r["n"] for r in view.after(lost - 1)] == [] and view.gap == (lost, 20)  # from a snapshot at the gap
    assert len(view.after(10)) == 10 and view.gap is None  # from a snapshot after the damage: whole


def test_a_record_that_does_not_follow_the_block_before_ends_the_replay(tmp_path):
    store = Store(tmp_path / "store")
    writer = JournalWriter(store)
    for n in range(1, 9):
        parent = f"0x{n - 1:064x}" if n != 6 else "0x" + "ee" * 32  # block 6 names a parent block 5 is not
        writer.append({"t": "b", "n": n, "h": f"0x{n:064x}", "p": parent, "ts": n, "tx": []})
    writer.close()
    view = store.view()
    assert [r["n"] for r in view.after(0)] == [1, 2, 3, 4, 5] and view.gap == (6, 8)
