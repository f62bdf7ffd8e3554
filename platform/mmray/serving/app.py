"""The Serve application builder: `serve run` / `serve deploy` name `mmray.serving.app:build_app`
with the arguments of `ServeAppConfig`."""

from __future__ import annotations

import logging
from typing import Any, cast

from pydantic import ValidationError
from ray.serve import Application, Deployment

from mmray.config.base import format_validation_error
from mmray.config.serving import ENDPOINT_GROUPS, ServeAppConfig
from mmray.errors import BundleError, ConfigError
from mmray.serving.auth import read_key_hashes
from mmray.serving.deployments import ModelDeployment
from mmray.serving.following import StateKeeper
from mmray.serving.ingress import Ingress
from mmray.serving.retriever_deployment import RetrieverDeployment
from mmray.serving.state import ServingState, model_for, resolve_state

logger = logging.getLogger(__name__)
IMPORT_PATH = "mmray.serving.app:build_app"


def app_config(args: dict[str, Any]) -> ServeAppConfig:
    try:
        return ServeAppConfig.model_validate(args)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "serve app args", args)) from None


def check_endpoints(config: ServeAppConfig, state: ServingState) -> None:
    """Every endpoint group asked for must be answered by some served model (or the index)."""
    for group in config.endpoints or ():
        if group != "search":
            try:
                model_for(state, group, None)
            except BundleError as exc:
                raise ConfigError(f"endpoints: {exc}") from None


def build_app(args: dict[str, Any]) -> Application:
    """Check the bundles from their manifests (the index must carry a served model's version) and
    bind the deployments: a state keeper, one model deployment per model (named `model_<name>`),
    a retriever when there is an index, and the FastAPI ingress."""
    config = app_config(args)
    state = resolve_state(config.models, config.index)
    check_endpoints(config, state)
    hashes, admin = read_key_hashes(config.auth), read_key_hashes(config.auth, admin=True)
    if not hashes:
        logger.warning("mmray serve: no API keys are set (%s or auth.keys_file); the API is open", config.auth.keys_env)
    keeper = cast(Deployment, StateKeeper).bind(state)
    model, limits = cast(Deployment, ModelDeployment), config.limits.model_dump()
    models = {
        name: model.options(name=f"model_{name}", user_config=config.batching.model_dump()).bind(
            name, keeper, config.device, limits
        )
        for name in state.models
    }
    retriever = None
    if state.index:
        retriever = cast(Deployment, RetrieverDeployment).bind(keeper, models, config.thumbnail_size, limits)
    roots = config.allowed_roots or default_roots(config)
    return cast(Deployment, Ingress).bind(
        config.model_dump(mode="json"), hashes, admin, roots, keeper, models, retriever
    )


def default_roots(config: ServeAppConfig) -> list[str]:
    """Where a reload may load from unless `allowed_roots` says: the directories holding the model bundles (or
    runs) and the index bundle the app starts with."""
    uris = [*config.models.values(), *([config.index] if config.index else [])]
    return sorted({uri.rstrip("/").rsplit("/", 1)[0] for uri in uris})


__all__ = ["ENDPOINT_GROUPS", "IMPORT_PATH", "build_app"]
