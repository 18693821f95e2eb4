"""Flower plumbing: a site client (NumPyClient) that trains the shared fusion model on its own patients, a
server strategy (FedAvg or FedProx, optionally with server-side differential privacy) that records the
bytes each round moves and the final global weights."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedProx, Strategy

from flows.federated.sites import ModelSpec, build_model, get_weights, local_fit, set_weights


@dataclass
class SitePayload:
    """What one site holds for one fold (written by the simulation, read by the site's process)."""

    site: int
    dataset: object          # fusion.data.MultimodalDataset over the site's training patients
    n_outputs: int
    task: str
    model: ModelSpec
    local_epochs: int
    seed: int = 0


def save_payload(payload: SitePayload, path: Path) -> None:
    """Pickle a site's data for its process (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    tmp.replace(path)


class SiteClient(NumPyClient):
    """One site: receives global weights, trains locally (FedProx when the server sends proximal_mu)."""

    def __init__(self, payload: SitePayload) -> None:
        self.p = payload
        self.model = build_model(payload.dataset, payload.n_outputs, payload.task, payload.model)
        self.rounds = 0

    def get_parameters(self, config):  # noqa: D102 - Flower API
        return get_weights(self.model)

    def fit(self, parameters, config):  # noqa: D102 - Flower API
        set_weights(self.model, parameters)
        self.rounds += 1
        idx = np.arange(self.p.dataset.n_patients)
        local_fit(self.model, self.p.dataset, idx, self.p.model, int(config.get("local_epochs", self.p.local_epochs)),
                  proximal_mu=float(config.get("proximal_mu", 0.0)), seed=self.p.seed + 1000 * self.rounds + self.p.site)
        return get_weights(self.model), int(self.p.dataset.n_patients), {"site": self.p.site}

    def evaluate(self, parameters, config):  # noqa: D102 - evaluation happens on the held-out fold
        return 0.0, int(self.p.dataset.n_patients), {}


def run_site(payload_path: str, server_address: str) -> None:
    """A site process: load its payload and serve one federated training (returns when the server ends)."""
    import logging

    import torch
    from flwr.compat.client.app import start_client

    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    with open(payload_path, "rb") as f:
        payload: SitePayload = pickle.load(f)
    start_client(server_address=server_address, client=SiteClient(payload).to_client(), insecure=True,
                 max_retries=200, max_wait_time=120.0)


@dataclass
class Recorder(Strategy):
    """Wraps a Flower strategy: counts the bytes of weights sent down and up per round, keeps the last
    global weights."""

    inner: Strategy
    bytes_per_round: list[int] = field(default_factory=list)
    final: list[np.ndarray] | None = None

    def initialize_parameters(self, client_manager):
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round, parameters, client_manager):
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        self.bytes_per_round.append(sum(len(t) for _, ins in instructions for t in ins.parameters.tensors))
        return instructions

    def aggregate_fit(self, server_round, results, failures):
        self.bytes_per_round[-1] += sum(len(t) for _, res in results for t in res.parameters.tensors)
        params, metrics = self.inner.aggregate_fit(server_round, results, failures)
        if params is not None:
            self.final = parameters_to_ndarrays(params)
        return params, metrics

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def make_strategy(kind: str, initial: list[np.ndarray], n_sites: int, local_epochs: int, proximal_mu: float = 0.01,
                  dp_noise: float | None = None, dp_clip: float = 1.0) -> Recorder:
    """FedAvg or FedProx over all `n_sites` every round (weighted by site size); with `dp_noise`, Flower's
    server-side fixed-clipping differential privacy wraps it."""
    common = dict(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_sites, min_available_clients=n_sites,
                  initial_parameters=ndarrays_to_parameters(initial),
                  on_fit_config_fn=lambda rnd: {"local_epochs": local_epochs})
    if kind == "fedavg":
        strategy: Strategy = FedAvg(**common)
    elif kind == "fedprox":
        strategy = FedProx(proximal_mu=proximal_mu, **common)
    else:
        raise ValueError(f"unknown federated strategy {kind!r}; expected fedavg or fedprox")
    if dp_noise is not None:
        strategy = DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=dp_noise,
                                                              clipping_norm=dp_clip, num_sampled_clients=n_sites)
    return Recorder(strategy)


def serve(address: str, strategy: Recorder, rounds: int) -> Recorder:
    """Run a Flower server for `rounds` rounds (blocks until every round is done)."""
    import logging

    from flwr.compat.server.app import start_server
    from flwr.server import ServerConfig

    logging.getLogger("flwr").setLevel(logging.WARNING)

    start_server(server_address=address, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    return strategy


__all__ = ["SitePayload", "SiteClient", "Recorder", "make_strategy", "serve", "run_site", "save_payload",
           "Parameters"]
