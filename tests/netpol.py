"""NetworkPolicy semantics (networking.k8s.io/v1) for the deploy and cluster tests: is a connection allowed?

An enforcing CNI is not available here, so the tests apply the API's documented rules to the real rendered
policies and the real pods' labels (rendered templates, or the pods the training operator created): a pod
selected by no policy of a direction is open in that direction; a selected pod admits a connection when any
rule of any selecting policy matches the peer and the port. Only the fields our manifests use are modelled,
each exactly (matchLabels, matchExpressions, namespaceSelector, ipBlock with except, ports with protocol and
endPort; a named port fails loudly).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, the namespace's labels) or an address outside the cluster's pods (ip)."""

    namespace: str = ""
    labels: dict = field(default_factory=dict, hash=False)
    namespace_labels: dict = field(default_factory=dict, hash=False)
    ip: str = ""


def selects(selector: dict | None, labels: dict) -> bool:
    """LabelSelector semantics; an empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not other.ip:
            return False  # pod traffic is matched by pod/namespace selectors (as CNIs do for pod IPs)
        addr = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except") or [])
    if other.ip:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if not isinstance(p["port"], int):
            raise ValueError(f"named port {p['port']!r}: not modelled, use numbers")
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def _side_allows(policies: list[dict], me: Endpoint, other: Endpoint, port: int, protocol: str,
                 direction: str) -> bool:
    if me.ip:
        return True  # outside the cluster's pods: no policy applies there
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if p["metadata"]["namespace"] == me.namespace
                 and direction in _types(p) and selects(p["spec"].get("podSelector"), me.labels)]
    if not selecting:
        return True
    for p in selecting:
        ns = p["metadata"]["namespace"]
        for rule in p["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, ns, other) for peer in peers)) and \
                    _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(policies: list[dict], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP",
            namespace: str = "ssrl") -> bool:
    """Whether ``src`` may open a connection to ``dst:port``: the source's egress and the target's ingress.

    Policies without a namespace (``helm template`` output) are taken to be in ``namespace``."""
    policies = [{**p, "metadata": {"namespace": namespace, **p["metadata"]}}
                for p in policies if p.get("kind") == "NetworkPolicy"]
    return (_side_allows(policies, src, dst, port, protocol, "Egress")
            and _side_allows(policies, dst, src, port, protocol, "Ingress"))
