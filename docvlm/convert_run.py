"""The run of a `docvlm convert`, shared by its two commands (a model over whole pages, and `--pipeline`): which
pages are this process's (`World`, `launch`), the jobs and their output names (`gather_pages`, `plan`), the run's
hold on its output folder (`take_folder`), exports placed into it (`place`), SIGTERM as an interrupt, and what the
processes print (`Printer`). `docvlm.convert` and `docvlm.pipeline.convert` both build on it; it imports neither.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docvlm.convert_manifest import BookkeepingError, RunManifest, check_bookkeeping, safe_relative
from docvlm.pages import Page, PageRange, expand

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
MANIFEST_SUFFIXES = (".jsonl", ".csv")


class Terminated(KeyboardInterrupt):
    """SIGTERM, which SLURM and Kubernetes send before they kill a job (and on preemption): handled as Ctrl-C
    is, so that the exports already done are placed and recorded, and the summary is written."""


def terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up runs once; the scheduler's SIGKILL bounds it
    raise Terminated


@dataclass
class World:
    """This process's place among all processes of the run (Fabric ranks times shards)."""

    rank: int = 0
    size: int = 1
    fabric: Any = None

    @property
    def leads(self) -> bool:
        """Merges the manifest parts: rank zero of a Fabric world, or every shard (each in turn)."""
        return self.fabric is None or self.fabric.global_rank == 0

    def owns(self, key: tuple[str, int | None]) -> bool:
        digest = hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.size == self.rank

    def barrier(self) -> None:
        if self.fabric is not None:
            self.fabric.barrier()

    def everywhere(self, flag: bool) -> bool:
        """Whether `flag` holds in every Fabric process."""
        if self.fabric is None:
            return flag
        import torch

        return bool(self.fabric.all_reduce(torch.tensor(int(flag)), reduce_op="min"))

    def worst(self, code: int) -> int:
        """The highest exit status of all Fabric ranks, so that the launching process reports any failure."""
        if self.fabric is None:
            return code
        import torch

        return int(self.fabric.all_reduce(torch.tensor(code), reduce_op="max"))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_WORLD_SIZE" in os.environ


def launch(args: argparse.Namespace) -> tuple[World, Any]:
    """(this process's World, its device): Fabric launches `--devices` x `--num-nodes` processes (or joins
    the ones `torchrun`/SLURM started); `--shard` multiplies the world."""
    from docvlm.inference import resolve_device

    shard_index, shard_count = args.shard or (1, 1)
    devices, nodes = args.devices, args.num_nodes
    if launched_by_torchrun() and devices == 1 and nodes == 1:
        devices = int(os.environ["LOCAL_WORLD_SIZE"])
        nodes = int(os.environ["WORLD_SIZE"]) // devices
    if devices * nodes == 1:
        return World(shard_index - 1, shard_count), resolve_device(args.device)
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=args.accelerator, devices=devices, num_nodes=nodes, strategy="ddp")
    fabric.launch()
    if fabric.device.type == "cpu":  # the node's cores shared out, not every process on all of them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    size = fabric.world_size
    return World((shard_index - 1) * size + fabric.global_rank, shard_count * size, fabric), fabric.device


@dataclass
class Job:
    page: Page
    id: str  # output stem relative to <out>, posix
    prefix: str = ""  # the page's own prompt part (from a manifest row)

    @property
    def key(self) -> tuple[str, int | None, str]:
        """The page and its prompt part: a manifest may list one image with different prompts."""
        return str(self.page.input), self.page.page, self.prefix


def gather_pages(inputs: list[str], pages: PageRange | None, out: Path):
    """(pages with their prompt parts, input errors, warnings); manifests expand into their rows' images.
    Raises `ValueError` for a manifest that cannot be read (named with its line)."""
    from docvlm.tasks.manifest import ManifestError, read_manifest

    found, errors, warnings = [], [], []
    manifests = manifests_given(inputs)
    for given in inputs:
        if Path(given) in manifests:
            try:
                samples = read_manifest(given)
            except ManifestError as e:
                raise ValueError(str(e)) from None
            for sample in samples:
                listed, failed, warned = expand([sample.image], pages, exclude=out)
                found += [(page, sample.prefix or "") for page in listed]
                errors += failed
                warnings += warned
        else:
            listed, failed, warned = expand([given], pages, exclude=out)
            found += [(page, "") for page in listed]
            errors += failed
            warnings += warned
    return found, errors, warnings


