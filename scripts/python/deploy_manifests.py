"""Renders and reads the deployment manifests for crates/delf-cli/tests/deploy.rs.

Runs `helm lint` and renders helm/delf offline with Helm's own Go SDK (PyPI helm-python-sdk: no helm binary), for
the default values and for every optional part enabled (TLS included), each object validated strictly against the
Kubernetes API schemas (kubernetes-validate, offline); reads deploy/docker-compose.yml. Checks what can be checked
without a cluster (YAML without duplicate keys, the fields every object of its kind needs, pod templates matching
their selectors), then prints JSON: the delf.toml files, and every `delf` command line a container, probe or
health check runs, with the DELF_* environment it gets. The Rust test runs each through `delf config --check`.

    python scripts/python/deploy_manifests.py REPO_ROOT > manifests.json
"""

import json
import os
import re
import shlex
import sys
import tomllib

import helm_python as helm
import kubernetes_validate
import yaml


class StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (Kubernetes and compose would silently keep one)."""


def _no_duplicates(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)

# Placeholders for values Kubernetes or compose fill in at run time.
K8S_VARS = {"POD_NAME": "delf-index-0", "POD_IP": "10.0.0.7", "JOB_COMPLETION_INDEX": "0"}
API = {
    "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "StatefulSet": "apps/v1", "Deployment": "apps/v1",
    "Job": "batch/v1", "PodDisruptionBudget": "policy/v1", "PodMonitor": "monitoring.coreos.com/v1",
}


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def delf_lines(script):
    """`delf ...` invocations inside a shell script (split on && ; and newlines)."""
    out = []
    for part in re.split(r"&&|;|\n", script):
        words = shlex.split(part.strip())
        if words[:1] == ["exec"]:
            words = words[1:]
        if words[:1] == ["delf"]:
            out.append(words[1:])
    return out


def invocations(command, args):
    """The delf argument lists a container runs (image entrypoint: delf)."""
    command, args = command or [], args or []
    if command[:2] in (["/bin/sh", "-c"], ["sh", "-c"]):
        return delf_lines(" ".join(command[2:] + args))
    if command[:1] == ["delf"]:
        return [command[1:] + args]
    if not command:
        return [args]
    return []


def k8s_subst(words):
    return [re.sub(r"\$\((\w+)\)", lambda m: K8S_VARS.get(m.group(1), m.group(0)), w) for w in words]


# The Kubernetes version whose API schemas (shipped inside kubernetes-validate, offline) every rendered object must
# satisfy, strictly (no unknown fields). Custom resources (PodMonitor) have no schema there.
K8S_VERSION = "1.33"
CUSTOM_KINDS = {"PodMonitor"}


def check_schema(source, doc):
    if doc["kind"] in CUSTOM_KINDS:
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        fail(f"{source}: not a valid Kubernetes {K8S_VERSION} object at {path or '/'}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        fail(f"{source}: no Kubernetes {K8S_VERSION} schema: {e}")


def check_object(source, doc):
    for field in ("apiVersion", "kind", "metadata"):
        if field not in doc:
            fail(f"{source}: an object without {field}")
    kind = doc["kind"]
    if API.get(kind) != doc["apiVersion"]:
        fail(f"{source}: {kind} with apiVersion {doc['apiVersion']} (expected {API.get(kind)})")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"].get("name", "")):
        fail(f"{source}: bad name {doc['metadata'].get('name')!r}")
    if kind in ("StatefulSet", "Deployment"):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(f"{source}: pod labels {labels} do not match the selector {selector}")


TLS_DIR = "/etc/delf-tls"


def check_tls_config(source, toml_text):
    """With tls.enabled, [cluster.tls] names the three files of the mounted Secret and asks for mutual TLS."""
    tls = tomllib.loads(toml_text).get("cluster", {}).get("tls")
    expected = {"cert": f"{TLS_DIR}/tls.crt", "key": f"{TLS_DIR}/tls.key", "ca": f"{TLS_DIR}/ca.crt",
                "require_client_cert": True}
    if tls != expected:
        fail(f"{source}: [cluster.tls] is {tls}, expected {expected}")


def check_tls_mounts(source, spec):
    """With tls.enabled, every container of every pod mounts the certificate Secret where [cluster.tls] points."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    if volumes.get("tls", {}).get("secret", {}).get("secretName") != "delf-tls":
        fail(f"{source}: no volume `tls` from Secret delf-tls: {sorted(volumes)}")
    for container in spec["containers"]:
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        if mounts.get(TLS_DIR, {}).get("name") != "tls" or not mounts[TLS_DIR].get("readOnly"):
            fail(f"{source}: container {container['name']} does not mount the tls volume read-only at {TLS_DIR}")


