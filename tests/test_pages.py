"""`pages.expand` lists only regular files (and links to them): a FIFO, a socket, a device or a dangling
link, in a folder or named on the command line, is reported as an `InputError` and never opened
(opening a FIFO for reading blocks until a writer comes, forever in a batch run)."""

import os
import socket
import threading

from PIL import Image

from docvlm.pages import expand


def expand_quickly(*args, seconds: float = 10.0, **kwargs):
    """`expand(...)`, failing the test if it blocks (the thread is then left waiting on the FIFO)."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=expand(*args, **kwargs)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "expand blocked on a special file"
    return result["value"]


def special_files(folder):
    """A FIFO, a socket, a dangling link and a link to a device, each named like an input."""
    os.mkfifo(folder / "fifo.png")
    os.mkfifo(folder / "fifo.pdf")
    os.mkfifo(folder / "fifo.tif")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "socket.png"))
    os.symlink(folder / "gone.png", folder / "dangling.png")
    os.symlink("/dev/zero", folder / "device.jpg")
    return sock


def test_special_files_in_a_folder_are_reported_and_skipped(tmp_path):
    Image.new("RGB", (8, 8), "white").save(tmp_path / "good.png")
    os.symlink(tmp_path / "good.png", tmp_path / "linked.png")
    sock = special_files(tmp_path)
    try:
        pages, errors, _ = expand_quickly([tmp_path])
    finally:
        sock.close()
    assert sorted(p.name for p in pages) == ["good", "linked"]
    problems = {e.input.name: e.error for e in errors}
    assert problems.keys() == {"fifo.png", "fifo.pdf", "fifo.tif", "socket.png", "dangling.png", "device.jpg"}
    assert problems["fifo.png"] == f"{tmp_path / 'fifo.png'}: a FIFO, not a regular file: skipped"
    assert "a socket, not a regular file" in problems["socket.png"]
    assert "a character device, not a regular file" in problems["device.jpg"]
    assert f"a link to a missing file ({tmp_path / 'gone.png'})" in problems["dangling.png"]


def test_special_files_named_on_the_command_line_are_reported(tmp_path):
    sock = special_files(tmp_path)
    try:
        names = ["fifo.png", "fifo.pdf", "fifo.tif", "socket.png", "dangling.png", "device.jpg"]
        pages, errors, _ = expand_quickly([tmp_path / n for n in names])
    finally:
        sock.close()
    assert pages == []
    assert [e.input.name for e in errors] == names
    assert errors[0].error == f"{tmp_path / 'fifo.png'}: a FIFO, not a regular file, nor a folder: skipped"
    assert "a link to a missing file" in errors[4].error
    assert "a character device" in errors[5].error
