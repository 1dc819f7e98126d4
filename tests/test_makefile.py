"""`make test`'s `browser` and `java` steps say what they install and why before installing, and what the tests
skip without root; apt's own notes (debconf's) stay out of the terminal unless the install fails. Run with fake
`id` and `apt-get` on a PATH that holds nothing else: nothing is installed."""

import os
import shutil
import subprocess

import pytest

MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def run_make(repo, tmp_path, *, uid: int, apt_status: int = 0, present: tuple[str, ...] = ()):
    """`make browser java` with `id -u` = uid and an apt-get that notes its calls, talks like debconf on
    stderr and exits with apt_status; `present` are commands that exist."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("mktemp", "rm", "cat"):
        os.symlink(shutil.which(tool), bin_ / tool)
    scripts = {"id": f"echo {uid}",
               "apt-get": f'echo "apt-get $*" >> {tmp_path}/calls\n'
                          'echo "debconf: delaying package configuration, since apt-utils is not installed" >&2\n'
                          f"exit {apt_status}"}
    scripts.update({name: "exit 0" for name in present})
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    done = subprocess.run([MAKE, "--no-print-directory", "-C", str(repo), "browser", "java"], capture_output=True,
                          text=True, env={"PATH": str(bin_)}, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return done, calls


def test_as_root_it_says_what_and_why_before_installing_and_keeps_apts_notes_out(repo, tmp_path):
    done, calls = run_make(repo, tmp_path, uid=0)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("make test: installing Debian's chromium with apt-get")
    assert "headless browser" in lines[0]
    assert lines[1].startswith("make test: installing Debian's default-jre-headless") and "Java tokenizer" in lines[1]
    assert len(lines) == 2 and done.stderr == "" and "debconf" not in done.stdout
    assert calls == ["apt-get update -qq", "apt-get install -y -qq chromium",
                     "apt-get update -qq", "apt-get install -y -qq default-jre-headless"]


def test_without_root_it_installs_nothing_and_says_what_is_skipped(repo, tmp_path):
    done, calls = run_make(repo, tmp_path, uid=1000)
    assert calls == [] and done.returncode == 0
    assert done.stdout.splitlines() == [
        "make test: chromium is not installed and installing it needs root and apt-get: the browser test of the "
        "evaluation report will be skipped",
        "make test: default-jre-headless is not installed and installing it needs root and apt-get: the comparisons "
        "with Java's PTBTokenizer will be skipped",
    ]


def test_a_failed_install_shows_apts_output_and_what_is_skipped(repo, tmp_path):
    done, _ = run_make(repo, tmp_path, uid=0, apt_status=100)
    assert "debconf: delaying" in done.stdout
    assert "make test: chromium could not be installed: the browser test of the evaluation report will be skipped" \
        in done.stdout


def test_nothing_is_said_when_both_are_there(repo, tmp_path):
    done, calls = run_make(repo, tmp_path, uid=0, present=("chromium", "java"))
    assert (done.stdout, done.stderr, calls) == ("", "", [])
