"""Time one classroom burst (many gradio_client users calling /generate at once) against 1, 2, ... replicas.

    python deploy/burst.py [--replicas 1 2] [--users 12] [--tokens 6] [--rounds 2] [--no-pin]

Each replica count gets its own nginx and processes (deploy/replicas.py), one warm-up burst, then `rounds` bursts;
prints the wall time of each burst and the best one, so you can see whether more replicas help on this machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.replicas import Replicas  # noqa: E402

PROMPT = "Name a colour."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generate(client, seed: int, tokens: int) -> list[int]:
    return client.predict(PROMPT, seed=seed, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                          presence_penalty=0.0, frequency_penalty=0.0, max_new_tokens=tokens, chat=True, stop=[],
                          min_new_tokens=tokens, api_name="/generate")["token_ids"]


def burst(url: str, users: int, tokens: int) -> float:
    """Seconds from the first request to the last answer, `users` clients at once (clients made beforehand)."""
    from gradio_client import Client

    # Over plain HTTP no TLS context is needed; gradio_client would load the CA bundle for every request.
    clients = [Client(url, verbose=False, ssl_verify=url.startswith("https:")) for _ in range(users)]
    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(generate, clients, range(users), [tokens] * users))
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=6, help="new tokens per request (default 6)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.users} users x {args.tokens} new tokens, {cores} cores, load average {os.getloadavg()[0]:.1f}")
    for n in args.replicas:
        with Replicas(n, port=free_port(), ports=[free_port() for _ in range(n)], host="127.0.0.1",
                      pin=args.pin) as running:
            burst(running.url, args.users, args.tokens)  # warm-up: every replica's first-call costs out of the way
            times = [burst(running.url, args.users, args.tokens) for _ in range(args.rounds)]
        print(f"{n} replica(s){'' if args.pin else ' (unpinned)'}: " + ", ".join(f"{t:.1f} s" for t in times)
              + f"; best {min(times):.1f} s = {min(times) / args.users:.2f} s per request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
