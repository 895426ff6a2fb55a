"""The students' side of the classroom benchmark (bench_serving runs it):
`python -m bench.classroom_clients URL N TOKENS SUBJECTS_JSON BURSTS`.

Runs in its own process, as a class's browsers are not the server's: N gradio_client users, each with a session that
is already open (a student has the page loaded before pressing Generate: a fresh Gradio session costs the server the
copy of the whole page's config), generate TOKENS greedy tokens each at the same moment. One user alone is timed through
the same server before and after each burst (the median of three). Prints one JSON object: per burst, the time
for all answers, one user's time, and the CPU time of this (the clients') process, which shares the machine."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client

GREEDY = dict(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
              frequency_penalty=0.0, chat=True, stop=[])


def main(url: str, users: int, tokens: int, subjects: list[str], bursts: int) -> dict:
    prompts = [f"Write one sentence about {s}." for s in subjects[:users]]
    with ThreadPoolExecutor(8) as pool:
        # Plain HTTP to this machine: without ssl_verify=False gradio_client loads the CA bundle for every request,
        # 2.7 s of CPU a burst on the cores the server is measured on (0.4 s without).
        clients = list(pool.map(lambda _: Client(url, verbose=False, ssl_verify=False, httpx_kwargs={"timeout": 120}),
                                prompts))
        list(pool.map(lambda c: c.predict("hello", False, api_name="/tokenize"), clients))  # open each session

    def generate(client, prompt):
        return client.predict(prompt, **GREEDY, max_new_tokens=tokens, min_new_tokens=tokens, api_name="/generate")

    def alone(prompt):
        started = time.perf_counter()
        generate(clients[0], prompt)
        return time.perf_counter() - started

    bursts_out = []
    for _ in range(bursts):
        ones = [alone("Write one sentence about the wind."), alone("Write one sentence about the rain.")]
        barrier = threading.Barrier(len(prompts))

        def student(client, prompt):
            barrier.wait()
            return generate(client, prompt)

        cpu = time.process_time()
        started = time.perf_counter()
        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(student, clients, prompts))
        together = time.perf_counter() - started
        clients_cpu = time.process_time() - cpu
        ones.append(alone("Write one sentence about a lamp."))
        bursts_out.append({"together_s": together, "one_s": sorted(ones)[1], "clients_cpu_s": clients_cpu,
                           "token_ids": [a["token_ids"] for a in answers],
                           "shared_with_max": max(a["serving"]["shared_with_max"] for a in answers)})
    return {"bursts": bursts_out}


if __name__ == "__main__":
    url, users, tokens, subjects, bursts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), \
        int(sys.argv[5])
    print(json.dumps(main(url, users, tokens, subjects, bursts)))
