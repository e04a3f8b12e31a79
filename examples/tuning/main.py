"""Hyperparameter tuning with Ray Tune.

Eight trials (a grid over learning rate and L2 penalty) of a small classifier trained with
NumPy, run in parallel across the cluster's nodes; prints the best configuration.
"""

import json

import numpy as np
import ray
import ray.train
from ray import tune

FEATURES = 16
CLASSES = 4
SEED = 11


def data(rows, seed):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(SEED).normal(0.0, 1.0, (CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, rows)
    return centers[labels] + rng.normal(0.0, 1.2, (rows, FEATURES)), labels


def trainable(config):
    x, labels = data(4_000, SEED + 1)
    x_val, labels_val = data(2_000, SEED + 2)
    y = np.eye(CLASSES)[labels]
    weights, bias = np.zeros((FEATURES, CLASSES)), np.zeros(CLASSES)
    node = ray.get_runtime_context().get_node_id()
    for epoch in range(20):
        logits = x @ weights + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        weights -= config["lr"] * (x.T @ (p - y) / len(x) + config["l2"] * weights)
        bias -= config["lr"] * (p - y).mean(axis=0)
        accuracy = float((np.argmax(x_val @ weights + bias, axis=1) == labels_val).mean())
        ray.train.report({"accuracy": accuracy, "epoch": epoch + 1, "node": node})


def main():
    ray.init()
    print(f"cluster: {len([n for n in ray.nodes() if n['Alive']])} nodes")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lr": tune.grid_search([0.001, 0.01, 0.1, 1.0]), "l2": tune.grid_search([0.0, 0.1])},
        tune_config=tune.TuneConfig(metric="accuracy", mode="max"),
    )
    results = tuner.fit()
    best = results.get_best_result()
    nodes = {r.metrics["node"] for r in results if r.metrics}
    finished = sum(1 for r in results if r.error is None)
    print(f"{finished} of {len(results)} trials finished on {len(nodes)} node(s)")
    print(f"best config: lr={best.config['lr']} l2={best.config['l2']} accuracy={best.metrics['accuracy']:.4f}")
    result = {
        "trials": len(results),
        "finished": finished,
        "nodes_used": len(nodes),
        "best": best.config,
        "best_accuracy": round(best.metrics["accuracy"], 4),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
