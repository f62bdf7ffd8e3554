"""Joins the Ray at RAY_ADDRESS and, with stdout sent to stderr as `mmray tune` does while its trials run,
has two actors print one line many times to their stdout (Ray folds the repeats into a "[repeated Nx across
cluster]" line it prints when the driver leaves); then disconnects as mmray's commands do and prints its
result: what a command's stdout keeps must be that result alone."""

from __future__ import annotations

import contextlib
import sys
import time

import ray

from mmray.cluster.connection import disconnect


@ray.remote(num_cpus=0)
class Chatty:
    def say(self, times: int) -> int:
        for _ in range(times):
            print("[mmray] the same line again", flush=True)
        return times


def main() -> None:
    ray.init(log_to_driver=True)
    speakers = [Chatty.remote() for _ in range(2)]  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(sys.stderr):
        ray.get([speaker.say.remote(20) for speaker in speakers])
        time.sleep(3.0)  # the lines reach the driver (a search's trials end long before it stops)
    disconnect()
    print('{"result": true}')


if __name__ == "__main__":
    main()
