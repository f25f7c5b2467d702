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
