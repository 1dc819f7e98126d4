"""`fit`'s user errors are one line naming the file (and line) and what to do, found before training
where they can be: manifests (bad JSON with its real column, bytes that are not UTF-8, no rows, rows
without a target), every target over the token budget, and `--ckpt_path last` (which must resume from
the run's newest `last.ckpt`, or say there is none, never train from step 0 again)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import docvlm.tasks as tasks
from docvlm.data import DocDataModule
from docvlm.errors import DataError
from docvlm.images import BadImageError
from docvlm.items import Source
from docvlm.tasks.manifest import ManifestError, jsonl_rows, read_manifest

REPO = Path(__file__).resolve().parents[1]
DOCVLM = Path(sys.executable).parent / "docvlm"


@pytest.fixture
def folder(tmp_path):
    for name in ("a", "b"):
        Image.new("RGB", (64, 32), "white").save(tmp_path / f"{name}.png")
    return tmp_path


def test_malformed_json_reports_its_real_column(folder):
    line = '{"image": "a.png", "target": '
    (folder / "bad.jsonl").write_text('{"image": "a.png", "target": "x"}\n' + line + "\n")
    with pytest.raises(ManifestError,
                       match=rf"bad\.jsonl:2: not valid JSON \(Expecting value at column {len(line) + 1}\)"):
        read_manifest(folder / "bad.jsonl")
    (folder / "bad.jsonl").write_text('{"image": "a.png" "target": "x"}\n')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:1: not valid JSON \(Expecting ',' delimiter at column 19\)"):
        read_manifest(folder / "bad.jsonl")
    (folder / "deep.jsonl").write_text("[" * 100_000 + "\n")
    with pytest.raises(ManifestError, match=r"deep\.jsonl:1: not valid JSON \(nested too deeply\)"):
        read_manifest(folder / "deep.jsonl")


def test_bytes_that_are_not_utf8_are_named_by_file_line_and_column(folder):
    (folder / "latin1.jsonl").write_bytes(b'{"image": "a.png", "target": "x"}\n'
                                          b'{"image": "b.png", "target": "caf\xe9"}\n')
    with pytest.raises(ManifestError,
                       match=r"latin1\.jsonl:2: not UTF-8 \(byte 0xe9 at column 34\); save the manifest as UTF-8"):
        read_manifest(folder / "latin1.jsonl")
    (folder / "latin1.csv").write_bytes(b"image,target\na.png,ok\nb.png,caf\xe9\n")
    with pytest.raises(ManifestError, match=r"latin1\.csv:3: not UTF-8 \(byte 0xe9 at column 10\)"):
        read_manifest(folder / "latin1.csv")
    (folder / "huge.csv").write_text("image,target\na.png,ok\nb.png,\"" + "x" * 200_000 + "\"\n")
    with pytest.raises(ManifestError, match=r"huge\.csv:3: not valid CSV \(field larger than field limit"):
        read_manifest(folder / "huge.csv")
    # a byte-order mark (Windows editors write one) is not part of the first key
    (folder / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"image": "a.png", "target": "x"}\n')
    assert [s.target for s in read_manifest(folder / "bom.jsonl")] == ["x"]


def test_a_manifest_that_is_no_regular_file_or_has_a_non_string_image_is_named(folder):
    os.mkfifo(folder / "fifo.jsonl")  # reading it would wait for a writer forever
    with pytest.raises(ManifestError, match=r"fifo\.jsonl: a FIFO, not a regular file"):
        read_manifest(folder / "fifo.jsonl")
    with pytest.raises(ManifestError, match=r"fifo\.jsonl: a FIFO"):
        next(jsonl_rows(folder / "fifo.jsonl"))  # evaluate's --predictions reader
    with pytest.raises(ManifestError, match=r"nothing\.jsonl: no such manifest file"):
        read_manifest(folder / "nothing.jsonl")
    with pytest.raises(ManifestError, match=rf"{folder}: a folder, not a regular file"):
        read_manifest(folder)
    (folder / "numbered.jsonl").write_text('{"image": 7, "target": "x"}\n')
    with pytest.raises(ManifestError, match=r"numbered\.jsonl:1: 'image' must be a path \(a string\), got int"):
        read_manifest(folder / "numbered.jsonl")


def data_module(processor, **kwargs):
    dm = DocDataModule(tasks.get("text"), augment=None, **kwargs)
    dm.processor = processor
    return dm


def test_empty_manifest_missing_targets_and_all_overlong_targets_stop_setup(folder, tiny_small):
    _, processor = tiny_small
    (folder / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match=r"empty\.jsonl: the manifest has no rows"):
        data_module(processor, train=Source(path=str(folder / "empty.jsonl"))).setup("fit")

    (folder / "untargeted.jsonl").write_text('{"image": "a.png", "target": "x"}\n{"image": "b.png"}\n')
    with pytest.raises(DataError, match=r"untargeted\.jsonl:2: no 'target' \(1 of 2 samples of data\.train"):
        data_module(processor, train=Source(path=str(folder / "untargeted.jsonl"))).setup("fit")
    dm = data_module(processor, predict=Source(path=str(folder / "untargeted.jsonl")))
    dm.setup("predict")  # transcribing needs no targets
    assert len(dm.datasets["predict"]) == 2

    rows = [{"image": "a.png", "target": "x" * 300}, {"image": "b.png", "target": "y" * 200}]
    (folder / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"long\.jsonl: all 2 training targets are longer than the task's "
                                        r"max_target_tokens=128 .*data\.overlength: truncate"):
        data_module(processor, train=Source(path=str(folder / "long.jsonl"))).setup("fit")


def test_unreadable_images_are_found_in_setup_and_counted(folder, tiny_small):
    _, processor = tiny_small
    (folder / "junk.png").write_bytes(b"junk")
    rows = [{"image": "a.png", "target": "x"}, {"image": "missing.png", "target": "y"},
            {"image": "junk.png", "target": "z"}, {"image": "b.png", "target": "w"}]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = folder / "data.jsonl"
    with pytest.raises(DataError, match=rf"^{manifest}:2: {folder / 'missing.png'}: no such image file \(and 1 more "
                                        r"unreadable images in data\.train\); fix or remove them, "
                                        r"or set data\.on_bad_image: skip"):
        data_module(processor, train=Source(path=str(manifest))).setup("fit")
    dm = data_module(processor, train=Source(path=str(manifest)), on_bad_image="skip")
    dm.setup("fit")
    assert [s.image.name for s in dm.datasets["train"].samples] == ["a.png", "b.png"]
    rows = [r for r in rows if r["image"] in ("missing.png", "junk.png")]
    (folder / "none.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"data\.train: none of its 2 images can be read; the first: .*none\.jsonl:1"):
        data_module(processor, train=Source(path=str(folder / "none.jsonl")), on_bad_image="skip").setup("fit")


def fit(root, *extra):
    from docvlm.cli import main

    return main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--data.train.synthetic=4",
                 "--data.val.synthetic=2",
                 "--data.batch_size=2", "--model.decoding.max_new_tokens=4", "--trainer.val_check_interval=2",
                 f"--trainer.default_root_dir={root}", "--export.enabled=false", *extra])


@pytest.mark.slow
def test_an_image_that_fails_when_decoded_in_a_worker_is_one_clean_error_naming_its_line(folder):
    """The header is whole, so `setup` passes it; the data-loader worker fails to decode it, and the error
    is raised in the main process, not as the worker's traceback text."""
    data = (folder / "a.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "train.jsonl").write_text('{"image": "a.png", "target": "x"}\n{"image": "cut.png", "target": "y"}\n')
    with pytest.raises(BadImageError) as raised:
        fit(folder / "runs", f"--data.train.path={folder / 'train.jsonl'}", "--data.train.synthetic=0",
            "--data.val=null",
            "--trainer.limit_val_batches=0", "--data.num_workers=1", "--trainer.max_steps=2")
    assert str(raised.value).startswith(f"{folder / 'train.jsonl'}:2: {folder / 'cut.png'}: ")
    assert "\n" not in str(raised.value) and str(raised.value).endswith("set data.on_bad_image: skip to leave it out")


@pytest.mark.slow
def test_ckpt_path_last_resumes_from_the_newest_last_checkpoint_of_earlier_versions(tmp_path):
    overlay = tmp_path / "save_last.yaml"
    overlay.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                       "      init_args: {save_last: true}\n")
    first = fit(tmp_path, "--config", str(overlay), "--trainer.max_steps=2")
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file() and Path(first.trainer.log_dir).name == "version_0"

    resumed = fit(tmp_path, "--config", str(overlay), "--trainer.max_steps=4", "--ckpt_path=last")
    assert Path(resumed.trainer.log_dir).name == "version_1"  # a new version folder, resumed from version_0
    assert resumed.trainer.ckpt_path == str(last)
    assert resumed.trainer.global_step == 4
    newer = Path(resumed.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(newer, map_location="cpu", weights_only=True)["global_step"] == 4

    # with no last.ckpt anywhere: say so and where, naming the checkpoint there is; never start afresh
    plain = tmp_path / "plain"
    fit(plain, "--trainer.max_steps=2")
    with pytest.raises(DataError, match=r"--ckpt_path last: no last\.ckpt in .*plain/lightning_logs/\*/checkpoints; "
                                        r"the newest checkpoint there is .*step=2\.ckpt: pass it as --ckpt_path"):
        fit(plain, "--trainer.max_steps=4", "--ckpt_path=last")
    with pytest.raises(DataError, match=r"--ckpt_path .*nothing\.ckpt: no such checkpoint file"):
        fit(plain, "--trainer.max_steps=4", f"--ckpt_path={tmp_path / 'nothing.ckpt'}")


@pytest.mark.slow
def test_the_console_script_prints_user_errors_in_one_line_and_ctrl_c_without_traceback(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    done = subprocess.run([sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/demo.yaml"),
                           f"--data.train.path={tmp_path / 'empty.jsonl'}", "--data.train.synthetic=0",
                           f"--trainer.default_root_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"docvlm fit: error: {tmp_path / 'empty.jsonl'}: the manifest has no rows "
        '(expected one {"image": ..., "target": ...} per line)')

    started = subprocess.Popen([sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/demo.yaml"),
                                f"--trainer.default_root_dir={tmp_path}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               # even if ours ignores it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(2)  # torch and Lightning are still being imported
    started.send_signal(signal.SIGINT)
    try:
        _, err = started.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        started.kill()
        pytest.fail(f"Ctrl-C did not stop docvlm fit: {started.communicate()[1][-3000:]}")
    assert started.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "docvlm fit: interrupted"

    # once training runs, Lightning shuts the run down gracefully; the exit status still says interrupted
    root = tmp_path / "training"
    started = subprocess.Popen([sys.executable, str(DOCVLM), "fit", "--config", str(REPO / "configs/demo.yaml"),
                                f"--trainer.default_root_dir={root}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(root.glob("lightning_logs/version_0/hparams.yaml")) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    started.send_signal(signal.SIGINT)
    try:
        _, err = started.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        started.kill()
        pytest.fail(f"Ctrl-C did not stop docvlm fit: {started.communicate()[1][-3000:]}")
    assert started.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "docvlm fit: interrupted"


class _Payload:
    """Pickled, it runs a command when unpickled without `weights_only`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_pickle_payload_or_a_truncated_checkpoint_is_refused_in_one_line_by_fit_and_validate(tmp_path):
    """`fit --ckpt_path last` finds a planted `last.ckpt` (a pickle payload), `validate --ckpt_path X` a payload
    or a truncated checkpoint: one line naming the file, exit 2, nothing unpickled, nothing trained."""
    marker = tmp_path / "pwned"
    last = tmp_path / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, last)
    fit(tmp_path / "good", "--trainer.max_steps=2")
    good = next((tmp_path / "good").rglob("*.ckpt"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    runs = {"fit": ["--ckpt_path", "last"], "validate": ["--ckpt_path", str(last)],
            "validate ": ["--ckpt_path", str(truncated)]}
    for command, extra in runs.items():
        done = subprocess.run([sys.executable, str(DOCVLM), command.strip(),
                               "--config", str(REPO / "configs/demo.yaml"),
                               f"--trainer.default_root_dir={tmp_path / 'run'}", *extra],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
        line = done.stderr.strip().splitlines()[-1]
        path = truncated if "truncated" in extra[-1] else last
        assert line.startswith(f"docvlm {command.strip()}: error: --ckpt_path {path}: not a checkpoint that can be "
                               f"read safely ("), line
    assert not marker.exists()
    assert not list((tmp_path / "run" / "lightning_logs").glob("version_1"))  # no run started


def test_a_prompt_longer_than_the_model_can_read_stops_fit_naming_its_row(folder):
    """A manifest row whose prefix the model cannot read (its positions less the image's tokens): one error
    naming `file:line`, from setup, before any step."""
    rows = [{"image": "a.png", "target": "x", "prefix": "short"},
            {"image": "b.png", "target": "y", "prefix": "w" * 9000}]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"^{folder / 'prompts.jsonl'}:2: the prompt has 9004 tokens or more, longer "
                                        r"than the 8165 the model has for one \(its positions less the image's 25 "
                                        r"tokens\); shorten the prompt$"):
        fit(folder / "runs", f"--data.train.path={folder / 'prompts.jsonl'}", "--data.train.synthetic=0",
            "--trainer.max_steps=1")
    assert not list((folder / "runs").rglob("*.ckpt"))