def manifests_given(inputs: list[str]) -> list[Path]:
    """The inputs that are manifests (read for their rows' images)."""
    paths = [Path(given) for given in inputs]
    return [path for path in paths if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file()]


def inputs_inside(pages: list[tuple[Page, str]], manifests: list[Path], out: Path) -> list[Path]:
    """Input files (pages, and the manifests naming them) inside the output folder, where an output, or
    convert's own manifest, could overwrite them."""
    root = os.path.realpath(out)
    given = [*manifests, *(p.input for p, _ in pages)]
    return [path for path in given if os.path.commonpath([root, os.path.realpath(path)]) == root]


def run_identity(args: argparse.Namespace, world: World) -> str:
    """What decides a run's output names and its split of pages: its inputs, pages and number of processes.
    The processes of one run (ranks, the shards of a job array) share it; another run on the same `--out`
    is refused while they write (`RunManifest.join`)."""
    what = {"inputs": [os.path.abspath(i) for i in args.inputs], "pages": args.pages and args.pages.text,
            "processes": world.size}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def plan(pages: list[tuple[Page, str]], known: dict[tuple[str, int | None, str], dict]) -> list[Job]:
    """One job per distinct (input, page, prompt part), each with an output name no other page of the manifest
    or of this run has (compared case-insensitively); a page the manifest knows keeps its earlier name. Every
    process of a run computes the same plan, so names never depend on which process converts a page."""
    taken = {str(r["id"]).casefold() for r in known.values() if r.get("id")}
    jobs, seen = [], set()
    for page, prefix in pages:
        key = (str(page.input), page.page, prefix)
        if key in seen:
            continue
        seen.add(key)
        earlier = known.get(key)
        if earlier is not None and earlier.get("id"):
            jobs.append(Job(page, str(earlier["id"]), prefix))
            continue
        name, n = page.name, 2
        while name.casefold() in taken:
            name, n = f"{page.name}-{n}", n + 1
        taken.add(name.casefold())
        jobs.append(Job(page, name, prefix))
    return jobs


def is_done(row: dict | None, task: str, out: Path) -> bool:
    """A successful row of this task whose output files all exist."""
    return (
        row is not None and row.get("error") is None and row.get("task") == task and bool(row.get("outputs"))
        and all((out / p).is_file() for p in row["outputs"])
    )


def take_folder(manifest: RunManifest, identity: str, world: World, out: Path) -> str | None:
    """Join the run writing to `out` and take this process's manifest part; why not, when another run (or
    this process's twin) is writing there."""
    if not manifest.join(identity):
        return (f"--out {out}: another docvlm convert, with other inputs, pages or number of processes, is "
                f"writing to this folder; the two would give one name to different pages: wait for it to "
                f"finish, or write to another folder")
    if not manifest.open():
        return (f"--out {out}: another docvlm convert is writing to this folder (as process {world.rank + 1} "
                f"of {world.size})")
    return None


class Printer:
    """Messages and the summary, with the process named when there are several."""

    def __init__(self, world: World):
        self.world = world
        self.tag = f" [{world.rank + 1}/{world.size}]" if world.size > 1 else ""

    def warning(self, message: str) -> None:
        if self.world.rank == 0:
            print(f"docvlm convert: warning: {message}", file=sys.stderr)

    def error(self, message: str, code: int) -> int:
        print(f"docvlm convert{self.tag}: error: {message}", file=sys.stderr)
        return code

    def summary(self, stats: dict, manifest: Path) -> None:
        failed = stats["failed"]
        for error in failed[:20]:
            print(f"docvlm convert{self.tag}: error: {error}", file=sys.stderr)
        if len(failed) > 20:
            print(f"docvlm convert{self.tag}: ... and {len(failed) - 20} more errors (see {manifest})", file=sys.stderr)
        where = f"; manifest {manifest}" if manifest.is_file() else ""
        converted = stats["converted"]
        pages = f"{converted} page{'' if converted == 1 else 's'}"
        print(f"docvlm{self.tag}: {pages} converted ({stats['problems']} with problems in the output), "
              f"{len(failed)} failed, {stats['skipped']} skipped as done{where}")


