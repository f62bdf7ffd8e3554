"""Starting and stopping a Serve config (the same YAML `serve run` / `serve deploy` take) from mmray:
checked first (Serve's schema, mmray's app args, deployment names), local paths made absolute."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mmray import storage
from mmray.config.base import format_validation_error, read_yaml_file
from mmray.config.serving import BatchSettings, ServeAppConfig
from mmray.errors import ConfigError, MmrayError
from mmray.serving.app import IMPORT_PATH, app_config
from mmray.serving.auth import env_key_hashes

if TYPE_CHECKING:
    from ray.serve.schema import ServeDeploySchema

logger = logging.getLogger(__name__)
FIXED_DEPLOYMENTS = ("StateKeeper", "RetrieverDeployment", "Ingress")


class ServeStartError(MmrayError, RuntimeError):
    """An application that Serve could not deploy; the message is Serve's reason."""


def _absolute(uri: str, base: Path) -> str:
    return uri if storage.is_s3(uri) or Path(uri).is_absolute() else str((base / uri).resolve())


def absolute_paths(args: dict[str, Any], base: Path) -> dict[str, Any]:
    """mmray app args with local bundle paths, keys files and allowed roots made absolute against `base`, and
    the keys of the `auth.keys_env` / `auth.admin_keys_env` variables here added as hashes (the app may be
    built elsewhere)."""
    fixed = dict(args)
    settings = app_config(args).auth
    auth = dict(args.get("auth") or {})
    for variable, field in ((settings.keys_env, "key_hashes"), (settings.admin_keys_env, "admin_key_hashes")):
        hashes = env_key_hashes(variable)
        if hashes:
            auth[field] = [*getattr(settings, field), *hashes]
    for field in ("keys_file", "admin_keys_file"):
        if auth.get(field):
            auth[field] = _absolute(str(auth[field]), base)
    if auth:
        fixed["auth"] = auth
    fixed["models"] = {name: _absolute(str(uri), base) for name, uri in dict(args.get("models") or {}).items()}
    if fixed.get("index"):
        fixed["index"] = _absolute(str(fixed["index"]), base)
    if fixed.get("allowed_roots"):
        fixed["allowed_roots"] = [_absolute(str(root), base) for root in fixed["allowed_roots"]]
    return fixed


def check_serve_config(raw: Any, source: str, base: Path | None = None) -> dict[str, Any]:
    """The Serve config checked (Serve's schema, mmray app args, deployment names), local paths made absolute."""
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a Serve config is a mapping with `applications:`")
    _check_entry_kinds(raw, source)
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
            args = absolute_paths(dict(application.get("args") or {}), base or Path.cwd())  # validates them
            app = app_config(args)
            names = {*FIXED_DEPLOYMENTS, *(f"model_{name}" for name in app.models)}  # the ones `build_app` makes
            deployments = application.get("deployments") or []
            for deployment in deployments:
                if deployment.get("name") not in names:
                    raise ConfigError(
                        f"{where}: no deployment is named {deployment.get('name')!r}; "
                        f"this app has {', '.join(sorted(names))}"
                    )
                # a model deployment's user_config is its batch settings (else checked only after Serve started)
                if str(deployment["name"]).startswith("model_") and deployment.get("user_config") is not None:
                    try:
                        BatchSettings.model_validate(deployment["user_config"])
                    except ValidationError as exc:
                        shown = format_validation_error(exc, f"{where}: {deployment['name']}.user_config", None)
                        raise ConfigError(shown) from None
            _check_model_gpus(app, deployments, where)
            application["args"] = args
        applications.append(application)
    config["applications"] = applications
    return config


def _check_entry_kinds(raw: dict[str, Any], source: str) -> None:
    """Applications and their deployments are mappings (Serve's schema code fails on anything else)."""
    applications = raw.get("applications")
    if not isinstance(applications, list):
        raise ConfigError(f"{source}: applications must be a list of applications, got {applications!r}")
    for position, application in enumerate(applications):
        if not isinstance(application, dict):
            raise ConfigError(f"{source}: applications[{position}] must be a mapping, got {application!r}")
        deployments = application.get("deployments") or []
        if not isinstance(deployments, list):
            raise ConfigError(f"{source}: applications[{position}].deployments must be a list, got {deployments!r}")
        for index, deployment in enumerate(deployments):
            if not isinstance(deployment, dict):
                raise ConfigError(
                    f"{source}: applications[{position}].deployments[{index}] must be a mapping (name: ..., "
                    f"num_replicas: ...), got {deployment!r}"
                )


