"""The organizers' commands: bundle, worker, doctor, estimate, checkpoints fetch/verify, zoo build.

Each handler turns its options into a call of the organizer's package (`organizer/`,
`embedded/`) and prints what comes back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..embedded.sets import DEFAULT_PRESET, PRESETS, ROOT, set_folder
from ..errors import UserError
from ..formats.reference import CUSTOM_CODE_POLICIES
from ..organizer.container import GPU_DEVICE
from ..sandboxed.sandbox import CHOICES
from .options import add_command, add_set_options


def _bundle(args: argparse.Namespace) -> int:
    from datetime import datetime

    from ..embedded.sets import ensure_built
    from ..formats.alignment import read_alignment
    from ..formats.series import E2LM_SERIES, read_series
    from ..organizer.bundle import BundleOptions, real_bundle, zoo_bundle

    try:
        start = datetime.fromisoformat(args.start) if args.start else None
    except ValueError:
        raise UserError(f"--start {args.start}: write a date such as 2026-03-02 or '2026-03-02 12:00'") from None
    out = args.out or Path("dist") / f"e2lmc-bundle-{args.checkpoints}.zip"
    alignment = read_alignment(args.alignment) if args.alignment else None
    options = BundleOptions(start=start, queue=args.queue, time_limit=args.time_limit, alignment=alignment,
                            custom_metric_code=args.custom_metric_code,
                            require_sandbox=args.require_sandbox, allow_local_image=args.allow_local_image,
                            hide_output=args.checkpoints == "e2lm" if args.hide_output is None else args.hide_output,
                            **({"docker_image": args.docker_image} if args.docker_image else {}))
    started = time.perf_counter()
    if args.checkpoints == "zoo":
        misplaced = [f"--{k.replace('_', '-')}" for k in ("series", "web_model", "data")
                     if getattr(args, k)]
        if misplaced:
            raise UserError(f"{', '.join(misplaced)}: only for --checkpoints e2lm (the zoo bundle carries the "
                            "embedded set inside)")
        warnings = zoo_bundle(ensure_built(args.preset, args.zoo)[0], out, options)
    else:
        series = read_series(args.series or E2LM_SERIES, args.web_model)
        warnings = real_bundle(series, out, options, args.data)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s; "
          "it passes every Codabench bundle rule the builder checks")
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from ..formats.series import E2LM_SERIES, read_series
    from ..organizer.placement import describe, fetch, verify_placed

    if args.checkpoints_command == "verify":
        print(f"{args.data}: {describe(verify_placed(args.data))}, all complete")
        return 0
    series_file = args.series or E2LM_SERIES
    series = read_series(series_file, args.web_model)
    sizes = fetch(series, Path(series_file).parent, args.to, offline=True if args.offline else None,
                  cache_dir=args.cache_dir, workers=args.workers)
    print(f"placed {describe(sizes)} in {args.to}, with its manifest.yaml; copy the folder to "
          "$HOST_DIRECTORY/data on every GPU worker (docs/organizers.md)")
    return 0


def _worker(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from ..organizer.worker import WorkerOptions, run_submission

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="e2lmc-worker-"))
    options = WorkerOptions(container=not args.no_container, image=args.image,
                            gpus=args.gpus or args.gpu_device is not None,
                            gpu_device=args.gpu_device or GPU_DEVICE, data=args.data, network=args.network)
    _, scoring = run_submission(args.submission, args.bundle, args.phase, workdir, options)
    scores = scoring.output / "scores.json"
    if scoring.exit_code != 0 or not scores.is_file():
        print(f"the scoring step failed (exit code {scoring.exit_code}): the submission would be marked Failed; "
              f"its output is in {scoring.output}")
        return 1
    print(json.dumps(json.loads(scores.read_text()), indent=1))
    print(f"scores: {scores}\ndetailed results: {scoring.output / 'detailed_results.html'}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from ..formats.series import E2LM_SERIES, SERIES_FILE, read_series
    from ..organizer.doctor import DoctorOptions, doctor, write_probe
    from ..organizer.worker_env import read_worker_env

    if args.probe:  # inside the container the doctor starts: this host's view, for the doctor outside
        write_probe(args.probe)
        return 0
    env = read_worker_env(args.worker_env)
    data = args.data or (env.data if args.worker_env else None)
    series = None
    if args.series or args.web_model:
        series = read_series(args.series or E2LM_SERIES, args.web_model)
    elif data is not None and (data / SERIES_FILE).is_file():  # the series `checkpoints fetch` placed
        series = read_series(data / SERIES_FILE)
    return doctor(DoctorOptions(image=args.image, container=not args.no_container,
                                gpus=args.gpus or args.gpu_device is not None or env.use_gpu,
                                gpu_device=args.gpu_device or env.gpu_device, data=data, series=series,
                                network_disabled=env.network_disabled, required=args.require_sandbox))


def _zoo_build(args: argparse.Namespace) -> int:
    from ..embedded.zoo import build, format_summary

    out = set_folder(args.preset, args.out)
    summaries = build(args.preset, out, seed=args.seed)
    print(format_summary(summaries, out))
    print(f"manifest: {out / 'manifest.yaml'}  reference data: {out / 'reference'}  sample tasks: {out / 'tasks'}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from ..formats.series import E2LM_SERIES
    from ..organizer.estimate import estimate_submission

    estimate_submission(args.submission, args.series or E2LM_SERIES, args.web_model, args.data, args.tokenizer,
                        args.device)
    return 0


def _add_series_options(p: argparse.ArgumentParser, prefix: str = "", default: str = "") -> None:
    p.add_argument("--series", type=Path, help=f"{prefix}the checkpoint series file (default: {default}the real "
                                               "competition's, e2lmc/data/series/e2lm.yaml)")
    p.add_argument("--web-model", help=f"{prefix}hub repo of the hidden web-only model, if the series file leaves it "
                                       "out")


def _add_gpu_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu-device", metavar="CDI_NAME",
                   help=f"the CDI device a GPU request names, as the worker's GPU_DEVICE (default: {GPU_DEVICE}; "
                        "implies --gpus)")


def add_organizer_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "bundle",
        help="build the Codabench competition bundle zip (checked against Codabench's rules)",
        description="Lay out competition.yaml, pages, the three phases' programs, manifests and reference data "
        "and the starting kit, zip them and check the zip against every Codabench bundle rule; an invalid "
        "bundle is not written.",
        examples=["e2lmc bundle --checkpoints zoo --docker-image ghcr.io/ORG/e2lmc/worker:TAG-cpu --out bundle.zip",
                  "e2lmc bundle --checkpoints zoo --allow-local-image      # a rehearsal: e2lmc worker on this host",
                  "e2lmc bundle --checkpoints e2lm --data /srv/e2lm-data --queue VHOST --docker-image "
                  "REGISTRY/e2lmc/worker:TAG"],
    )
    p.add_argument("--checkpoints", choices=["zoo", "e2lm"], default="zoo",
                   help="zoo: ship the embedded checkpoint set inside (self-contained, CPU queue); e2lm: manifests "
                   "naming the real tiiuae/dense-* repos (GPU queue) (default: %(default)s)")
    p.add_argument("--out", type=Path, help="the zip to write (default: dist/e2lmc-bundle-CHECKPOINTS.zip)")
    add_set_options(p)  # zoo: which embedded set, and where
    p.add_argument("--start", help="move the schedule so that the warm-up phase opens at this date (UTC)")
    p.add_argument("--time-limit", type=int,
                   help="seconds per step (default: 600 for zoo, the free queue's cap; for e2lm, estimated per phase "
                        "from the checkpoints in --data)")
    p.add_argument("--queue", help="e2lm: the vhost (a UUID) of your Codabench queue of GPU workers "
                                   "(Resources -> Queues)")
    p.add_argument("--docker-image", help="the worker image, pushed where the workers can pull it (docker/README.md)")
    p.add_argument("--allow-local-image", action="store_true",
                   help="name the local tag docker/build.sh gives (e2lmc/worker:VERSION-cpu for zoo, "
                        "e2lmc/worker:VERSION for e2lm): a rehearsal on a worker that has the image")
    p.add_argument("--require-sandbox", choices=CHOICES, default="landlock",
                   help="the weakest isolation of submission code the ingestion programs accept; a worker that "
                        "cannot provide it fails the submission with one sentence (default: %(default)s; see "
                        "docs/security.md)")
    p.add_argument("--hide-output", action=argparse.BooleanOptionalAction, default=None,
                   help="hide the steps' logs from participants (default: on for e2lm, whose hidden checkpoints a "
                        "submission's own program could read and print; off for zoo; see docs/security.md)")
    p.add_argument("--alignment", type=Path,
                   help="a YAML file holding the reference data's alignment block: every phase asks that LLM judge "
                        "whether the task is scientific (docs/organizers.md; needs the network in the scoring step)")
    p.add_argument("--custom-metric-code", choices=CUSTOM_CODE_POLICIES, default="flag",
                   help="a task whose metric is computed by its own code (process_results, !function metrics, "
                        "aggregations or filters) rather than lm-eval's: allow it, flag it (the leaderboard's "
                        "custom_code column and the report list it for review) or refuse it (invalid) (default: "
                        "%(default)s; see docs/security.md)")
    _add_series_options(p, "e2lm: ")
    p.add_argument("--data", type=Path,
                   help="e2lm: the folder `e2lmc checkpoints fetch` placed, checked against the series and used to "
                        "size each phase's time limit")
    p.set_defaults(func=_bundle)

    p = add_command(
        sub, "worker",
        help="run a submission on one phase of a bundle exactly as Codabench's compute worker would",
        description="Prediction step (the phase's ingestion program) then scoring step, with Codabench's "
        "mounts, metadata.yaml command handling, time limit and metadata file; in the bundle's Docker image, "
        "the container created as Codabench's compute worker creates it (docker SDK), or with --no-container "
        "as plain processes over the same layout.",
        examples=["e2lmc worker my_task/ --bundle bundle.zip --phase development --no-container",
                  "e2lmc worker my_task/ --bundle bundle.zip --phase final --data /srv/e2lm-data --gpus"],
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--bundle", type=Path, required=True, help="the competition bundle zip (or its unpacked folder)")
    p.add_argument("--phase", required=True, help="warm-up, development or final")
    p.add_argument("--no-container", action="store_true", help="run the steps as plain processes (no Docker)")
    p.add_argument("--image", help="the Docker image (default: the bundle's docker_image)")
    p.add_argument("--gpus", action="store_true",
                   help="request the GPUs through CDI, as Codabench's USE_GPU=true does")
    _add_gpu_device_option(p)
    p.add_argument("--network", action="store_true",
                   help="leave the containers' network on (Codabench's default unless the worker sets "
                        "COMPETITION_CONTAINER_NETWORK_DISABLED=true; off here by default)")
    p.add_argument("--data", type=Path, help="a host folder seen read-only at /app/data")
    p.add_argument("--workdir", type=Path, help="an empty folder for the steps' layout (default: a new temp folder)")
    p.set_defaults(func=_worker)

    p = add_command(
        sub, "doctor", help="check a worker host before opening a competition: sandbox, engine, GPUs, data, disk",
        description="One line per check and a verdict (exit 0 ready, 1 not): the kernel's Landlock, the sandbox "
        "level here and in a container of the worker image started with Codabench's options (the engine's "
        "seccomp profile may refuse Landlock), the GPUs that container sees through CDI, its network, the data "
        "folder against the series and the free disk.",
        examples=["e2lmc doctor                                   # the CPU image, e2lmc/worker:VERSION-cpu",
                  "e2lmc doctor --gpus --image REGISTRY/e2lmc/worker:TAG --data /srv/e2lm-data "
                  "--worker-env /opt/codabench/.env"],
    )
    p.add_argument("--image", help="the worker image (default: docker/build.sh's local tag, the GPU one with --gpus)")
    p.add_argument("--gpus", action="store_true", help="request the GPUs as Codabench's USE_GPU=true does; fail "
                                                       "without one")
    _add_gpu_device_option(p)
    p.add_argument("--data", type=Path, help="the worker's $HOST_DIRECTORY/data: checked against the series, its "
                                             "disk's free space against what is still to place (default: from "
                                             "--worker-env)")
    _add_series_options(p, "with --data: ", default="the one `checkpoints fetch` placed in --data, else ")
    p.add_argument("--worker-env", type=Path, help="the compute worker's .env: its USE_GPU, GPU_DEVICE, "
                                                   "HOST_DIRECTORY and COMPETITION_CONTAINER_NETWORK_DISABLED decide "
                                                   "what is checked (default: this environment's)")
    p.add_argument("--require-sandbox", choices=CHOICES, default="landlock",
                   help="the bundle's --require-sandbox (default: %(default)s)")
    p.add_argument("--no-container", action="store_true", help="this host's checks only (no engine)")
    p.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # inside the doctor's container
    p.set_defaults(func=_doctor)

    p = add_command(
        sub, "estimate", help="predict a submission's GPU time per phase: tokens after sharing, FLOPs, hours, limits",
        description="Plan the submission, count the tokens the engine computes per checkpoint with the series' "
        "tokenizer, and predict each phase's prediction-step time from the throughput measured on GPUs "
        "(docs/engine.md), with the execution_time_limit that would cover it.",
        examples=["e2lmc estimate my_task/", "e2lmc estimate my_task/ --data /srv/e2lm-data --device h200"],
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    _add_series_options(p)
    p.add_argument("--data", type=Path, help="the placed checkpoints (`e2lmc checkpoints fetch`): their sizes, "
                                             "tokenizer and context (default: sizes from the series' size labels)")
    p.add_argument("--tokenizer", type=Path, help="a checkpoint folder of the series, whose tokenizer counts the "
                                                  "tokens and whose context cuts the requests (default: the first "
                                                  "placed one; else the embedded set's, scaled to real tokens)")
    p.add_argument("--device", choices=["h100", "h200"], default="h100", help="(default: %(default)s)")
    p.set_defaults(func=_estimate)

    checkpoints = sub.add_parser(
        "checkpoints", help="place a checkpoint series on the workers (fetch) and check a placed folder (verify)",
        description="Download a series' checkpoints and lay them out as the bundle's ingestion reads them.",
    )
    checkpoints_sub = checkpoints.add_subparsers(dest="checkpoints_command", required=True, metavar="COMMAND")
    p = add_command(
        checkpoints_sub, "fetch",
        help="download exactly the series' iter_XXXXXXX subfolders and place them under a data folder",
        description="Download the series' checkpoints with huggingface_hub (HF_TOKEN from the environment; "
        "resumable; offline, or with HF_HUB_OFFLINE=1, from the Hugging Face cache alone), place each as "
        "DIR/<model id>/iter_XXXXXXX, verify it and write DIR/manifest.yaml. Copy DIR to $HOST_DIRECTORY/data "
        "on every GPU worker.",
        examples=["e2lmc checkpoints fetch --to /srv/e2lm-data",
                  "e2lmc checkpoints fetch --to /srv/e2lm-data --offline"],
    )
    _add_series_options(p)
    p.add_argument("--to", type=Path, required=True, help="the data folder to place the checkpoints in")
    p.add_argument("--offline", action="store_true", help="read the Hugging Face cache only, download nothing")
    p.add_argument("--cache-dir", type=Path, help="the Hugging Face cache (default: HF_HOME's)")
    p.add_argument("--workers", type=int, default=8, help="files downloaded in parallel (default: %(default)s)")
    p.set_defaults(func=_checkpoints)
    p = add_command(checkpoints_sub, "verify", help="re-check every checkpoint of a placed data folder",
                    description="Config, complete safetensors weights and tokenizer of every checkpoint the "
                    "folder's manifest.yaml lists.", examples=["e2lmc checkpoints verify /srv/e2lm-data"])
    p.add_argument("data", type=Path, help="the data folder (e.g. $HOST_DIRECTORY/data)")
    p.set_defaults(func=_checkpoints)

    zoo = sub.add_parser(
        "zoo", help="the embedded checkpoint set (small models trained on a synthetic science world)",
        description="Build the embedded checkpoint set.",
    )
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="COMMAND")
    p = add_command(
        zoo_sub, "build", help="train the checkpoint set (resumable: finished models are skipped)",
        description="Train seven small Llama models (3 sizes x 2 architectures on the science mixture, the "
        "smallest arch1 on web-only text) and write their checkpoints, the checkpoint manifest, the reference "
        "data and the two sample tasks. 'tiny' takes seconds (tests); 'default' about 20 minutes on two idle cores.",
        examples=["e2lmc zoo build", "e2lmc zoo build --preset tiny --out /tmp/tiny"],
    )
    p.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET, help="(default: %(default)s)")
    p.add_argument("--out", type=Path, help=f"output directory (default: {ROOT}/PRESET)")
    p.add_argument("--seed", type=int, default=0, help="world, data and initialisation seed (default: %(default)s)")
    p.set_defaults(func=_zoo_build)
