"""`docvlm fit`, through the console script, on a hostile corpus made at test time: every image mode
Pillow reads, a FIFO, a decompression bomb (a PNG header claiming 100000 x 100000 pixels), truncated
and corrupt files, a pickle and an EPS named .png, a folder, a dangling link and a device named .png,
and manifests with bad JSON, bytes that are not UTF-8, missing keys and paths with `..`.

Every run must end within its timeout, print no traceback, name each bad file with its manifest line,
exit 0 when the bad images are skipped (`data.on_bad_image: skip`) and 2 on a user error, and leave
every input byte for byte as it was."""

import hashlib
import json
import os
import pickle
import re
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
DOCVLM = Path(sys.executable).parent / "docvlm"


def text_image(text: str) -> Image.Image:
    image = Image.new("L", (224, 64), 255)
    ImageDraw.Draw(image).text((8, 20), text, fill=0, font_size=20)
    return image


def bomb_png() -> bytes:
    """A valid PNG header claiming 100000 x 100000 greyscale pixels (10^10), and no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def make_corpus(root: Path) -> tuple[list[str], list[str]]:
    """Images under `root/corpus` (and one outside it, reached with `..`): (good names, bad names)."""
    corpus = root / "corpus"
    corpus.mkdir()
    line = np.asarray(text_image("mode test"))
    good = {
        "grey16.png": Image.fromarray(line.astype(np.uint16) * 257),
        "float.tif": Image.fromarray(line.astype(np.float32) / 255),
        "int32.tif": Image.fromarray(line.astype(np.int32) * 257),
        "la.png": Image.merge("LA", [Image.fromarray(line), Image.fromarray(255 - line)]),
        "rgba.png": Image.fromarray(line).convert("RGBA"),
        "cmyk.tif": Image.fromarray(line).convert("CMYK"),
        "onebit.png": Image.fromarray(line).convert("1"),
        "palette.gif": Image.fromarray(line).convert("P"),
    }
    for name, image in good.items():
        image.save(corpus / name)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(line))).save(corpus / "turned.png", exif=exif)
    text_image("plain line").save(corpus / "plain.png")
    (root / "outside").mkdir()
    text_image("outside").save(root / "outside" / "elsewhere.png")

    whole = (corpus / "plain.png").read_bytes()
    os.mkfifo(corpus / "fifo.png")
    (corpus / "bomb.png").write_bytes(bomb_png())
    (corpus / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (corpus / "corrupt.png").write_bytes(whole[:16] + bytes(range(256)) * 4)
    (corpus / "pickle.png").write_bytes(pickle.dumps({"__reduce__": "os.system"}))
    (corpus / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (corpus / "empty.png").write_bytes(b"")
    (corpus / "folder.png").mkdir()
    os.symlink(corpus / "gone.png", corpus / "dangling.png")
    os.symlink("/dev/zero", corpus / "device.png")
    bad = ["fifo.png", "bomb.png", "truncated.png", "corrupt.png", "pickle.png", "eps.png", "empty.png",
           "folder.png", "dangling.png", "device.png", "../missing/nowhere.png"]
    return [*good, "turned.png", "plain.png", "../outside/elsewhere.png"], bad


UTF8_PREFIX = '{"image": "plain.png", "target": "'


def manifests(corpus: Path, good: list[str], bad: list[str]) -> dict[str, Path]:
    rows = [{"image": name, "target": "mode test"} for name in good]
    rows[1:1] = [{"image": name, "target": "broken"} for name in bad]  # the bad ones from line 2 on
    paths = {"train": corpus / "train.jsonl", "bad_json": corpus / "bad_json.jsonl",
             "bad_utf8": corpus / "bad_utf8.jsonl", "missing_key": corpus / "missing_key.jsonl"}
    paths["train"].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    first = json.dumps(rows[0]) + "\n"
    paths["bad_json"].write_text(first + '{"image": "plain.png", "target": "x",}\n', encoding="utf-8")  # trailing comma
    paths["bad_utf8"].write_bytes(first.encode() + UTF8_PREFIX.encode() + b'\xff\xfe"}\n')
    paths["missing_key"].write_text(first + '{"target": "no image"}\n', encoding="utf-8")
    return paths


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under `folder` (special files are listed, never opened)."""
    sums = {}
    for path in sorted(folder.rglob("*")):
        mode = os.lstat(path).st_mode
        name = str(path.relative_to(folder))
        if stat.S_ISREG(mode):
            sums[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            sums[name] = stat.filemode(mode) + (f" -> {os.readlink(path)}" if stat.S_ISLNK(mode) else "")
    return sums


def command(root: Path, manifest: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/demo.yaml"),
        f"--data.train.path={manifest}", "--data.train.synthetic=0", "--data.val=null", "--trainer.limit_val_batches=0",
        "--trainer.max_steps=2", "--data.batch_size=4", "--export.enabled=false",
        f"--trainer.default_root_dir={root / 'runs'}", *extra,
    ]


def fit(root: Path, manifest: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command(root, manifest, *extra), capture_output=True, text=True, timeout=timeout,
                              cwd=root)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"docvlm fit hung on {manifest.name}: {(e.stderr or b'')[-3000:]!r}")


