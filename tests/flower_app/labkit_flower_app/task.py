"""What the ServerApp and the ClientApps share: the federations, models and settings, and the server's run.

tests/test_flower.py imports this module too, so that labkit's simulator runs on exactly the same clients.
"""

import functools
import json
import os
from pathlib import Path

import torch

from labkit import flower as lf
from labkit.models import MLP
from labkit.substrates.federated import LocalSGD, model_state

NUM_NODES = 4  # SuperNodes, one partition each: FedLD's clients, RFFL's participants (the last a free rider)
LAM, GAMMA, K_PROPORTION = 0.1, 0.2, 0.8
FEDLD_OPT = LocalSGD(batch_size=10_000)  # full batch: the batch order (the generator) does not matter
RFFL_TRAIN = {"lr": 0.1, "lr_decay": 0.977, "batch_size": 32}

fedld_data = functools.partial(lf.fedld_partition, seed=0, n_clients=NUM_NODES)
rffl_data = functools.partial(lf.rffl_partition, seed=0, attack="free_rider", n_honest=NUM_NODES - 1, n_adversaries=1)
fedld_model = functools.partial(MLP, 64, [16], 10)
rffl_model = functools.partial(torch.nn.Linear, 64, 10)


def initial_state(model_fn) -> dict[str, torch.Tensor]:
    """The model both labkit's simulator and the ServerApp start from."""
    torch.manual_seed(0)
    return model_state(model_fn())


def run_strategies(grid, num_rounds: int) -> dict:
    """FedLD, then RFFL, for ``num_rounds`` rounds each on the grid's nodes; what they end with, as JSON data."""
    from flwr.app import ArrayRecord, ConfigRecord

    fedld = lf.FedLDStrategy(
        k_proportion=K_PROPORTION,
        lam=LAM,
        fraction_evaluate=0.0,
        min_available_nodes=NUM_NODES,
        min_train_nodes=NUM_NODES,
    )
    fedld_result = fedld.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_state(fedld_model)),
        num_rounds=num_rounds,
        train_config=ConfigRecord({"labkit-method": "fedld"}),
    )
    rffl = lf.RFFLStrategy(min_available_nodes=NUM_NODES)
    rffl_result = rffl.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_state(rffl_model)),
        num_rounds=num_rounds,
        train_config=ConfigRecord({"labkit-method": "rffl"}),
        evaluate_config=ConfigRecord({"labkit-method": "rffl"}),
    )
    metrics = rffl_result.train_metrics_clientapp
    return {
        "fedld": {"arrays": _lists(fedld_result.arrays.to_torch_state_dict())},
        "rffl": {
            "arrays": _lists(rffl_result.arrays.to_torch_state_dict()),
            "reputation": [[float(r) for r in metrics[t]["reputation"]] for t in range(1, num_rounds + 1)],
            "accuracy": [rffl.accuracy.get(node) for node in rffl.nodes],  # in partition order
            "removed-round": {str(i): t for i, t in rffl.server.removed_round.items()},
        },
    }


def write_result(path, result: dict) -> None:
    """Write atomically, so that a reader polling for the file never sees half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def _lists(state: dict[str, torch.Tensor]) -> dict[str, list]:
    return {k: v.detach().cpu().tolist() for k, v in state.items()}
