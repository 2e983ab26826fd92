"""Costs measured alike for every predictor: batch-1 latency, interleaved over rounds."""
import time

import torch

from curridistill.evaluate.measure import interleaved_latency_ms


def test_interleaved_latency_times_every_predictor_in_turn():
    calls = []

    def forward(name, seconds):
        def run(x):
            calls.append(name)
            time.sleep(seconds)
            return x
        return run

    found = interleaved_latency_ms({"fast": forward("fast", 0.0), "slow": forward("slow", 0.003)}, torch.zeros(1, 4),
                                   runs=4, rounds=3)
    assert set(found) == {"fast", "slow"}
    assert found["slow"] >= 3.0 > found["fast"]  # sleep() waits at least as long as asked
    per_round = 4 + 5  # timed runs + warm-up
    assert calls == (["fast"] * per_round + ["slow"] * per_round) * 3  # one round of each, three times