def place(path: Path, staging: Path, out: Path, id_: str) -> str:
    """Move one exported file to `<out>/<id's folder>/<its name>`; the rename replaces a file (or a link)
    there without following it, and a destination outside `out` (a linked folder) is refused."""
    if not safe_relative(id_):
        raise ValueError(f"unsafe output name {id_!r}")
    path = Path(os.path.abspath(path))
    if os.path.commonpath([str(staging), str(path)]) != str(staging):
        raise ValueError(f"the export wrote {path}, outside its folder")
    target = out / Path(id_).parent / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(out)
    if os.path.commonpath([root, os.path.realpath(target.parent)]) != root:
        raise ValueError(f"{target.parent} leads outside --out {out}")
    if target.is_dir() and not target.is_symlink():
        raise ValueError(f"{target} is a folder, not a file: rename the input or write to another --out")
    os.replace(path, target)
    return target.relative_to(out).as_posix()


def count_row(row: dict, stats: dict) -> None:
    """A finished row in the run's summary counts."""
    if row["error"] is not None:
        stats["failed"].append(row["error"])
    else:
        stats["converted"] += 1
        stats["problems"] += bool(row["problems"])


def execute(args: argparse.Namespace, world: World, stamp: dict, task_name: str | None, convert, after=None) -> int:
    """One process's run of a convert command around its own conversion: the inputs gathered and checked, the
    output folder held, unreadable inputs recorded, Ctrl-C and SIGTERM turned into a kept, resumable stop, the
    manifest parts merged and the summary printed; the exit status.

    `convert(found, known, manifest, stats, say)` plans this process's pages from the gathered (page, prefix)
    pairs and the manifest's earlier rows (setting `stats["skipped"]`), converts them and returns an exit status;
    `after(out, manifest, say)` runs in the leading process once the parts are merged, when the run ended well.
    """
    out = Path(os.path.abspath(args.out))
    say = Printer(world)
    try:
        found, input_errors, warnings = gather_pages(args.inputs, args.pages, out)
    except ValueError as e:
        return say.error(str(e), EXIT_USAGE)
    inside = inputs_inside(found, manifests_given(args.inputs), out)
    if inside:  # before anything is written
        return say.error(f"--out {out} contains the input {inside[0]}: outputs could overwrite inputs; "
                         f"write to a folder outside the inputs", EXIT_USAGE)
    try:
        check_bookkeeping(out)
    except BookkeepingError as e:
        return say.error(f"--out {out}: {e}", EXIT_USAGE)
    out.mkdir(parents=True, exist_ok=True)
    manifest = RunManifest(out, world.rank, world.size, warn=say.warning, stamp=stamp)
    if world.leads:
        manifest.merge()
    world.barrier()
    for warning in warnings:
        say.warning(warning)
    refused = take_folder(manifest, run_identity(args, world), world, out)
    if not world.everywhere(refused is None):  # every process stops, or none: the others would wait for it
        manifest.close()
        return EXIT_USAGE if refused is None else say.error(refused, EXIT_USAGE)
    known = manifest.read()  # once this run holds the folder: no other run adds names meanwhile
    stats = {"converted": 0, "problems": 0, "failed": [], "skipped": 0}
    code = EXIT_OK
    try:
        errors = [e for e in input_errors if world.owns((str(e.input), None))]
        if errors:
            manifest.append([{"input": str(e.input), "page": None, "prefix": "", "id": None, "task": task_name,
                              "outputs": [], "problems": [], "error": e.error, "text": None} for e in errors])
            stats["failed"] += [e.error for e in errors]
        code = convert(found, known, manifest, stats, say)
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        say.error(f"{what}; the pages finished so far are recorded in {out} (run again with --skip-existing "
                  f"to convert the rest)", 0)
        code = EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    finally:
        manifest.close()
        manifest.remove_staging()  # the last process to finish removes the emptied `.staging` too
    if code not in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        world.barrier()
    if world.leads:
        manifest.merge()
        if code == EXIT_OK and after is not None:
            after(out, manifest, say)
    say.summary(stats, manifest.path)
    if code != EXIT_OK:
        return code
    return EXIT_FAILED if stats["failed"] else EXIT_OK
