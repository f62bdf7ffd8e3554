"""Starting and stopping a Serve config (the same YAML `serve run` / `serve deploy` take) from mmray:
checked first (Serve's schema, mmray's app args, deployment names), local paths made absolute."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mmray import storage
from mmray.config.base import format_validation_error, read_yaml_file
from mmray.errors import ConfigError, MmrayError
from mmray.serving.app import IMPORT_PATH, app_config
from mmray.serving.auth import env_key_hashes

logger = logging.getLogger(__name__)
FIXED_DEPLOYMENTS = ("StateKeeper", "RetrieverDeployment", "Ingress")


class ServeStartError(MmrayError, RuntimeError):
    """An application that Serve could not deploy; the message is Serve's reason."""


def deployment_names(args: dict[str, Any]) -> set[str]:
    """The deployments `build_app` creates for these args (what a config's `deployments` may name)."""
    config = app_config(args)
    return {*FIXED_DEPLOYMENTS, *(f"model_{name}" for name in config.models)}


def _absolute(uri: str, base: Path) -> str:
    return uri if storage.is_s3(uri) or Path(uri).is_absolute() else str((base / uri).resolve())


def absolute_paths(args: dict[str, Any], base: Path) -> dict[str, Any]:
    """mmray app args with local bundle paths and the keys file made absolute against `base`, and the
    keys of the `auth.keys_env` variable here added as hashes (the app may be built elsewhere)."""
    fixed = dict(args)
    settings = app_config(args).auth
    hashes = env_key_hashes(settings.keys_env)
    if hashes:
        fixed["auth"] = {**dict(args.get("auth") or {}), "key_hashes": [*settings.key_hashes, *hashes]}
    fixed["models"] = {name: _absolute(str(uri), base) for name, uri in dict(args.get("models") or {}).items()}
    if fixed.get("index"):
        fixed["index"] = _absolute(str(fixed["index"]), base)
    auth = dict(fixed.get("auth") or {})
    if auth.get("keys_file"):
        auth["keys_file"] = _absolute(str(auth["keys_file"]), base)
        fixed["auth"] = auth
    return fixed


def check_serve_config(raw: Any, source: str, base: Path | None = None) -> dict[str, Any]:
    """Validate a Serve config against Serve's schema and each mmray application's args; names of
    deployments must be ones the builder makes. Returns the config with absolute local paths."""
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a Serve config is a mapping with `applications:`")
    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, raw)) from None
    config = dict(raw)
    applications = []
    for position, application in enumerate(raw["applications"]):
        application = dict(application)
        where = f"{source}: applications[{position}]"
        if application.get("import_path") == IMPORT_PATH:
            args = absolute_paths(dict(application.get("args") or {}), base or Path.cwd())
            try:
                names = deployment_names(args)
            except ConfigError as exc:
                raise ConfigError(f"{where}.args: {exc}") from None
            for deployment in application.get("deployments") or []:
                if deployment.get("name") not in names:
                    raise ConfigError(
                        f"{where}: no deployment is named {deployment.get('name')!r}; "
                        f"this app has {', '.join(sorted(names))}"
                    )
            _check_model_gpus(args, application.get("deployments") or [], where)
            application["args"] = args
        applications.append(application)
    config["applications"] = applications
    return config


def _check_model_gpus(args: dict[str, Any], deployments: list[dict[str, Any]], where: str) -> None:
    """`device: cuda` needs a GPU in every model replica, which Serve gives only with `num_gpus`; with
    `device: auto`, replicas without one serve on the CPU (each logs its device)."""
    config = app_config(args)
    gpus = {str(d.get("name")): float((d.get("ray_actor_options") or {}).get("num_gpus") or 0) for d in deployments}
    without = [f"model_{name}" for name in config.models if gpus.get(f"model_{name}", 0.0) <= 0]
    if config.device == "cuda" and without:
        raise ConfigError(
            f"{where}: args.device is cuda, but {', '.join(without)} has no ray_actor_options.num_gpus, so Serve "
            "gives its replicas no GPU; add num_gpus (e.g. 0.5 to share one GPU between two replicas) to each "
            "model deployment, or use device: auto"
        )
    if config.device == "auto" and without:
        logger.info("%s serve on the CPU unless given ray_actor_options.num_gpus", ", ".join(without))


def read_serve_config(path: str) -> dict[str, Any]:
    return check_serve_config(read_yaml_file(path, "Serve config"), path)


def start_serving(config: dict[str, Any], timeout_s: float = 600.0) -> str:
    """Deploy a checked Serve config on the connected (or a new local) Ray and wait until every
    application runs; returns the HTTP address. A failed deployment raises with Serve's reason."""
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    from mmray.raycluster import connect

    connect()
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=False)
    names = [application.name for application in schema.applications]
    deadline = time.monotonic() + timeout_s
    reported: dict[str, str] = {}
    while True:
        statuses = serve.status().applications
        for name in names:
            status = statuses.get(name)
            if status is not None and str(status.status) != reported.get(name):
                reported[name] = str(status.status)
                logger.info("application %s: %s", name, status.status)
            if status is not None and str(status.status).endswith("DEPLOY_FAILED"):
                raise ServeStartError(f"application {name!r} failed to deploy: {status.message}")
        if all(str(statuses[n].status).endswith("RUNNING") for n in names if n in statuses) and all(
            n in statuses for n in names
        ):
            break
        if time.monotonic() > deadline:
            raise ServeStartError(f"applications {names} did not start within {timeout_s:.0f} s: {reported}")
        time.sleep(0.5)
    host, port = schema.http_options.host, schema.http_options.port
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def stop_serving() -> None:
    from ray import serve

    serve.shutdown()  # type: ignore[no-untyped-call]
