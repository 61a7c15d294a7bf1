"""NetworkPolicies against the pods they serve: the rendered policies (chart, k8s/ overlays) are evaluated with the
API's rules (tests/netpol.py) on the labels of the rendered pod templates and of `ssrl submit`'s pods. The cluster
tier (tests/test_cluster.py) applies the same check to the pods the training operator creates."""

from __future__ import annotations

import pytest

from tests.netpol import Endpoint, allowed
from tests.test_deploy import helm_render, kustomize_render


def pod_endpoints(objs: list[dict], namespace: str = "ssrl") -> dict[str, list[tuple[str, Endpoint]]]:
    """component -> (where, the pod as a NetworkPolicy sees it) for every pod template rendered."""
    pods: dict[str, list[tuple[str, Endpoint]]] = {}
    for obj in objs:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        if kind == "PyTorchJob":
            templates = [(f"{obj['metadata']['name']}/{role}", r["template"])
                         for role, r in spec["pytorchReplicaSpecs"].items()]
        elif kind == "Pod":
            templates = [(obj["metadata"]["name"], obj)]
        elif "template" in spec:
            templates = [(obj["metadata"]["name"], spec["template"])]
        else:
            continue
        for where, template in templates:
            labels = (template.get("metadata") or {}).get("labels") or {}
            pods.setdefault(labels.get("app.kubernetes.io/component", "?"), []).append(
                (f"{kind}/{where}", Endpoint(namespace, labels)))
    return pods


DNS = Endpoint("kube-system", {"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})
API_SERVER = Endpoint(ip="172.18.0.2")


def check_network(policies: list[dict], pods: dict, *, minio: bool, default_deny: bool,
                  namespace: str = "ssrl") -> None:
    """What the workloads need is allowed, what they do not is refused (``pods``: component -> [(where, Endpoint)])."""
    stranger = Endpoint(namespace, {"app": "something-else"})
    clients = [p for c in ("generate", "train", "eval", "bucket-init", "test") for p in pods.get(c, [])]
    assert pods.get("train") and pods.get("generate"), sorted(pods)
    for minio_where, minio_pod in pods.get("minio", []) if minio else []:
        for where, pod in clients:
            assert allowed(policies, pod, minio_pod, 9000), f"{where} cannot reach {minio_where}:9000"
        assert not allowed(policies, stranger, minio_pod, 9000), "a foreign pod reaches MinIO"
    for where, pod in pods["train"]:
        for other_where, other in pods["train"]:
            assert allowed(policies, pod, other, 23456), f"{where} cannot reach {other_where}'s rendezvous port"
        for gen_where, gen in pods["generate"]:
            assert not allowed(policies, gen, pod, 23456), f"{gen_where} reaches the trainer {where}"
    if default_deny:
        for where, pod in clients:
            assert allowed(policies, pod, DNS, 53, "UDP"), f"{where}: no DNS"
            assert not allowed(policies, pod, Endpoint(ip="203.0.113.9"), 8080), f"{where} reaches the internet"
        for where, pod in pods["train"]:
            assert allowed(policies, pod, API_SERVER, 6443), f"{where} cannot reach the API server (progress)"
        for where, pod in pods["generate"]:
            assert not allowed(policies, pod, API_SERVER, 6443), f"{where} reaches the API server"
        assert not allowed(policies, stranger, DNS, 53, "UDP"), "default deny does not deny"


NETWORK_SOURCES = {
    "helm-policies": lambda: helm_render("default-values.yaml", "networkPolicy.enabled=true"),
    "helm-default-deny": lambda: helm_render("default-values.yaml", "networkPolicy.enabled=true",
                                             "networkPolicy.defaultDeny=true"),
    "helm-external": lambda: helm_render("external-minio-values.yaml", "networkPolicy.defaultDeny=true"),
    "kustomize-base": lambda: kustomize_render("base"),
    "kustomize-prod": lambda: kustomize_render("overlays/prod"),
}


@pytest.mark.parametrize("source", list(NETWORK_SOURCES))
def test_network_policies_admit_the_pods_they_serve(source):
    """Selectors against the rendered pod templates' labels: under kustomize the PyTorchJob templates once lacked
    part-of (kustomize's labels skip CRDs), so an enforcing CNI kept the trainer from MinIO."""
    objs = NETWORK_SOURCES[source]()
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert policies
    if source.startswith("kustomize"):  # a policy outside the namespace protects nothing (kubectl's default ns)
        assert {p["metadata"].get("namespace") for p in policies} == {"ssrl"}, [p["metadata"] for p in policies]
    minio = any(o["kind"] == "StatefulSet" for o in objs)
    check_network(policies, pod_endpoints(objs), minio=minio,
                  default_deny=any(not (p["spec"].get("podSelector") or {}) for p in policies))


@pytest.mark.parametrize("source", ["helm-default-deny", "kustomize-prod"])
def test_network_policies_admit_ssrl_submit_pods(source):
    """`ssrl submit --name other` pods (another instance) reach the chart's / k8s/'s MinIO and rendezvous."""
    pytest.importorskip("kubeflow.training")
    from ssrl.cluster.manifests import (
        SubmitConfig,
        build_eval_job,
        build_generate_job,
        build_train_pytorchjob,
        to_dict,
    )

    objs = NETWORK_SOURCES[source]()
    cfg = SubmitConfig(name="other", namespace="ssrl", registry="registry.example.com/ssrl")
    cfg.train.workers = 1
    submitted = [to_dict(b(cfg)) for b in (build_generate_job, build_train_pytorchjob, build_eval_job)]
    pods = pod_endpoints(submitted)
    pods["minio"] = pod_endpoints(objs)["minio"]
    check_network([o for o in objs if o["kind"] == "NetworkPolicy"], pods, minio=True, default_deny=True)
