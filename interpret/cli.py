"""The ``lstmscope`` command. Parsing and printing only: every job is a library call.

Each command's flags sit beside what it runs: ``_add_train(sub)`` declares ``train`` and its
flags, ``cmd_train(args)`` runs it; ``build_parser`` adds the commands in the order
``lstmscope -h`` lists them.

Errors from bad input (``LstmscopeError``, ``ValueError`` from parsing user values) become one
line on stderr and exit code 2, never a traceback. Each command ends by saying where it wrote
its output and what to run next.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from lstmscope.errors import LstmscopeError

log = logging.getLogger(__name__)

MIN_VAL_CHARS = 64  # `train` validates on at least this many characters


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _next(*commands: list[str], prefix: str = "") -> None:
    """Print the commands to run next, each quoted so it runs as printed (tests run them)."""
    print(prefix + "next: " + "   |   ".join(shlex.join(["lstmscope", *c]) for c in commands))


# --- corpus ------------------------------------------------------------------------------------


def _add_corpus(sub) -> None:
    c = sub.add_parser("corpus", help="build or list corpora")
    csub = c.add_subparsers(dest="corpus_command", required=True)
    cl = csub.add_parser("list", help="list the built-in recipes")
    cl.set_defaults(func=cmd_corpus_list)
    cb = csub.add_parser("build", help="build a corpus folder (train.txt, val.txt, manifest.json)")
    cb.add_argument("name", help="a recipe (see 'corpus list') or a file/folder/glob")
    cb.add_argument("-o", "--output", help="output folder (default data/NAME)")
    cb.add_argument("--chars", type=int, default=0, help="synthetic: number of characters")
    cb.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    cb.set_defaults(func=cmd_corpus_build)


def cmd_corpus_list(args) -> int:
    from lstmscope.text.recipes import RECIPES

    for r in RECIPES.values():
        print(
            f"{r.name:20s} {r.description}{'  [fetched via pip/apt at build time]' if r.fetches else ''}"
        )
    return 0


def cmd_corpus_build(args) -> int:
    from lstmscope.text.corpus import read_documents, write_corpus
    from lstmscope.text.recipes import RECIPES, RECORD_ONLY, provenance
    from lstmscope.text.synthetic import write_synthetic_corpus

    out = Path(args.output or f"data/{args.name}")
    extra = {"provenance": provenance()}
    if args.name == "synthetic":
        extra["seed"] = args.seed
        manifest = write_synthetic_corpus(out, args.chars or 2_000_000, args.seed, extra)
        docs, name = None, "synthetic"
    elif args.name in RECIPES:
        recipe = RECIPES[args.name]
        docs = recipe.build()
        name = recipe.name
    elif os.path.lexists(args.name) or any(c in args.name for c in "*?["):
        # lexists: a broken link is still the user's path, and gets read_documents' message
        report = read_documents([args.name])
        docs, name = report.documents, "path"
        extra["source"] = args.name
        extra["skipped"] = dict(report.skipped)
        print(report.summary(), file=sys.stderr)
    else:
        raise LstmscopeError(
            f"unknown corpus {args.name!r}: use one of {', '.join(RECIPES)} or a path/folder/glob"
        )
    if docs is not None:
        if not docs:
            raise LstmscopeError(f"corpus {args.name!r} is empty on this machine")
        manifest = write_corpus(out, docs, recipe=name, extra=extra,
                                val_fraction=0.0 if name in RECORD_ONLY else 0.05)  # fmt: skip
    tr, va = manifest["train"], manifest["val"]
    print(f"wrote {out}/: train {tr['chars']:,} chars ({len(tr['documents'])} documents), "
          f"val {va['chars']:,} chars; sha256 {manifest['sha256'][:16]}")  # fmt: skip
    if name in RECORD_ONLY or va["chars"] < MIN_VAL_CHARS:
        # Nothing (or too little) held out to validate on: this corpus is for recording.
        if name not in RECORD_ONLY:
            print(f"note: the val split has {va['chars']:,} characters; `lstmscope train` needs "
                  f"{MIN_VAL_CHARS} to validate on (add text, or pass --val-data to train)")  # fmt: skip
        _next(["record", "demo", "--data", str(out), "--split", "train", "-o",
               f"stores/{out.name}"])  # fmt: skip
    else:
        _next(["train", "--data", str(out), "-o", f"runs/{out.name}"])
    return 0


# --- train / sample / info / compare -----------------------------------------------------------


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a character-level model")
    t.add_argument("--data", nargs="+", required=True, help="corpus folder, files, folders, globs")
    t.add_argument("--val-data", nargs="+",
                   help="validation text (default: the corpus's val split)")  # fmt: skip
    t.add_argument("-o", "--output", required=True, help="run directory")
    t.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn", "lstm-c"])
    t.add_argument("--output-kind", default="h", choices=["h", "c"],
                   help="what an LSTM layer passes on: h (recurrent vector) or c "
                   "(cell state)")  # fmt: skip
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--embed", type=int, default=64)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--forget-bias", type=float, default=1.0)
    t.add_argument("--seq-len", type=int, default=128)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    t.add_argument("--warmup-steps", type=int, default=50)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: off)")
    t.add_argument("--max-steps", type=int, default=2000)
    t.add_argument("--max-minutes", type=float, default=0.0)
    t.add_argument("--eval-every", type=int, default=200)
    t.add_argument("--save-minutes", type=float, default=5.0,
                   help="also save last.pt this often between evaluations "
                   "(0: only at them)")  # fmt: skip
    t.add_argument("--patience", type=int, default=0, help="early stop after N evals w/o gain")
    t.add_argument("--min-char-count", type=int, default=1, help="rarer characters become unknown")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    _add_device(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import numpy as np

    from lstmscope.model.cells import ModelConfig
    from lstmscope.text.corpus import load_train_val
    from lstmscope.text.vocab import Vocab
    from lstmscope.train.loop import TrainConfig, train

    train_src, text, val_text = load_train_val(args.data, args.val_data)
    run_dir = Path(args.output)
    if args.resume and (run_dir / "vocab.json").is_file():
        vocab = Vocab.load(run_dir / "vocab.json")  # the vocab must not change on resume
    else:
        vocab = Vocab.from_text(text, min_count=args.min_char_count)
    train_ids, val_ids = vocab.encode(text), vocab.encode(val_text)
    if len(val_ids) < MIN_VAL_CHARS:
        raise LstmscopeError(
            f"validation text is under {MIN_VAL_CHARS} characters ({len(val_ids)}); give more "
            "text or --val-data"
        )
    cell, output = args.cell, args.output_kind
    if cell == "lstm-c":
        cell, output = "lstm", "c"
    mcfg = ModelConfig(cell=cell, vocab_size=len(vocab), embed_dim=args.embed,
                       hidden_size=args.hidden, num_layers=args.layers, dropout=args.dropout,
                       forget_bias=args.forget_bias, output=output)  # fmt: skip
    tcfg = TrainConfig(seq_len=args.seq_len, batch_size=args.batch, lr=args.lr,
                       schedule=args.schedule, weight_decay=args.weight_decay,
                       grad_clip=args.clip, max_steps=args.max_steps,
                       max_minutes=args.max_minutes, eval_every=args.eval_every,
                       save_minutes=args.save_minutes,
                       patience=args.patience, seed=args.seed, bf16=args.bf16,
                       device=args.device, warmup_steps=args.warmup_steps)  # fmt: skip
    info = {"train": train_src.origin, "train_chars": len(train_ids), "val_chars": len(val_ids),
            "vocab_size": len(vocab),
            "unknown_val_chars": int(np.sum(val_ids == vocab.unk_id))}  # fmt: skip
    log.info("training %s on %s chars, validating on %s", mcfg, f"{len(train_ids):,}",
             f"{len(val_ids):,}")  # fmt: skip
    res = train(train_ids, val_ids, vocab, mcfg, tcfg, run_dir, resume=args.resume,
                progress=not args.quiet, data_info=info)  # fmt: skip
    print(f"stopped ({res.stopped}) at step {res.step}: best val {res.best_val_bpc:.4f} bpc; "
          f"wrote {run_dir}/ (best.pt, last.pt, log.csv, curve.html)")  # fmt: skip
    if res.stopped == "interrupted":
        print("next: resume with the same command plus --resume")
    else:
        # Record the held-out text: --val-data, a corpus folder's val split, or the files given.
        data = args.val_data or args.data
        _next(["sample", str(run_dir)],
              ["record", str(run_dir), "--data", *data, "-o", f"stores/{run_dir.name}"])  # fmt: skip
    return 0


def _add_sample(sub) -> None:
    s = sub.add_parser("sample", help="generate text from a model")
    s.add_argument("run", help="run directory, checkpoint file, or 'demo'")
    s.add_argument("--prime", default="\n")
    s.add_argument("--length", type=int, default=500)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    _add_device(s)
    s.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    from lstmscope.model.checkpoint import load_model, pick_device
    from lstmscope.model.sample import sample

    loaded = load_model(args.run, pick_device(args.device))
    text = sample(loaded, prime=args.prime, length=args.length, temperature=args.temperature,
                  top_k=args.top_k, seed=args.seed)  # fmt: skip
    sys.stdout.write(args.prime + text + "\n")
    return 0


def _add_info(sub) -> None:
    i = sub.add_parser("info", help="describe a model: config, val bpc, parameters per gate")
    i.add_argument("run", help="run directory, checkpoint file, or 'demo'")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    import pandas as pd

    from lstmscope.model.cells import count_parameters, parameter_breakdown
    from lstmscope.model.checkpoint import load_model

    loaded = load_model(args.run)
    cfg = loaded.config
    rows = pd.DataFrame(parameter_breakdown(loaded.model))
    total = count_parameters(loaded.model)
    if args.json:
        print(json.dumps({"config": cfg.to_dict(), "info": loaded.info, "parameters": total,
                          "breakdown": rows.to_dict("records")}, indent=1))  # fmt: skip
        return 0
    print(f"model: {loaded.source}")
    for k, v in cfg.to_dict().items():
        print(f"  {k:12s} {v}")
    for k in ("step", "best_val_bpc", "val_bpc"):
        if k in loaded.info:
            v = loaded.info[k]
            print(f"  {k:12s} {v:.4f}" if isinstance(v, float) else f"  {k:12s} {v}")
    by_corpus = loaded.info.get("val_bpc_by_corpus")
    if isinstance(by_corpus, dict) and by_corpus:  # export-model --data: the whole val split
        print("  val bpc by corpus (whole val split): "
              + ", ".join(f"{g} {v:.4f}" for g, v in by_corpus.items()
                        if isinstance(v, (int, float))))  # fmt: skip
    print(f"  vocab        {len(loaded.vocab)} characters (id 0 = unknown)")
    print("\nparameters by layer and gate:")
    recur = rows[rows.gate != ""]
    if len(recur):
        table = recur.pivot_table(index=["part", "gate"], columns="source", values="count",
                                  aggfunc="sum", sort=False)  # fmt: skip
        table["total"] = table.sum(axis=1)
        print(table.to_string())
    other = rows[rows.gate == ""]
    for _, r in other.iterrows():
        print(f"{r.part} {r.source}: {r['count']:,}")
    check = int(rows["count"].sum())
    print(f"\ntotal {total:,} parameters (breakdown sums to {check:,}"
          f"{', matches' if check == total else ', MISMATCH'})")  # fmt: skip
    return 0


def _add_compare(sub) -> None:
    cm = sub.add_parser("compare", help="train rnn/gru/lstm/lstm-c at one budget and compare")
    cm.add_argument("--data", nargs="+", required=True)
    cm.add_argument("--val-data", nargs="+")
    cm.add_argument("--cells", default="rnn,gru,lstm,lstm-c")
    cm.add_argument("--budget-minutes", type=float, default=5.0, help="training time per cell")
    cm.add_argument("--layers", type=int, default=2)
    cm.add_argument("--hidden", type=int, default=128, help="LSTM hidden size; sets the budget")
    cm.add_argument("--embed", type=int, default=64)
    cm.add_argument("--seq-len", type=int, default=128)
    cm.add_argument("--batch", type=int, default=32)
    cm.add_argument("--lr", type=float, default=2e-3)
    cm.add_argument("--max-steps", type=int, default=1_000_000)
    cm.add_argument("--eval-every", type=int, default=100)
    cm.add_argument("--seed", type=int, default=0)
    cm.add_argument("-o", "--output", required=True)
    _add_device(cm)
    cm.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from lstmscope.model.cells import ModelConfig
    from lstmscope.text.corpus import load_train_val
    from lstmscope.text.vocab import Vocab
    from lstmscope.train.compare import compare
    from lstmscope.train.loop import TrainConfig

    _, text, val_text = load_train_val(args.data, args.val_data)
    vocab = Vocab.from_text(text)
    base = ModelConfig(vocab_size=len(vocab), embed_dim=args.embed, hidden_size=args.hidden,
                       num_layers=args.layers)  # fmt: skip
    tcfg = TrainConfig(seq_len=args.seq_len, batch_size=args.batch, lr=args.lr,
                       max_steps=args.max_steps, max_minutes=args.budget_minutes,
                       eval_every=args.eval_every, seed=args.seed, device=args.device,
                       schedule="constant")  # fmt: skip
    table = compare(vocab.encode(text), vocab.encode(val_text), vocab, base, tcfg,
                    _csv_list(args.cells), args.output, progress=not args.quiet)  # fmt: skip
    print(table.to_string(index=False))
    print(
        f"wrote {args.output}/comparison.csv, comparison.md, comparison.html and one run per cell"
    )
    _next(["info", f"{args.output}/{table.cell[0]}"])
    return 0


# --- record ------------------------------------------------------------------------------------


def _add_record(sub) -> None:
    r = sub.add_parser("record", help="record every cell at every character into a store")
    r.add_argument("run", help="run directory, checkpoint file, or 'demo'")
    r.add_argument("--data", nargs="+", required=True, help="corpus folder, files, folders, globs")
    r.add_argument("--split", default="val", choices=["train", "val"],
                   help="which split of a corpus folder to record "
                   "(default: held-out val)")  # fmt: skip
    r.add_argument("-o", "--output", required=True, help="store folder")
    r.add_argument("--max-chars", type=int, default=0)
    r.add_argument("--streams", type=int,
                   help="parallel streams (1: exact pass; default 32, fewer for a short "
                   "text)")  # fmt: skip
    r.add_argument("--warmup", type=int,
                   help="cold characters per stream (default 1000, shorter for a short text); "
                   "at least half of the text must stay warm")  # fmt: skip
    r.add_argument("--kinds", help="e.g. h,c,i,f,g,o (default: all)")
    r.add_argument("--layers", help="e.g. 0,1 (default: all)")
    r.add_argument("--force", action="store_true", help="replace a different recording")
    r.add_argument("--if-missing", action="store_true", help="do nothing if the store exists")
    _add_device(r)
    r.set_defaults(func=cmd_record)


def cmd_record(args) -> int:
    from lstmscope.model.checkpoint import load_model, pick_device
    from lstmscope.store.recorder import record
    from lstmscope.text.corpus import load_record_text

    out = Path(args.output)
    if args.if_missing and (out / "meta.json").is_file():
        _next(["serve", str(out)], prefix=f"{out} already exists; ")
        return 0
    loaded = load_model(args.run, pick_device(args.device))
    text, docs = load_record_text(args.data, args.split, args.max_chars)
    summary = record(loaded, text, out, documents=docs, streams=args.streams, warmup=args.warmup,
                     kinds=_csv_list(args.kinds) if args.kinds else None,
                     layers=[int(v) for v in _csv_list(args.layers)] if args.layers else None,
                     force=args.force, progress=not args.quiet)  # fmt: skip
    if summary.unknown:
        print(f"note: {summary.unknown:,} characters were never seen in training; they were "
              "recorded as the unknown character")  # fmt: skip
    state = (
        "already complete"
        if summary.already_complete
        else (
            f"{summary.chars_per_s:,.0f} chars/s"
            + (f", resumed at {summary.resumed_from:,}" if summary.resumed_from else "")
        )
    )
    warm = 100 * (summary.n - summary.cold) / summary.n
    print(f"wrote {out}/: {summary.n:,} characters, {summary.bytes / 2**20:,.1f} MiB ({state}); "
          f"{summary.streams} streams, warm-up {summary.warmup:,}: {warm:.0f}% warm")  # fmt: skip
    _next(["serve", str(out)], ["detect", str(out), "-o", f"reports/{out.name}"])
    return 0


# --- export ------------------------------------------------------------------------------------


def _add_export(sub) -> None:
    e = sub.add_parser("export", help="standalone highlighted HTML")
    e.add_argument("store")
    e.add_argument("--neuron", action="append", required=True, help="e.g. L1.c.137 (repeatable)")
    e.add_argument("--range", help="START:STOP")
    e.add_argument("--find", help="regular expression; each match with its context")
    e.add_argument("--context", type=int, default=40)
    e.add_argument("--max-matches", type=int, default=50)
    e.add_argument("--card", action="store_true", help="the neuron card: stats and contexts")
    e.add_argument("--title")
    e.add_argument("--colormap")
    e.add_argument(
        "--scale", default="quantile",  # lstmscope.export.colors.SCALES (not imported: a fast start)
        choices=("quantile", "linear", "logit", "window", "diff", "detrend"),
        help="colour scale: quantile (rank among all values; default), linear (the value), logit "
        "(gates), window (rank in the exported range), diff (change from the previous character), "
        "detrend (minus a 65-character moving mean; a fitted line at the window edges)",
    )  # fmt: skip
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(func=cmd_export)


def _check_export_modes(args) -> None:
    """Refuse options an export mode would silently drop."""
    if args.card:
        if len(args.neuron) > 1:
            raise LstmscopeError(
                f"--card shows one neuron, got {len(args.neuron)} ({', '.join(args.neuron)}): "
                "export one card per neuron, or drop --card to colour the text by all of them"
            )
        extra = [f"--{o}" for o in ("find", "range") if getattr(args, o)]
        if extra:
            raise LstmscopeError(
                f"--card cannot be combined with {' or '.join(extra)}: the card shows the "
                "neuron's own top contexts; export the card and the text separately"
            )
    elif args.find and args.range:
        raise LstmscopeError(
            "--find searches the whole text and --range exports one stretch of it: give one"
        )


def _store_neuron(store, nid: str):
    from lstmscope.names import check_neuron

    return check_neuron(nid, store.layers, store.kinds, store.hidden_size, f"store {store.path}")


def cmd_export(args) -> int:
    from lstmscope import export
    from lstmscope.analysis.contexts import contexts as neuron_contexts
    from lstmscope.store.reader import ActivationStore

    _check_export_modes(args)
    store = ActivationStore.open(args.store)
    neurons = [str(_store_neuron(store, nid)) for nid in args.neuron]
    if args.card:
        contexts = neuron_contexts(store, neurons[0])
        html = export.export_card(store, neurons[0], contexts, colormap=args.colormap,
                                  scale=args.scale)  # fmt: skip
    elif args.find:
        html = export.export_find(store, neurons, args.find, context=args.context,
                                  max_matches=args.max_matches, title=args.title,
                                  colormap=args.colormap, scale=args.scale)  # fmt: skip
    else:
        if not args.range:
            raise LstmscopeError("give --range A:B, --find REGEX or --card")
        try:
            a, b = (int(v) for v in args.range.split(":"))
        except ValueError:
            raise LstmscopeError(
                f"--range {args.range!r}: expected START:STOP, e.g. 0:4000"
            ) from None
        html = export.export_range(store, neurons, a, b, title=args.title, colormap=args.colormap,
                                   scale=args.scale)  # fmt: skip
    path = export.write_html(args.output, html)
    print(f"wrote {path} ({len(html.encode()) / 1024:,.0f} KiB); open it in any browser, offline")
    return 0


def _add_export_model(sub) -> None:
    em = sub.add_parser("export-model", help="package a run pickle-free (safetensors)")
    em.add_argument("run")
    em.add_argument("-o", "--output", required=True)
    em.add_argument("--data", help="corpus folder: report val bpc per source corpus")
    em.add_argument("--eval-chars", type=int, default=400_000)
    em.set_defaults(func=cmd_export_model)


def cmd_export_model(args) -> int:
    from lstmscope.model.checkpoint import export_safetensors, load_model
    from lstmscope.train.evaluate import val_bpc_by_corpus

    loaded = load_model(args.run)
    extra: dict = {}
    if args.data:
        folder = Path(args.data)
        if not (folder / "manifest.json").is_file():
            raise LstmscopeError(
                f"--data {folder}: not a corpus folder (no manifest.json); build one with "
                "'lstmscope corpus build'"
            )
        bpc, manifest = val_bpc_by_corpus(loaded, folder, args.eval_chars)
        extra["val_bpc_by_corpus"] = bpc
        extra["corpus_sha256"] = manifest.get("sha256")
    path = export_safetensors(args.run, args.output, extra)
    size = sum(p.stat().st_size for p in Path(args.output).iterdir())
    print(f"wrote {args.output}/ ({size / 2**20:.1f} MiB): {path.name}, config.json, vocab.json, "
          f"info.json {extra.get('val_bpc_by_corpus', '')}")  # fmt: skip
    _next(["info", str(args.output)])
    return 0


# --- detect / serve ----------------------------------------------------------------------------


def _add_detect(sub) -> None:
    dt = sub.add_parser("detect", help="find the interpretable cells and write a report")
    dt.add_argument("store")
    dt.add_argument("--features", help="comma-separated built-in features (default: the main ones)")
    dt.add_argument("--feature", action="append", help="a user feature 'name=REGEX' (repeatable)")
    dt.add_argument("--top", type=int, default=10)
    dt.add_argument("-o", "--output", required=True)
    dt.set_defaults(func=cmd_detect)


def cmd_detect(args) -> int:
    from lstmscope.analysis.features import parse_feature_spec
    from lstmscope.detect import detect
    from lstmscope.store.reader import ActivationStore

    store = ActivationStore.open(args.store)
    user = [parse_feature_spec(spec) for spec in args.feature or ()]
    report = detect(store, _csv_list(args.features) if args.features else None, user,
                    top=args.top, out=args.output, progress=not args.quiet)  # fmt: skip
    if len(report.summary):
        best = report.summary.groupby("feature").head(1)
        cols = [
            c
            for c in ("feature", "neuron", "score", "ap", "auroc", "f1", "iou", "r")
            if c in best.columns
        ]
        print(best[cols].to_string(index=False))
    else:
        print("no feature could be ranked on this store (see the skipped features below)")
    for nm, why in report.skipped.items():
        print(f"skipped {nm}: {why}")
    print(f"wrote {args.output}/ (report.html, summary.csv); open report.html in a browser")
    _next(["serve", str(args.store)])
    return 0


def _add_serve(sub) -> None:
    sv = sub.add_parser("serve", help="the dashboard")
    sv.add_argument("store")
    sv.add_argument("--port", type=int, default=5006)
    sv.add_argument("--address", default="127.0.0.1", help="listen address (default: local only)")
    sv.add_argument("--allow-origin", action="append", help="extra websocket origin HOST:PORT")
    sv.add_argument("--neuron", help="open on this neuron (default: the best cell found)")
    sv.add_argument("--show", action="store_true", help="open a browser tab")
    sv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from lstmscope.server.serve import serve

    serve(args.store, port=args.port, address=args.address, allow_origin=args.allow_origin or (),
          show=args.show, initial=args.neuron)  # fmt: skip
    return 0


# --- the parser and the entry point ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lstmscope", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    for add in (_add_corpus, _add_train, _add_sample, _add_compare, _add_record, _add_export,
                _add_export_model, _add_detect, _add_serve, _add_info):  # fmt: skip
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (LstmscopeError, ValueError, FileNotFoundError, PermissionError) as e:
        if args.verbose:
            raise
        print(f"lstmscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lstmscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only folder: say which file and why
        where = f" ({e.filename})" if e.filename else ""
        print(f"lstmscope {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
