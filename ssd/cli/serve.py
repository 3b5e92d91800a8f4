"""Serve an exported model (any format, see detect.py --model) over HTTP (POST /detect, GET /health, TensorFlow Serving's
POST /v1/models/ssd:predict), or post an image to one.

    python tools/serve.py --model export/frozen_inference_graph.pb [--port 8080] [--max-bytes 10MB] [--max-pixels 40M]
    curl --data-binary @img.jpg http://127.0.0.1:8080/detect
    python tools/serve.py --post img.jpg [--url http://127.0.0.1:8080] [--threshold 0.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssd.cli import add_model_arguments, configure_logging
from ssd.cli.precision import load_chosen_model
from ssd.deploy.http_limits import ServerLimits
from ssd.deploy.tf_serving import DEFAULT_MODEL_NAME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, required=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default: 8080)")
    p.add_argument("--max-bytes", default="10MB", help="largest accepted body, e.g. 10MB, 512KiB (default: 10MB)")
    limits = ServerLimits()
    p.add_argument("--max-pixels", default=str(limits.max_pixels),
                   help="largest width x height an image header may declare, e.g. 40M, 12000000; checked "
                        "before decoding (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=limits.max_connections,
                   help="open connections; more get 503 (default: %(default)s)")
    p.add_argument("--decode-slots", type=int, default=limits.decode_slots,
                   help="images decoded / run at once, the bound on decoded memory (default: %(default)s)")
    p.add_argument("--head-timeout", type=float, default=limits.head_timeout,
                   help="seconds for a request line + headers, and keep-alive idle time (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=limits.body_timeout,
                   help="seconds for a whole request body (default: %(default)s)")
    p.add_argument("--idle-timeout", type=float, default=limits.idle_timeout,
                   help="longest pause inside a request body (default: %(default)s)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                   help="model name of the TensorFlow Serving API, /v1/models/NAME:predict (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow threads per graph call; 0 lets TensorFlow choose (default: 0)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="default score threshold of replies; ?threshold= overrides it per request (default: 0.5)")
    p.add_argument("--labels", type=Path, help="class names, one per line (default: labels.txt beside the model)")
    p.add_argument("--post", type=Path, metavar="IMAGE", help="client mode: send IMAGE to --url and print the reply")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="client mode: server URL (default: %(default)s)")
    return p


def post(args: argparse.Namespace) -> int:
    from ssd.deploy.client import post_image

    if not args.post.is_file():
        print(f"error: image {args.post} does not exist", file=sys.stderr)
        return 2
    try:
        reply = post_image(args.url, args.post.read_bytes(), args.threshold)
    except OSError as err:
        print(f"error: cannot reach {args.url}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("status") == 200 else 1


def server_limits(args: argparse.Namespace) -> ServerLimits | None:
    """The limits from the flags; None after printing which flag is wrong."""
    from ssd.deploy.server import parse_size

    sizes = {}
    for name in ("max_bytes", "max_pixels"):
        try:
            sizes[name] = parse_size(getattr(args, name))
        except ValueError as err:
            print(f"error: --{name.replace('_', '-')}: {err}", file=sys.stderr)
            return None
    try:
        return ServerLimits(**sizes, head_timeout=args.head_timeout, body_timeout=args.body_timeout,
                            idle_timeout=args.idle_timeout, max_connections=args.max_connections,
                            decode_slots=args.decode_slots)
    except ValueError as err:  # names the field, e.g. ServerLimits.head_timeout
        print(f"error: {err}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    from ssd.deploy.server import make_server

    limits = server_limits(args)
    if limits is None:
        return 2
    import tensorflow as tf

    if args.threads > 0:  # must happen before TensorFlow starts its thread pools
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    try:
        graph, class_names, graph_path = load_chosen_model(args.model, args.precision, args.labels)
        server = make_server(graph, class_names, args.host, args.port, limits, args.threshold, str(graph_path),
                             args.model_name)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"serving {graph_path} on {server.url}  (POST /detect, GET /health, "
          f"POST /v1/models/{args.model_name}:predict; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    if args.post is not None:
        return post(args)
    if args.model is None:
        print("error: --model is required to serve (or --post IMAGE to send one)", file=sys.stderr)
        return 2
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
