"""`modelctl render kubernetes PATH`: the flags, and what the command prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.errors import InvalidManifests
from controller.kubernetes.options import RenderOptions
from controller.kubernetes.render import render, stream, write


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `render kubernetes` to the CLI's subcommands."""
    render_cmd = sub.add_parser("render", help="render manifests for another target (kubernetes)")
    targets = render_cmd.add_subparsers(required=True, metavar="TARGET")
    p = targets.add_parser(
        "kubernetes",
        help="one YAML file per object plus kustomization.yaml (docs/kubernetes.md)",
        description="Render manifests as Kubernetes objects: a Deployment and a headless Service per "
        "model, the gateway (Deployment, Service, PodDisruptionBudget, models ConfigMap). Fields that "
        "mean nothing on a cluster are named on stderr, one line each.",
    )
    p.add_argument("path", type=Path, help="manifest folder or file")
    p.add_argument("-o", "--output", type=Path, help="folder to write (default: one YAML stream on stdout)")
    p.add_argument("--namespace", help="namespace of every object (and of the kustomization)")
    p.add_argument("--model-root", type=Path, help="a local copy of the model root: check and size weights")
    p.add_argument("--models-claim", default="modelctl-models", help="PVC holding the model root")
    p.add_argument("--host-model-root", help="opt-in: weights from this node folder (hostPath), not the PVC")
    p.add_argument("--secret", default="modelctl-secrets", help="Secret that ${NAME} env values refer to")
    p.add_argument("--cpus", type=int, default=2, help="cores per CPU replica (default 2)")
    p.add_argument("--gateway-image", default="modelctl/modelctl:local", help="the gateway's image")
    p.add_argument("--inference-pool", action="store_true", help="also an InferencePool per vLLM model")
    p.add_argument("--epp-port", type=int, default=9002, help="port of the endpoint picker pools name")
    p.add_argument("--cache-size", default="100Gi", help="size of the hub cache PVC (hf:// models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = RenderOptions(
        namespace=args.namespace,
        models_claim=args.models_claim,
        host_model_root=args.host_model_root,
        secret=args.secret,
        cpus=args.cpus,
        gateway_image=args.gateway_image,
        inference_pool=args.inference_pool,
        epp_port=args.epp_port,
        cache_size=args.cache_size,
    )
    try:
        rendering = render(args.path, options, model_root=args.model_root)
    except InvalidManifests as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {args.path}", file=sys.stderr)
        return 1
    for note in rendering.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output is None:
        print(stream(rendering), end="")
        return 0
    written, removed = write(rendering, args.output)
    print(
        f"{len(rendering.files)} files in {args.output} ({len(written)} written, {len(removed)} removed); "
        f"kubectl apply -k {args.output}",
        file=sys.stderr,
    )
    return 0
