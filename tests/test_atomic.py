"""The one atomic writer: the target is the old file or the whole new one, temporaries never stay, and
durable writes fsync the file before the rename and the folder after it."""

import os
import threading

import pytest

from fastcycle.atomic import write_atomic, write_folder_atomic


def _fails_halfway(tmp):
    tmp.write_bytes(b"half")
    raise OSError("disk full")


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"old"))
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, _fails_halfway)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_the_new_file_appears_whole(tmp_path):
    path = tmp_path / "sub" / "a.bin"  # parents are created
    write_atomic(path, lambda tmp: tmp.write_bytes(b"old"))

    def write(tmp):
        with open(tmp, "wb") as f:
            for _ in range(4):
                f.write(b"new ")
                f.flush()
                assert path.read_bytes() == b"old"  # readers see the old file while the new one grows

    write_atomic(path, write)
    assert path.read_bytes() == b"new " * 4
    assert [p.name for p in path.parent.iterdir()] == ["a.bin"]


def test_the_temporary_file_ends_in_the_suffix_a_library_needs(tmp_path):
    names = []
    write_atomic(
        tmp_path / "g.pt2", lambda tmp: names.append(tmp.name) or tmp.write_bytes(b"x"), suffix=".pt2"
    )
    assert names[0].startswith(".g.pt2.") and names[0].endswith(".tmp.pt2")
    assert [p.name for p in tmp_path.iterdir()] == ["g.pt2"]


def test_threads_write_to_one_folder_at_once(tmp_path):
    barrier = threading.Barrier(8)

    def writer(i):
        barrier.wait()  # all threads in write_atomic together, as translate's encode threads are
        for n in range(10):
            text = f"{i}:{n}"
            write_atomic(tmp_path / f"{i}.txt", lambda tmp, text=text: tmp.write_text(text), durable=False)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.txt" for i in range(8))
    assert all((tmp_path / f"{i}.txt").read_text() == f"{i}:9" for i in range(8))


def _record_fsyncs(monkeypatch, events):
    real = os.fsync

    def fsync(fd):
        events.append(("fsync", "folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_durable_write_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    events = []
    _record_fsyncs(monkeypatch, events)
    path = tmp_path / "a.bin"
    write_atomic(path, lambda tmp: tmp.write_bytes(b"x"), before_rename=lambda: events.append(path.exists()))
    # the file's bytes on disk before the hook and the rename; the rename made durable after it
    assert events == [("fsync", "file"), False, ("fsync", "folder")]


def test_images_are_written_without_fsync(tmp_path, monkeypatch):
    events = []
    _record_fsyncs(monkeypatch, events)
    write_atomic(tmp_path / "a.png", lambda tmp: tmp.write_bytes(b"x"), durable=False)
    write_folder_atomic(tmp_path / "tiles", lambda tmp: (tmp / "t.png").write_bytes(b"x"))
    assert events == []


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    root = tmp_path / "demo"
    write_folder_atomic(root, lambda tmp: (tmp / "old.txt").write_text("old"))

    def fails_halfway(tmp):
        (tmp / "new.txt").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomic(root, fails_halfway)
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary folder left
    assert [p.name for p in root.iterdir()] == ["old.txt"]
    write_folder_atomic(root, lambda tmp: (tmp / "new.txt").write_text("new"))
    assert [p.name for p in root.iterdir()] == ["new.txt"]


def test_a_durable_folder_fsyncs_its_files_and_folders_then_the_parent(tmp_path, monkeypatch):
    events, real = [], os.fsync

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append("parent" if target == str(tmp_path) else os.path.basename(target).split(".")[0])
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def fill(tmp):
        (tmp / "AtoB" / "1").mkdir(parents=True)
        (tmp / "AtoB" / "1" / "model.onnx").write_bytes(b"graph")
        (tmp / "AtoB" / "config.pbtxt").write_text('name: "AtoB"')

    write_folder_atomic(tmp_path / "repo", fill, durable=True)
    # every file before its folder, the whole tree before the rename, the rename itself last
    assert events == ["model", "1", "config", "AtoB", "", "parent"]  # "": the temporary ".repo.*.tmp"


def test_a_folder_whose_replacement_cannot_be_renamed_in_stays(tmp_path, monkeypatch):
    root = write_folder_atomic(tmp_path / "demo", lambda tmp: (tmp / "old.txt").write_text("old"))
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp"):  # the new folder's rename, after the old one was moved aside
            raise OSError("rename failed")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_folder_atomic(root, lambda tmp: (tmp / "new.txt").write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["demo"] and (root / "old.txt").read_text() == "old"
