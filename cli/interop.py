"""`sft-wizard export`, `accelerate`, `merge`, `chat`, `push` and `trackers`: back to the ecosystem.

Thin faces over ``core.export``, ``core.distributed``, ``core.merge``, ``core.chat``,
``core.hub`` and ``core.trackers``; their errors are UserErrors: one sentence, exit 2.
JSON schemas: docs/cli-interop.md.
"""

from __future__ import annotations

import argparse
import sys

from sftwizard.core import presets

from .common import UserError, add_json_flag, add_set_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a config that `trl sft --config OUT.yaml` runs as is (+ its data)")
    p.add_argument("preset", help="a preset YAML file, or the name of a shipped/user preset")
    p.add_argument("--to", dest="target", required=True, choices=["trl"], help="the tool to export to")
    p.add_argument("out", metavar="OUT.yaml", help="the config to write; the data goes to OUT.data/")
    add_set_flag(p)
    p.add_argument("--data", dest="data_mode", choices=["auto", "messages", "tokens"], default="auto",
                   help="rows TRL renders itself (messages) or the wizard's tokens and masks (tokens); "
                        "auto: messages when TRL would train the same tokens")
    add_json_flag(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("accelerate", help="the accelerate config and `accelerate launch` command(s) for a preset "
                                          "(multi-GPU / multi-node)")
    p.add_argument("preset")
    add_set_flag(p)
    p.add_argument("--config-out", metavar="FILE", help="write the accelerate config here")
    p.add_argument("--run-dir", metavar="DIR", default="RUN_DIR",
                   help="the run directory the commands train (same path on every machine)")
    add_json_flag(p)
    p.set_defaults(func=cmd_accelerate)

    p = sub.add_parser("merge", help="merge a LoRA/QLoRA run's adapter into its base; save model + tokenizer + template")
    p.add_argument("run", help="a run id (see `sft-wizard runs`) or run directory")
    p.add_argument("--out", metavar="DIR", help="where to save (default: RUN_DIR/merged)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"],
                   help="dtype of the base loaded for merging (default: the training dtype; bf16/fp16 for QLoRA)")
    add_json_flag(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("chat", help="chat with a trained run or a model folder, with its training template")
    p.add_argument("target", metavar="RUN|PATH")
    p.add_argument("--prompt", help="one message; answer it and exit (no prompt: interactive)")
    p.add_argument("--system", help="a system message to start the conversation with")
    p.add_argument("--compare", action="store_true",
                   help="answer the run's held-out eval prompts with the base and the tuned model, side by side")
    p.add_argument("--limit", type=int, default=5, help="eval prompts for --compare (default 5)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    add_json_flag(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("push", help="push a run's merged model or adapter to the Hugging Face Hub (needs a login)")
    p.add_argument("run")
    p.add_argument("--repo", required=True, metavar="ID", help="the Hub repository, e.g. user/my-model")
    p.add_argument("--what", choices=["auto", "adapter", "merged"], default="auto",
                   help="auto: the merged model if `merge` made one, else the adapter (or full model)")
    p.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    add_json_flag(p)
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("trackers", help="report_to choices installed here (tensorboard, trackio, wandb, none)")
    add_json_flag(p)
    p.set_defaults(func=cmd_trackers)


def cmd_export(args: argparse.Namespace) -> int:
    from sftwizard.core.export import build_trl_export

    path, cfg = presets.load(args.preset, args.overrides)
    result = build_trl_export(cfg, args.out, data_mode=args.data_mode, source=str(path))
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"wrote {result.config_path}")
    print(f"  data ({result.data_mode}): {result.data_dir}  — {result.train_rows} train / {result.eval_rows} eval rows")
    if result.chat_template_path:
        print(f"  chat template: {result.chat_template_path}")
    for line in result.differences:
        print(f"  differs: {line}")
    print(f"run it with: trl sft --config {result.config_path}")
    return 0


def cmd_accelerate(args: argparse.Namespace) -> int:
    from sftwizard.core import distributed

    _, cfg = presets.load(args.preset, args.overrides)
    machine = distributed.Machine.detect()
    config_file = args.config_out or "accelerate.yaml"
    conf = distributed.accelerate_config(cfg, machine, check=False)
    if args.config_out:
        distributed.write_accelerate_config(cfg, args.config_out, machine, check=False)
    commands = distributed.multinode_commands(cfg, args.run_dir, config_file)
    warning = None
    try:
        distributed.check_launchable(cfg, machine)
    except distributed.DistributedError as exc:
        warning = f"not launchable on this machine: {exc}"
    if args.json:
        print_json({
            "summary": distributed.describe(cfg, machine),
            "config_file": args.config_out,
            "accelerate_config": conf,
            "commands": [c.to_dict() for c in commands],
            "warning": warning,
        })
        return 0
    s = distributed.describe(cfg, machine)
    print(f"strategy {s['strategy']} (sharded: {s['shards']}); {s['processes_per_machine']} process(es) x "
          f"{s['num_machines']} machine(s) = world size {s['world_size']}")
    if args.config_out:
        print(f"wrote {args.config_out}")
    for c in commands:
        label = f"machine {c.machine_rank}" + (" (main)" if c.machine_rank == 0 else "")
        print(f"{label}: {c.shell}")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from sftwizard.core.merge import merge_run

    out = merge_run(args.run, args.out, dtype=args.dtype)
    if args.json:
        print_json({"merged_dir": str(out)})
    else:
        print(f"merged model saved to {out}")
    return 0


def _print_reply(label: str, reply) -> None:
    flag = "" if reply.stopped else "   [no end-of-turn: it ran to the token limit]"
    print(f"{label}> {reply.text}{flag}")


def cmd_chat(args: argparse.Namespace) -> int:
    from sftwizard.core import chat

    if args.compare:
        return _chat_compare(args)
    model = chat.load_chat_model(args.target)
    start = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        messages = start + [{"role": "user", "content": args.prompt}]
        reply = model.generate(messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        report = chat.stop_check([reply], model, args.max_new_tokens)
        if args.json:
            print_json({"model": model.description, "messages": messages, "reply": reply.to_dict(),
                        "stop_check": report.to_dict()})
        else:
            _print_reply("model", reply)
            if not report.ok:
                print(f"warning: {report.message}", file=sys.stderr)
        return 0
    if args.json:
        raise UserError("--json needs --prompt or --compare (the interactive chat has no JSON form)")
    print(f"chatting with {model.description} — /reset clears the conversation, /quit or Ctrl-D leaves",
          file=sys.stderr)
    messages = list(start)
    while True:
        try:
            text = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text.strip() in ("/quit", "/exit"):
            return 0
        if text.strip() == "/reset":
            messages = list(start)
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        reply = model.generate(messages, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        _print_reply("model", reply)
        messages.append({"role": "assistant", "content": reply.text})


def _chat_compare(args: argparse.Namespace) -> int:
    from sftwizard.core import chat
    from sftwizard.core.merge import run_artifacts

    base, tuned = chat.load_compare_pair(args.target)  # an adapter run: one copy, adapter on and off
    cfg = run_artifacts(args.target).cfg
    prompts = chat.eval_prompts(cfg, args.limit)
    rows = chat.compare(base, tuned, prompts, max_new_tokens=args.max_new_tokens)
    base_stop = chat.stop_check([r.base for r in rows], base, args.max_new_tokens)
    tuned_stop = chat.stop_check([r.tuned for r in rows], tuned, args.max_new_tokens)
    if args.json:
        print_json({"base": base.description, "tuned": tuned.description,
                    "comparisons": [r.to_dict() for r in rows],
                    "stop_check": {"base": base_stop.to_dict(), "tuned": tuned_stop.to_dict()}})
        return 0
    for i, row in enumerate(rows, 1):
        print(f"[{i}] {chat.Prompt(row.prompt, row.reference).last_user}")
        if row.reference is not None:
            print(f"    expected> {row.reference}")
        _print_reply("    base    ", row.base)
        _print_reply("    tuned   ", row.tuned)
    print(f"stop check — base: {base_stop.message}")
    print(f"stop check — tuned: {tuned_stop.message}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from sftwizard.core.hub import push

    result = push(args.run, args.repo, what=args.what, private=not args.public)
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"pushed the {result.what} model from {result.folder} to {result.url}")
    return 0


def cmd_trackers(args: argparse.Namespace) -> int:
    from sftwizard.core.trackers import TRACKERS, available_trackers

    have = available_trackers()
    if args.json:
        print_json({"available": have, "known": list(TRACKERS) + ["none"]})
        return 0
    for name in list(TRACKERS) + ["none"]:
        print(f"{name:<12} {'installed' if name in have else 'not installed (pip install ' + name + ')'}")
    return 0