def fit_all(root: Path, manifests: list[Path], timeout: int = 300) -> list[tuple[int, str]]:
    """(exit status, stderr) of one run per manifest, run side by side."""
    runs = [subprocess.Popen(command(root, m), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=root)
            for m in manifests]
    results = []
    for run, manifest in zip(runs, manifests):
        try:
            results.append((run.wait(timeout), run.stderr.read()))
        except subprocess.TimeoutExpired:
            for other in runs:
                other.kill()
            pytest.fail(f"docvlm fit hung on {manifest.name}")
    return results


@pytest.mark.slow
def test_fit_on_a_hostile_corpus(tmp_path):
    good, bad = make_corpus(tmp_path)
    corpus = tmp_path / "corpus"
    paths = manifests(corpus, good, bad)
    before = checksums(tmp_path)

    # skip: every bad image named with its manifest line and left out; the rest trains
    done = fit(tmp_path, paths["train"], "--data.on_bad_image=skip")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    for line, name in enumerate(bad, start=2):
        assert f"skipped: {paths['train']}:{line}: {corpus / name}: " in done.stderr, (name, done.stderr[-4000:])
    for name in good:
        assert str(corpus / name) not in done.stderr, name

    # error: one line, the first bad image with its line, how many more (all but truncated.png, whose
    # header is whole: it fails when decoded, and would stop the run at its batch), and what to do
    done = fit(tmp_path, paths["train"])
    assert done.returncode == 2, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"docvlm fit: error: {paths['train']}:2: {corpus / 'fifo.png'}: a FIFO, not a regular file "
        f"(and {len(bad) - 2} more unreadable images in data.train); fix or remove them, "
        "or set data.on_bad_image: skip to leave them out")

    trailing_comma = '{"image": "plain.png", "target": "x",}'
    expected = {
        "bad_json": f"{paths['bad_json']}:2: not valid JSON (Expecting property name enclosed in double quotes "
                    f"at column {trailing_comma.index('}') + 1})",
        "bad_utf8": f"{paths['bad_utf8']}:2: not UTF-8 (byte 0xff at column {len(UTF8_PREFIX) + 1}); "
                    "save the manifest as UTF-8",
        "missing_key": f"{paths['missing_key']}:2: row has no 'image' path",
    }
    for (status, stderr), (name, message) in zip(fit_all(tmp_path, [paths[n] for n in expected]), expected.items()):
        assert status == 2, (name, stderr[-4000:])
        assert "Traceback" not in stderr, name
        assert stderr.strip().splitlines()[-1] == f"docvlm fit: error: {message}"

    after = {name: value for name, value in checksums(tmp_path).items() if not name.startswith("runs")}
    assert after == before


