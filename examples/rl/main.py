"""Reinforcement learning with RLlib: PPO on CartPole until a target mean return.

RLlib needs a deep-learning framework: PyTorch (RLlib's new API stack) or TensorFlow (the
old API stack, `tensorflow-cpu` + `tf-keras`). This script uses whichever the nodes have,
torch first; see README.md for how to give the nodes one. Environment runners are spread over
the cluster's nodes; the learner runs on the driver's node.
"""

import importlib.util
import json
import os
import time

import ray
from ray.rllib.algorithms.ppo import PPOConfig

TARGET = float(os.environ.get("TARGET_RETURN", "450"))
ITERATIONS_MAX = int(os.environ.get("ITERATIONS_MAX", "60"))
ENV_RUNNERS = int(os.environ.get("ENV_RUNNERS", "2"))


def framework():
    if importlib.util.find_spec("torch") is not None:
        return "torch"
    if importlib.util.find_spec("tensorflow") is not None:
        # TensorFlow 2.16+ ships Keras 3; RLlib's TensorFlow models are written for Keras 2
        # (`tf-keras`). Every process of the job needs the switch, so it comes with the job's
        # environment, not from this driver.
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise SystemExit("with TensorFlow, submit with --env TF_USE_LEGACY_KERAS=1 (see examples/rl/README.md)")
        return "tf2"
    raise SystemExit("RLlib needs torch or tensorflow on the nodes (see examples/rl/README.md)")


def config_for(name):
    config = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=ENV_RUNNERS, num_cpus_per_env_runner=1)
    if name == "torch":
        # The new API stack (RLModule, Learner, EnvRunner): torch only.
        return config.training(
            lr=3e-4, gamma=0.99, train_batch_size_per_learner=4000, num_epochs=10, minibatch_size=256
        )
    # TensorFlow runs on the old API stack (policies and rollout workers).
    return (
        config.api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
        .framework("tf2")
        .training(lr=3e-4, gamma=0.99, train_batch_size=4000, num_epochs=10, minibatch_size=256)
    )


def main():
    ray.init()
    print(f"cluster: {len([n for n in ray.nodes() if n['Alive']])} nodes")
    name = framework()
    algorithm = config_for(name).build()
    print(f"framework: {name}")
    started = time.time()
    mean = 0.0
    for iteration in range(1, ITERATIONS_MAX + 1):
        result = algorithm.train()
        mean = result["env_runners"]["episode_return_mean"]
        print(f"iteration {iteration:3d}: mean return {mean:7.1f} ({time.time() - started:.0f} s)", flush=True)
        if mean >= TARGET:
            break
    algorithm.stop()
    mean = float(mean)  # RLlib's metrics are numpy scalars
    result = {"framework": name, "iterations": iteration, "mean_return": round(mean, 1), "target": TARGET}
    result["reached"] = mean >= TARGET
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