def pod_spec(doc):
    if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def from_helm(root, result):
    chart = os.path.join(root, "helm", "delf")
    base = {"token": {"value": "test-token"}}
    report = helm.lint(chart, base)
    if report.get("errors") or any(m["severity"] >= 2 for m in report.get("messages", [])):
        fail(f"helm lint: {json.dumps(report)}")
    everything = dict(base, extractJob={"enabled": True}, indexBuildJob={"enabled": True, "spec": "IVF1024,PQ20x8r"},
                      podMonitor={"enabled": True}, worker={"gpu": True},
                      tls={"enabled": True, "existingSecret": "delf-tls", "requireClientCert": True})
    kinds = set()
    for label, values in (("defaults", base), ("everything", everything)):
        with helm.Chart.load(chart) as c:
            rendered = c.render(values, name="prod", namespace="search")
        for path, text in sorted(rendered.items()):
            if not text.strip() or path.endswith("NOTES.txt"):
                continue
            for doc in yaml.load_all(text, Loader=StrictLoader):
                if not doc:
                    continue
                source = f"helm {label} {path} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                check_object(source, doc)
                check_schema(source, doc)
                kinds.add(doc["kind"])
                if doc["kind"] == "ConfigMap" and "delf.toml" in doc["data"]:
                    result["configs"][f"helm-{label}"] = doc["data"]["delf.toml"]
                    if label == "everything":
                        check_tls_config(source, doc["data"]["delf.toml"])
                spec = pod_spec(doc)
                if not spec:
                    continue
                if label == "everything":
                    check_tls_mounts(source, spec)
                for container in spec["containers"]:
                    env = {e["name"]: e.get("value", "x") for e in container.get("env", []) if e["name"].startswith("DELF_")}
                    env.pop("DELF_CONFIG", None)
                    lines = invocations(container.get("command"), container.get("args"))
                    for probe in ("readinessProbe", "livenessProbe"):
                        probe_command = container.get(probe, {}).get("exec", {}).get("command")
                        if probe_command:
                            lines += invocations(probe_command, None)
                    if not lines:
                        fail(f"{source}: container {container['name']} runs no delf command")
                    for words in lines:
                        result["invocations"].append(
                            {"source": f"{source} {container['name']}", "config": f"helm-{label}",
                             "args": k8s_subst(words), "env": env})
    return kinds


def from_compose(root, result):
    path = os.path.join(root, "deploy", "docker-compose.yml")
    with open(path) as f:
        compose = yaml.load(f, Loader=StrictLoader)
    with open(os.path.join(root, "deploy", "compose", "delf.toml")) as f:
        result["configs"]["compose"] = f.read()
    with open(os.path.join(root, "deploy", "docker-compose.tls.yml")) as f:
        tls_overrides = yaml.load(f, Loader=StrictLoader)["services"]
    for name, service in compose["services"].items():
        if not str(service.get("image", "")).startswith("delf:"):
            continue
        lines = invocations(service.get("entrypoint"), service.get("command"))
        if not lines:
            fail(f"compose {name}: runs no delf command")
        env = {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("DELF_")}
        env.pop("DELF_CONFIG", None)
        tls = tls_overrides.get(name)
        if tls is None:
            fail(f"deploy/docker-compose.tls.yml: service {name} is missing (it would talk plaintext to TLS peers)")
        if "./compose/tls:/etc/delf-tls:ro" not in tls.get("volumes", []):
            fail(f"deploy/docker-compose.tls.yml: service {name} does not mount ./compose/tls")
        tls_env = dict(env, **{k: str(v) for k, v in tls.get("environment", {}).items()})
        for words in lines:
            result["invocations"].append({"source": f"compose {name}", "config": "compose", "args": words, "env": env})
            result["invocations"].append(
                {"source": f"compose+tls {name}", "config": "compose", "args": words, "env": tls_env})


def from_dockerfiles(root, result):
    """The DELF_* settings images bake in (ENV) and their health check, run against the compose configuration."""
    for name in ("Dockerfile", "Dockerfile.cuda"):
        with open(os.path.join(root, "deploy", name)) as f:
            text = f.read().replace("\\\n", " ")
        env = {}
        for line in text.splitlines():
            if line.startswith("ENV "):
                for word in shlex.split(line[4:]):
                    key, _, value = word.partition("=")
                    if key.startswith("DELF_"):
                        env[key] = value
        checks = re.findall(r'delf -q health \\?"\$HEALTH_ADDR\\?"', text)
        if not checks:
            fail(f"deploy/{name}: no `delf -q health` health check")
        result["invocations"].append(
            {"source": f"deploy/{name} HEALTHCHECK", "config": "compose", "args": ["-q", "health", "127.0.0.1:7700"], "env": env})


def main():
    root = sys.argv[1]
    result = {"configs": {}, "invocations": [], "kinds": []}
    result["kinds"] = sorted(from_helm(root, result))
    from_compose(root, result)
    from_dockerfiles(root, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