def _check_model_gpus(config: ServeAppConfig, deployments: list[dict[str, Any]], where: str) -> None:
    """`device: cuda` needs a GPU in every model replica, which Serve gives only with `num_gpus`; with
    `device: auto`, replicas without one serve on the CPU (each logs its device)."""
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
    """Deploy a checked Serve config on the connected (or a new local) Ray, beside the applications already
    there (a shared cluster's other apps are kept), and wait until every application runs and every mmray
    app's /readyz answers 200 (its bundles loaded); returns the HTTP address.
    A failed start deletes the config's applications (a cluster's would outlive the caller), then raises
    with Serve's or the replicas' reason."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    from mmray.cluster.connection import connect
    from mmray.cluster.ray_compat import ServeController

    connect()
    schema = ServeDeploySchema.model_validate(config)
    client = ServeController(schema.http_options.model_dump(), schema.proxy_location)
    names = [application.name for application in schema.applications]
    details = client.details()
    kept = [  # the cluster's applications deployed from a config, as their deployed configs
        ServeApplicationSchema.model_validate(application["deployed_app_config"])
        for name, application in (details.get("applications") or {}).items()
        if name not in names and application.get("deployed_app_config")
    ]
    _check_routes_free(schema.applications, kept)
    if kept:
        logger.info("keeping the applications already on this cluster: %s", ", ".join(c.name for c in kept))
    # Serve's config deploy replaces every application: the kept ones go with the new.
    client.deploy(schema.model_copy(update={"applications": [*kept, *schema.applications]}))
    try:
        return _wait_started(schema, names, details, timeout_s)
    except Exception:
        _delete_after_failed_start(names)
        raise


def _wait_started(schema: ServeDeploySchema, names: list[str], details: dict[str, Any], timeout_s: float) -> str:
    """Until the deployed applications of `schema` (`names`) run and their bundles are loaded; their HTTP address."""
    deadline = time.monotonic() + timeout_s
    _wait_running(names, deadline, timeout_s)
    running = details.get("http_options") or {}
    host, port = running.get("host", schema.http_options.host), int(running.get("port", schema.http_options.port))
    if port != schema.http_options.port:
        logger.warning("Serve already runs on this cluster with its proxy on port %d; the config's port %d is not "
                       "used", port, schema.http_options.port)  # fmt: skip
    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    for application in schema.applications:
        if application.import_path == IMPORT_PATH:
            _wait_ready(application.name, address + (application.route_prefix or "").rstrip("/"), deadline)
    return address


def _check_routes_free(applications: list[Any], kept: list[Any]) -> None:
    """A route prefix one of the cluster's other applications serves is refused: deployed beside it, Serve's
    controller would store the clashing config and refuse every later deploy on the cluster."""
    taken = {application.route_prefix: application.name for application in kept if application.route_prefix}
    for application in applications:
        if application.route_prefix in taken:
            raise ConfigError(
                f"application {application.name!r}: route_prefix {application.route_prefix!r} is served by the "
                f"cluster's application {taken[application.route_prefix]!r}; give it another route_prefix, or "
                f"delete that application first (`serve delete`)"
            )


def _wait_running(names: list[str], deadline: float, timeout_s: float) -> None:
    from ray import serve

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
        if all(n in statuses and str(statuses[n].status).endswith("RUNNING") for n in names):
            return
        if time.monotonic() > deadline:
            raise ServeStartError(f"applications {names} did not start within {timeout_s:.0f} s: {reported}")
        time.sleep(0.5)


def _wait_ready(name: str, url: str, deadline: float) -> None:
    """Until the app's /readyz answers 200 (its replicas have loaded their bundles)."""
    said = False
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=10) as answer:
                if answer.status == 200:
                    logger.info("application %s: ready", name)
                    return
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise ServeStartError(f"application {name!r}: /readyz answered {error.code}") from None
            try:  # the replicas' load failures (none in a body that is not mmray's, e.g. Serve's proxy's)
                failed = json.loads(error.read()).get("failed")
            except (ValueError, AttributeError):
                failed = None
            if isinstance(failed, list) and failed:  # a replica never retries the committed bundles it failed to load
                raise ServeStartError(f"application {name!r} could not load its bundles: "
                                      f"{'; '.join(map(str, failed))}") from None  # fmt: skip
        except OSError:
            pass
        if not said:
            logger.info("application %s: loading its bundles", name)
            said = True
        if time.monotonic() > deadline:
            raise ServeStartError(f"application {name!r} did not load its bundles in time; see the replica logs")
        time.sleep(0.5)


def _delete_after_failed_start(names: list[str]) -> None:
    """Delete the applications of a failed start; a failure to delete them is logged, not raised over the
    start's own error."""
    logger.warning("the start failed: deleting the applications it deployed: %s", ", ".join(names))
    try:
        stop_serving(names)
    except Exception as exc:
        logger.warning("could not delete %s: %s: %s", ", ".join(names), type(exc).__name__, exc)


def stop_serving(names: list[str]) -> None:
    """Delete the applications this process started (`serve.delete`), leaving any other on the cluster."""
    from ray import serve

    for name in names:
        serve.delete(name)
