"""Distil a layer-dropped all-MiniLM-L6-v2 student for as long as a GPU makes cheap.

The structure runs in BENCHMARKS.md train for minutes on two CPU cores; this is the same student
(the teacher's layers, chosen greedily by measured cosine on training text, optionally with a
fraction of every FFN's neurons removed; vocabulary table frozen) trained on the zoo's training text
(everyday and technical English from installed packages) plus crops and pairs of it, learning the
teacher's pooled embedding (cosine) and its last hidden states token by token. Training stops after
``--minutes``; the learning rate follows a cosine over that time. The held-out sentences are only
scored at the end. It writes the student's state dict without the vocabulary table (which is the
teacher's), split into parts under 15 MB (``--half`` stores FP16 to halve the transfer), for
``model.format: pytorch`` with ``model.architecture: all-minilm-l6-v2``.

    python -m benchmarks.distill_minilm --layers 4 [--ffn-removed 0.3] --minutes 4 --out DIR
    python -m benchmarks.distill_minilm --smoke [--out DIR]    # seconds: a check that it runs
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from frugal.compression.device import pick_device
from frugal.compression.steps.transformer import (
    choose_layers,
    encode,
    keep_layers,
    structured_bert,
    trim_padding,
)
from frugal.compression.zoo import corpus, minilm

VOCABULARY = "bert.embeddings.word_embeddings.weight"
PART_BYTES = 15 * 1024 * 1024
# --smoke: every step of a real run (layer choice, FFN cut if asked, training, scoring, the parts
# written) at sizes that take seconds on a CPU; the student it writes is not worth keeping.
SMOKE = {"layers": 5, "sentences": 256, "pairs": 64, "crops": 64, "batch": 16, "minutes": 0.05}


def augmented(sentences: list[str], seed: int, pairs: int, crops: int) -> list[str]:
    """The sentences, ``pairs`` random two-sentence joins and ``crops`` random word spans."""
    rng = random.Random(seed)
    out = list(sentences)
    out += [f"{rng.choice(sentences)} {rng.choice(sentences)}" for _ in range(pairs)]
    for _ in range(crops):
        words = rng.choice(sentences).split()
        start = rng.randrange(len(words))
        out.append(" ".join(words[start : start + rng.randint(3, 12)]))
    return out


def hidden_and_pooled(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return hidden, nn.functional.normalize(pooled, dim=-1)


def loss_fn(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor,
    token_weight: float,
) -> torch.Tensor:
    pooled = (1.0 - nn.functional.cosine_similarity(student[1], teacher[1], dim=-1)).mean()
    per_token = 1.0 - nn.functional.cosine_similarity(student[0], teacher[0], dim=-1)
    tokens = (per_token * mask).sum() / mask.sum()
    return pooled + token_weight * tokens


def save_parts(state: dict[str, torch.Tensor], out: Path, half: bool = False) -> list[Path]:
    """Group tensors into files under PART_BYTES each (``student.part-N.pt``)."""
    parts: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * (2 if half and tensor.is_floating_point() else tensor.element_size())
        if parts[-1] and size + nbytes > PART_BYTES:
            parts.append({})
            size = 0
        tensor = tensor.half() if half and tensor.is_floating_point() else tensor
        parts[-1][key] = tensor.contiguous().cpu()
        size += nbytes
    paths = []
    for index, part in enumerate(parts):
        path = out / f"student.part-{index}.pt"
        torch.save(part, path)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ffn-removed", type=float, default=0.0, help="fraction of FFN neurons removed per layer")
    p.add_argument("--half", action="store_true", help="write the state dict in FP16")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--token-weight", type=float, default=0.5)
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--crops", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sentences", type=int, default=10**9, help="at most this many training sentences")
    p.add_argument("--out", type=Path, help="where the state dict goes (required but with --smoke)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, to see it runs: 5 layers, 256 sentences, 3 s of training, into a temporary "
        "folder unless --out (flags given as well still apply)",
    )
    if "--smoke" in sys.argv[1:]:
        p.set_defaults(**SMOKE)
    args = p.parse_args()
    if args.out is None:
        if not args.smoke:
            p.error("--out is required")
        args.out = Path(tempfile.mkdtemp(prefix="frugal-distill-smoke-"))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = pick_device()
    torch.backends.cuda.matmul.allow_tf32 = False

    teacher = minilm.teacher()
    sentences = corpus.training_sentences(args.sentences)
    texts = augmented(sentences, args.seed, args.pairs, args.crops)
    tokens = minilm.tokenize(texts)
    ids, mask = torch.from_numpy(tokens["input_ids"]), torch.from_numpy(tokens["attention_mask"])
    chosen = choose_layers(teacher, args.layers, (ids[:128], mask[:128]))
    student = keep_layers(teacher, len(chosen), chosen)
    if args.ffn_removed:
        student = structured_bert(student, args.ffn_removed, trim_padding(ids[:256], mask[:256]))
    student = student.to(device).eval()
    student.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    teacher = teacher.to(device).eval()
    trained = [q for q in student.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
    print(
        f"device {device}; {len(sentences)} sentences -> {len(texts)} texts; layers kept {chosen}; "
        f"FFN neurons removed {args.ffn_removed:.0%}",
        flush=True,
    )

    start, step, epoch = time.monotonic(), 0, 0
    budget = args.minutes * 60
    done = False
    while not done:
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(args.seed + epoch))
        running = []
        for s in range(0, len(order) - args.batch + 1, args.batch):
            elapsed = time.monotonic() - start
            if elapsed > budget:
                done = True
                break
            for group in optimizer.param_groups:
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
            rows = order[s : s + args.batch]
            b_ids, b_mask = (x.to(device) for x in trim_padding(ids[rows], mask[rows]))
            with torch.no_grad():
                target = hidden_and_pooled(teacher, b_ids, b_mask)
            loss = loss_fn(hidden_and_pooled(student, b_ids, b_mask), target, b_mask, args.token_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running.append(float(loss.detach()))
            step += 1
        if running:
            print(
                f"epoch {epoch} steps {step} loss {sum(running) / len(running):.5f} "
                f"t {time.monotonic() - start:.0f}s",
                flush=True,
            )
        epoch += 1

    student = student.cpu().eval()
    teacher = teacher.cpu().eval()
    held = minilm.tokenize(minilm.sentences()[1::2])
    val = (torch.from_numpy(held["input_ids"]), torch.from_numpy(held["attention_mask"]))
    cos = nn.functional.cosine_similarity(encode(student, val), encode(teacher, val), dim=-1)
    print(f"held-out cosine min {float(cos.min()):.4f} mean {float(cos.mean()):.4f} ({len(cos)} sentences)")
    state = {k: v for k, v in student.state_dict().items() if k != VOCABULARY}
    for path in save_parts(state, args.out, args.half):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
