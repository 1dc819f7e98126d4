"""`RecordBatches`, a callback a test adds to a run (`--trainer.callbacks+=...`, with tests/ on the path)."""

import json
from pathlib import Path

import lightning as L


class RecordBatches(L.Callback):
    """Write each training batch's prompts and sample ids, with its step, to `<path>/rank<N>.jsonl`: what each
    process trained on, in order."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        tokenizer = pl_module.processor.tokenizer
        prompts = [tokenizer.decode(ids[(types == 0) & (mask == 1)], skip_special_tokens=True).strip()
                   for ids, types, mask in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])]
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps({"step": trainer.global_step, "prompts": prompts, "ids": batch["id"]}) + "\n")


def read(path: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (Path(path) / f"rank{rank}.jsonl").read_text().splitlines()]
