"""Data-parallel training with Ray Train.

Two training workers (placed on different nodes) each take their shard of the data set from
Ray Data, compute gradients on it, and average them every step through a small all-reduce
actor, so both keep identical weights — the same scheme as PyTorch DDP, with NumPy, so it
runs anywhere without a deep-learning framework download.
"""

import asyncio
import json

import numpy as np
import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.data_parallel_trainer import DataParallelTrainer

FEATURES = 16
CLASSES = 4
ROWS = 40_000
WORKERS = 2
EPOCHS = 8
SEED = 5


@ray.remote(num_cpus=0)
class AllReduce:
    """Sums one gradient from each worker per step and hands every worker the mean."""

    def __init__(self, workers):
        self.workers = workers
        self.steps = {}

    async def mean(self, step, gradient):
        entry = self.steps.setdefault(step, {"count": 0, "sum": None, "done": asyncio.Event()})
        entry["sum"] = gradient if entry["sum"] is None else entry["sum"] + gradient
        entry["count"] += 1
        if entry["count"] == self.workers:
            entry["done"].set()
        await entry["done"].wait()
        return entry["sum"] / self.workers


def synthesize(batch):
    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]) + SEED)
    centers = np.random.default_rng(SEED).normal(0.0, 1.0, (CLASSES, FEATURES))
    labels = rng.integers(0, CLASSES, len(ids))
    features = centers[labels] + rng.normal(0.0, 1.0, (len(ids), FEATURES))
    return {"features": features.astype(np.float32), "label": labels}


def train_loop(config):
    context = ray.train.get_context()
    reducer = ray.get_actor(config["reducer"])
    shard = ray.train.get_dataset_shard("train")
    parameters = np.zeros(FEATURES * CLASSES + CLASSES)
    step = 0
    node = ray.get_runtime_context().get_node_id()
    for epoch in range(EPOCHS):
        seen, correct, loss_sum = 0, 0, 0.0
        for batch in shard.iter_batches(batch_size=1000, batch_format="numpy"):
            x, labels = batch["features"], batch["label"]
            weights = parameters[: FEATURES * CLASSES].reshape(FEATURES, CLASSES)
            bias = parameters[FEATURES * CLASSES :]
            logits = x @ weights + bias
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            y = np.eye(CLASSES)[labels]
            gradient = np.concatenate([(x.T @ (p - y) / len(x)).ravel(), (p - y).mean(axis=0)])
            gradient = ray.get(reducer.mean.remote(step, gradient))
            parameters -= config["lr"] * gradient
            step += 1
            seen += len(x)
            correct += int((np.argmax(logits, axis=1) == labels).sum())
            loss_sum += float(-np.log(p[np.arange(len(x)), labels] + 1e-9).sum())
        ray.train.report(
            {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "accuracy": correct / seen,
                "rows": seen,
                "node": node,
                "rank": context.get_world_rank(),
                "checksum": float(parameters.sum()),
            }
        )


def main():
    ray.init()
    print(f"cluster: {len([n for n in ray.nodes() if n['Alive']])} nodes")
    reducer = AllReduce.options(name="herd-allreduce").remote(WORKERS)
    dataset = ray.data.range(ROWS, override_num_blocks=8).map_batches(synthesize)
    trainer = DataParallelTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config={"lr": 0.5, "reducer": "herd-allreduce"},
        scaling_config=ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1}, placement_strategy="SPREAD"),
        datasets={"train": dataset},
        run_config=RunConfig(name="herd-training-example"),
    )
    result = trainer.fit()
    metrics = result.metrics
    print(f"epoch {metrics['epoch']}: loss {metrics['loss']:.4f} accuracy {metrics['accuracy']:.4f}")
    history = result.metrics_dataframe
    print(history[["epoch", "loss", "accuracy"]].to_string(index=False))
    del reducer
    print("RESULT " + json.dumps({"workers": WORKERS, "epochs": metrics["epoch"], "accuracy": round(metrics["accuracy"], 4)}))


if __name__ == "__main__":
    main()
