"""Batch inference with Ray Data.

Trains a small classifier here (softmax regression with NumPy, no download), then scores a
data set of 200,000 rows with `map_batches` on a pool of model replicas spread over the
cluster's nodes, and checks the predictions against the labels.
"""

import collections
import json
import time

import numpy as np
import ray
from ray.util.state import list_actors

FEATURES = 16
CLASSES = 4
ROWS = 200_000
SEED = 7


def centers():
    return np.random.default_rng(SEED).normal(0.0, 1.5, (CLASSES, FEATURES))


def synthesize(batch):
    """Rows (features, label) drawn around each class's centre; deterministic per batch."""
    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]) + SEED)
    labels = rng.integers(0, CLASSES, len(ids))
    features = centers()[labels] + rng.normal(0.0, 1.0, (len(ids), FEATURES))
    return {"features": features.astype(np.float32), "label": labels}


def train(steps=300, lr=0.5):
    rng = np.random.default_rng(SEED + 1)
    labels = rng.integers(0, CLASSES, 5_000)
    x = centers()[labels] + rng.normal(0.0, 1.0, (len(labels), FEATURES))
    y = np.eye(CLASSES)[labels]
    weights, bias = np.zeros((FEATURES, CLASSES)), np.zeros(CLASSES)
    for _ in range(steps):
        logits = x @ weights + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        weights -= lr * x.T @ (p - y) / len(x)
        bias -= lr * (p - y).mean(axis=0)
    return weights, bias


class Classifier:
    """One model replica; Ray Data keeps a pool of them and feeds each batches."""

    def __init__(self, weights, bias):
        self.weights, self.bias = weights, bias
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch):
        predicted = np.argmax(batch["features"] @ self.weights + self.bias, axis=1)
        return {
            "correct": (predicted == batch["label"]).astype(np.int64),
            "node": np.array([self.node] * len(predicted)),
        }


def main():
    ray.init()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"cluster: {len(nodes)} nodes, {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    started = time.time()
    weights, bias = train()
    print(f"model trained in {time.time() - started:.1f} s")

    started = time.time()
    scored = (
        ray.data.range(ROWS, override_num_blocks=16)
        .map_batches(synthesize)
        .map_batches(
            Classifier,
            fn_constructor_args=(weights, bias),
            concurrency=len(nodes),
            batch_size=4096,
            num_cpus=1,
            scheduling_strategy="SPREAD",
        )
    )
    correct = 0
    per_node = collections.Counter()
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        correct += int(batch["correct"].sum())
        per_node.update(collections.Counter(batch["node"].tolist()))
    rows = sum(per_node.values())
    elapsed = time.time() - started
    # Where the model replicas were placed (Ray's state API); which of them scored how many
    # rows depends on which was free first.
    job = ray.get_runtime_context().get_job_id()
    replicas = list_actors(filters=[("class_name", "=", "_MapWorker"), ("job_id", "=", job)], detail=True)
    replica_nodes = {a.node_id for a in replicas if a.node_id}
    print(f"scored {rows} rows in {elapsed:.1f} s: accuracy {correct / rows:.4f}")
    print(f"{len(replicas)} model replicas on {len(replica_nodes)} node(s)")
    for node, count in sorted(per_node.items()):
        print(f"  node {node[:12]}: {count} rows")
    result = {"rows": rows, "accuracy": round(correct / rows, 4), "replica_nodes": len(replica_nodes)}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
