"""`foldcnn serve --engine ray`: the same app as a Ray Serve deployment, for many machines.

    app = ray_app("runs/apex/checkpoint", ServeConfig(PredictOptions(backend="ort")), replicas=2)
    serve.run(app, route_prefix="/")                     # what `foldcnn serve --engine ray` does

Each Ray Serve replica (a Ray actor, on any node of the cluster) loads the checkpoint and runs the
whole app of :func:`foldcnn.serve.create_app` (its own batcher, queue, decoding pool and
metrics); Ray Serve's HTTP proxy spreads requests over the replicas. Answers, errors, admission
and fold isolation are those of ``foldcnn serve``, per replica. Ray (``pip install "ray[serve]"``)
is imported here only.
"""

from __future__ import annotations

from foldcnn.errors import MissingExtraError

__all__ = ["ray_app"]


def ray_app(checkpoint: str, config, replicas: int = 1, num_cpus: float = 1.0):
    """A bound Ray Serve application serving ``checkpoint`` with the ServeConfig ``config`` (each
    replica's Predictor takes ``config.predict``; the server decodes, so no decoding workers)."""
    try:
        from ray import serve
    except ImportError as e:
        raise MissingExtraError(f"--engine ray needs Ray Serve: pip install 'ray[serve]' ({e})") from None

    def build():  # runs in each replica
        from foldcnn.infer import Predictor
        from foldcnn.serve.app import create_app
        from foldcnn.serve.isolation import checkpoint_fold_invariant

        predictor = Predictor.from_checkpoint(checkpoint, config.predict.replace(workers=0))
        return create_app(predictor, config, fold_invariant=checkpoint_fold_invariant(checkpoint))

    deployment = serve.deployment(serve.ingress(build)(), name="foldcnn", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": num_cpus})
    return deployment.bind()
