"""Reads every Kubernetes manifest under the directory given (k8s/), and prints, as JSON, per
workflow directory: its ConfigMaps' data and each workload's containers (image, args, and which
ConfigMap each mount path holds), with the pod's terminationGracePeriodSeconds. A file that is
not valid YAML fails the run with its name."""

import json
import pathlib
import sys

import yaml

root = pathlib.Path(sys.argv[1])
out = {}
for path in sorted(root.rglob("*.yaml")):
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        sys.exit(f"{path}: {err}")
    flow = out.setdefault(str(path.parent.relative_to(root)), {"configmaps": {}, "workloads": []})
    for doc in docs:
        kind, meta = doc.get("kind"), doc.get("metadata", {})
        if kind == "ConfigMap":
            flow["configmaps"][meta["name"]] = doc.get("data", {})
            continue
        spec = doc.get("spec", {}).get("template", {}).get("spec")
        if spec is None:
            continue
        volumes = {v["name"]: v.get("configMap", {}).get("name") for v in spec.get("volumes", [])}
        containers = [
            {
                "image": c.get("image", ""),
                "args": c.get("args", []),
                "mounts": {m["mountPath"]: volumes.get(m["name"]) for m in c.get("volumeMounts", [])},
            }
            for c in spec.get("containers", [])
        ]
        flow["workloads"].append({
            "file": str(path),
            "kind": kind,
            "name": meta.get("name"),
            "grace": spec.get("terminationGracePeriodSeconds"),
            "service_links": spec.get("enableServiceLinks", True),
            "containers": containers,
        })
print(json.dumps(out))
