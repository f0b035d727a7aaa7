"""Renders our kustomizations in Python, as ``kustomize build`` would, for the features we use.

No kustomize binary is needed: ``resources`` (files and directories), ``namespace``,
``configMapGenerator`` (``files``, with a content-hash name suffix and the references to it
rewritten) and ``images``. Anything else in a kustomization is refused, so a new feature
cannot be silently ignored. Files outside the kustomization's directory are allowed, as with
``--load-restrictor LoadRestrictionsNone``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def build(directory: Path) -> list[Object]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    assert not unknown, f"{directory}: the test renderer does not know {sorted(unknown)}"
    objects: list[Object] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    renames: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = generate_config_map(directory, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        objects.append(config_map)
    for obj in objects:
        rename_config_maps(obj, renames)
        for image in kustomization.get("images", []):
            set_image(obj, image)
        if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return objects


def generate_config_map(directory: Path, generator: Object) -> Object:
    assert set(generator) <= {"name", "files"}, generator
    data: dict[str, str] = {}
    for entry in generator["files"]:
        key, sep, source = entry.partition("=")
        path = directory / (source if sep else entry)
        data[key if sep else path.name] = path.read_text()
    name = f"{generator['name']}-{config_map_hash(generator['name'], data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def config_map_hash(name: str, data: dict[str, str]) -> str:
    """A content-hash name suffix, as kustomize adds (the same length, not the same digest)."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": name}, sort_keys=True)
    digest = hashlib.sha256(encoded.encode()).hexdigest()
    # Vowels and digits that could spell words are swapped out, as kustomize does.
    return "".join(
        {"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}.get(c, c) for c in digest[:10]
    )


def pod_spec(obj: Object) -> Object | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def rename_config_maps(obj: Object, renames: dict[str, str]) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    for volume in spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        for source in sources:
            ref = source.get("configMap")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for env_from in container.get("envFrom", []):
            ref = env_from.get("configMapRef")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]


def set_image(obj: Object, image: Object) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, _ = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
