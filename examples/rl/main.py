"""Reinforcement learning with RLlib: PPO on CartPole until a target mean return.

RLlib needs a deep-learning framework and RLlib's extra dependencies; see README.md for the
`--pip` list (torch is a large download). Environment runners are spread over the
cluster's nodes; the learner runs on the driver's node.
"""

import json
import os
import time

import ray
from ray.rllib.algorithms.ppo import PPOConfig

TARGET = float(os.environ.get("TARGET_RETURN", "450"))
ITERATIONS_MAX = int(os.environ.get("ITERATIONS_MAX", "60"))


def main():
    ray.init()
    print(f"cluster: {len([n for n in ray.nodes() if n['Alive']])} nodes")
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=1)
        .training(lr=3e-4, gamma=0.99, train_batch_size_per_learner=4000, num_epochs=10, minibatch_size=256)
    )
    algorithm = config.build()
    started = time.time()
    best = 0.0
    for iteration in range(1, ITERATIONS_MAX + 1):
        result = algorithm.train()
        mean = result["env_runners"]["episode_return_mean"]
        best = max(best, mean)
        print(f"iteration {iteration:3d}: mean return {mean:7.1f} ({time.time() - started:.0f} s)")
        if mean >= TARGET:
            break
    algorithm.stop()
    print("RESULT " + json.dumps({"iterations": iteration, "mean_return": round(mean, 1), "target": TARGET, "reached": mean >= TARGET}))


if __name__ == "__main__":
    main()