@pytest.mark.slow
def test_fit_where_every_image_is_skipped_stops_saying_no_usable_sample_was_found(tmp_path):
    """Images whose headers are whole pass the check in `setup` and fail when decoded: with `on_bad_image: skip`
    every batch is empty, and the run must not end as if it had trained (it exported an untrained model)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text_image("plain line").save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    for i in range(5):
        (corpus / f"cut{i}.png").write_bytes(whole[: len(whole) // 2])
    manifest = corpus / "train.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"cut{i}.png", "target": "x"}) + "\n" for i in range(5)))
    done = fit(tmp_path, manifest, "--data.on_bad_image=skip", "--export.enabled=true", "--data.num_workers=0")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(re.escape("docvlm fit: error: data.train: no usable sample was found: every image of the epoch "
                                  f"was unreadable and skipped (data.on_bad_image: skip); the first: {manifest}:")
                        + r"(\d): " + re.escape(str(corpus)) + r"/cut(\d)\.png: corrupt image \(.*\)", last), last
    assert not list((tmp_path / "runs").rglob("model.safetensors"))
def start_fit(root: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """`docvlm fit` of the tiny text config, long enough to be stopped, with stderr in `root/stderr`."""
    return subprocess.Popen(
        [sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/tiny/text.yaml"), "--data.val=null",
         "--trainer.limit_val_batches=0", "--trainer.max_steps=100000", "--export.enabled=false",
         f"--trainer.default_root_dir={root / 'runs'}", *extra],
        stdout=subprocess.PIPE, stderr=(root / "stderr").open("w"), text=True, cwd=root, env=env)


def after_first_step(process: subprocess.Popen) -> None:
    """Wait for the progress line printed after the first optimizer step: training (and Lightning's signal
    handling) has started."""
    for line in process.stdout:
        if line.startswith("step "):
            return
    pytest.fail("the run ended before its first step")


def finished(process: subprocess.Popen, root: Path) -> tuple[int, str]:
    try:
        process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("docvlm fit did not stop")
    return process.returncode, (root / "stderr").read_text()


@pytest.mark.slow
def test_fit_on_sigterm_saves_last_ckpt_at_the_step_and_exits_143(tmp_path):
    import signal

    import torch

    run = start_fit(tmp_path)
    after_first_step(run)
    run.send_signal(signal.SIGTERM)
    status, stderr = finished(run, tmp_path)
    assert status == 143 and "Traceback" not in stderr, stderr[-4000:]
    assert stderr.strip().splitlines()[-1] == "docvlm fit: terminated (SIGTERM)"
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    assert f"SIGTERM: saved {last} at step" in stderr
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step >= 1

    resumed = subprocess.run(
        [sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/tiny/text.yaml"), "--data.val=null",
         "--trainer.limit_val_batches=0", f"--trainer.max_steps={step + 1}", "--export.enabled=false",
         f"--trainer.default_root_dir={tmp_path / 'runs'}", "--ckpt_path", "last"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"step {step + 1}/{step + 1}" in resumed.stdout  # one more step, from where SIGTERM stopped it


@pytest.mark.slow
def test_fit_under_slurm_requeues_on_sigusr1_through_lightning(tmp_path):
    import signal

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'requeued'}\n")
    (bin_ / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "docvlm-fit", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}
    env = {**os.environ, **slurm, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}
    run = start_fit(tmp_path, env=env)
    after_first_step(run)
    run.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=SIGUSR1@90` sends 90 s before the time limit
    while not (tmp_path / "requeued").is_file():
        assert run.poll() is None, (tmp_path / "stderr").read_text()[-4000:]
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)  # what SLURM sends as it stops the job it requeued
    status, stderr = finished(run, tmp_path)
    assert status == 143, stderr[-4000:]
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert (tmp_path / "runs" / "hpc_ckpt_1.ckpt").is_file()  # what Lightning resumes from when requeued


@pytest.mark.slow
def test_ddp_stops_every_rank_together_on_an_image_that_fails_on_one_rank(tmp_path):
    """`on_bad_image: error` with 2 CPU processes: an image whose header passes the up-front check but whose
    pixels fail in the loader, on one rank only. Every rank stops with its error at once; a rank raising
    alone left the other waiting at its next collective for gloo's 30 minutes."""
    rows = []
    for i in range(4):
        name = f"{i}.png"
        text_image(f"line {i}").save(tmp_path / name)
        if i == 1:
            whole = (tmp_path / name).read_bytes()
            (tmp_path / name).write_bytes(whole[: len(whole) // 2])
        rows.append(json.dumps({"image": name, "target": f"line {i}"}))
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    done = fit(tmp_path, tmp_path / "train.jsonl", "--trainer.strategy=ddp", "--trainer.devices=2",
               "--trainer.accelerator=cpu", "--data.batch_size=1", timeout=600)
    assert done.returncode == 2, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert f"{tmp_path / 'train.jsonl'}:2: {tmp_path / '1.png'}" in done.stderr


@pytest.mark.slow
def test_ddp_on_a_stream_whose_ranks_get_unequal_rows_ends_each_epoch_on_every_rank_together(tmp_path):
    """5 rows streamed in 5 shards to 2 CPU processes: rank 0 reads 3, rank 1 reads 2. Every rank must end the
    epoch at the same step: rank 1 validated at the end of its epoch (gathering predictions) while rank 0 was
    all-reducing the gradients of its third step, and both waited forever. Validation streams the same rows,
    3 and 2 per rank, which no collective per batch may assume equal."""
    import datasets

    data = datasets.Dataset.from_dict({"image": [text_image(f"line {i}") for i in range(5)],
                                       "target": [f"line {i}" for i in range(5)]})
    data.save_to_disk(str(tmp_path / "stream"))
    command = [
        sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/demo.yaml"),
        f"--data.train.dataset={tmp_path / 'stream'}", "--data.train.streaming=true", "--data.train.synthetic=0",
        f"--data.val.dataset={tmp_path / 'stream'}", "--data.val.streaming=true", "--data.val.synthetic=0",
        "--trainer.val_check_interval=null", "--trainer.check_val_every_n_epoch=1",
        "--model.decoding.max_new_tokens=4", "--trainer.max_steps=6", "--data.batch_size=1",
        "--export.enabled=false", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the ranks waited for each other: {(e.stderr or b'')[-3000:]!r}")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "step 6/6" in done.stdout  # 3 epochs of 2 steps, the length of the shorter rank's share


def code_asking_model(folder: Path, marker: Path) -> None:
    """A model folder whose config.json needs its own code (an auto_map, an unknown model_type), with a .py
    file that writes `marker` when imported."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "docvlm-evil", "architectures": ["Evil"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.Evil",
                     "AutoProcessor": "evil.EvilProcessor"}}))
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                    "from transformers import PretrainedConfig\n\n"
                                    "class EvilConfig(PretrainedConfig):\n    model_type = 'docvlm-evil'\n")


@pytest.mark.slow
def test_fit_refuses_a_model_folder_asking_to_run_its_own_code_without_running_it(tmp_path):
    code_asking_model(tmp_path / "model", tmp_path / "ran")
    done = subprocess.run(
        [sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/tiny/text.yaml"),
         f"--model.model.name_or_path={tmp_path / 'model'}", f"--trainer.default_root_dir={tmp_path / 'runs'}"],
        input="y\n", capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and not (tmp_path / "ran").exists(), done.stderr[-4000:]
    assert "[y/N]" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"docvlm fit: error: {tmp_path / 'model'}: its config")
