"""A real Kubernetes control plane on loopback for the cluster tier: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, the Kubeflow training operator v1.9 and KWOK, all built from
source by ``scripts/tools.sh cluster``.

A temporary certificate authority signs the API server's serving certificate and an admin client
certificate (``system:masters``); the components and the tests share that admin kubeconfig, and RBAC is
checked by impersonating service accounts (``kubectl auth can-i --as``). KWOK plays the kubelets of fake GPU
nodes (``nvidia.com/gpu`` capacity): pods become Running, and pods that are meant to finish
(``restartPolicy`` Never/OnFailure) complete after a short delay, so Jobs and PyTorchJobs reach Succeeded.

Not wired: the operator's admission webhook (the API server would need kube-proxy to reach its Service);
PyTorchJobs are still validated by the CRD's schema.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import PYTORCHJOB_CRD
from tests.servers import free_port, tool

KUBE_TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "training-operator.v1", "kwok")
GPU_NODES = ("gpu-node-0", "gpu-node-1", "gpu-node-2", "gpu-node-3")
#: A node without GPUs (and more CPU and memory, which the scheduler's scoring favours): a pod landing on a GPU
#: node then shows its GPU request was honoured, not that no other node existed.
CPU_NODES = ("cpu-node-0",)
LOG_LINES = ("ssrl train: step 1/2 reward 0.10", "ssrl train: step 2/2 reward 0.30")
#: KWOK's pod stages (Running at once; finishing pods Succeeded 3 s later; deleted pods released).
POD_STAGES = Path(__file__).with_name("kwok-stages.yaml")


def wait_daemon(what: str, ok, timeout: float, proc: subprocess.Popen, log_tail, interval: float = 0.3) -> None:
    """Poll ``ok()`` until true; fail early, with the daemon's log, when the daemon ``proc`` that should make it
    true exits (a start-up error), or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the daemon exited ({proc.returncode}):\n{log_tail()}")
        if ok():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{log_tail()}")


def _pki(d: Path, address: str = "127.0.0.1") -> None:
    """CA, API server serving cert (loopback, ``address`` + in-cluster names), admin client cert, service-account
    key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def write_key(k: rsa.RSAPrivateKey, name: str) -> None:
        (d / name).write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))

    def cert(subject: x509.Name, k: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey,
             ca: bool = False, sans: list[x509.GeneralName] | None = None, client: bool = False) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), False)
        return b.sign(signer, hashes.SHA256())

    def pem(c: x509.Certificate, name: str) -> None:
        (d / name).write_bytes(c.public_bytes(serialization.Encoding.PEM))

    d.mkdir(parents=True, exist_ok=True)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ssrl-test-ca")])
    pem(cert(ca_name, ca_key, ca_name, ca_key, ca=True), "ca.crt")
    write_key(ca_key, "ca.key")
    server_key = key()
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(ip))
                                              for ip in sorted({"127.0.0.1", address, "10.96.0.1"})]
    pem(cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), server_key, ca_name, ca_key,
             sans=sans), "apiserver.crt")
    write_key(server_key, "apiserver.key")
    admin_key = key()
    admin = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                       x509.NameAttribute(NameOID.COMMON_NAME, "ssrl-admin")])
    pem(cert(admin, admin_key, ca_name, ca_key, client=True), "admin.crt")
    write_key(admin_key, "admin.key")
    sa_key = key()
    write_key(sa_key, "sa.key")
    (d / "sa.pub").write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))


@dataclass
class Cluster:
    root: Path
    api_port: int = field(default_factory=free_port)
    #: Where the API server listens and what it advertises as the ``kubernetes`` Service's endpoint (real pods
    #: need an address they can route to: tests/realnode.py gives its bridge's).
    address: str = "127.0.0.1"
    #: KWOK's fake nodes; none where real nodes run the pods (a pod without a nodeSelector, a chart hook say,
    #: would otherwise "succeed" on a fake node without running).
    fake_nodes: tuple[str, ...] = GPU_NODES + CPU_NODES
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    def env(self) -> dict[str, str]:
        """What a user's shell has: KUBECONFIG pointing at the cluster (helm, kubectl, ssrl all read it)."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(self.root / "helm/cache"),
                "HELM_CONFIG_HOME": str(self.root / "helm/config"), "HELM_DATA_HOME": str(self.root / "helm/data")}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(tool("kubectl")), *args], capture_output=True, text=True, env=self.env(), input=input,
                           timeout=timeout)
        if check and r.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
        return r

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                            env={**os.environ, **(env or {})}, start_new_session=True)

    def log_tail(self, name: str, n: int = 40) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def _wait(self, what: str, ok, timeout: float, proc: str) -> None:
        wait_daemon(what, ok, timeout, self.procs[proc], lambda: self.log_tail(proc))

    def start(self) -> None:
        bins = {name: str(tool(name)) for name in KUBE_TOOLS}
        pki = self.root / "pki"
        _pki(pki, self.address)
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: ssrl-test
  cluster: {{server: "{self.server}", certificate-authority: "{pki / 'ca.crt'}"}}
users:
- name: admin
  user: {{client-certificate: "{pki / 'admin.crt'}", client-key: "{pki / 'admin.key'}"}}
contexts:
- name: ssrl-test
  context: {{cluster: ssrl-test, user: admin, namespace: default}}
current-context: ssrl-test
""")
        etcd_port, peer_port = free_port(), free_port()
        self._spawn("etcd", [bins["etcd"], "--data-dir", str(self.root / "etcd"), "--listen-client-urls",
                             f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls",
                             f"http://127.0.0.1:{etcd_port}", "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}", "--initial-cluster",
                             f"default=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync", "--log-level", "warn"])
        self._spawn("kube-apiserver", [
            bins["kube-apiserver"], f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--secure-port={self.api_port}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}",
            f"--cert-dir={self.root / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC", "--allow-privileged=false",
            "--enable-priority-and-fairness=false", "--profiling=false", "--v=1",
            "--kubelet-preferred-address-types=InternalIP"])  # KWOK's "kubelet" (logs) is on 127.0.0.1
        self._wait("kube-apiserver", lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
                   120, "kube-apiserver")
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        self._spawn("kube-controller-manager", [
            bins["kube-controller-manager"], *common, f"--secure-port={free_port()}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
            "--concurrent-job-syncs=5", "--v=1",
            # KWOK renews the fake nodes' leases; on 2 busy cores a renewal can come late, and the default 50 s
            # grace turns the nodes NotReady, which un-readies their pods for good (KWOK's stages run once), so
            # `helm --wait` then waits for a MinIO that never turns Ready again. This tier does not test node loss.
            "--node-monitor-grace-period=10m"])
        # A pod found unschedulable just before its claim binds waits for the next retry of unschedulable pods,
        # 5 min by default (longer than helm --wait gives it); retry every 5 s instead.
        self._spawn("kube-scheduler", [bins["kube-scheduler"], *common, f"--secure-port={free_port()}", "--v=1",
                                       "--pod-max-in-unschedulable-pods-duration=5s"])
        for crd in self.crd_files():
            self.kubectl("apply", "--server-side", "-f", str(crd))
        self.kubectl("create", "namespace", "kubeflow")
        # The operator's certificate controller fills this Secret and waits for a webhook configuration to
        # inject its CA into; an empty one is enough here (the webhook itself is not reachable, see above).
        self.kubectl("create", "secret", "generic", "training-operator-webhook-cert", "-n", "kubeflow")
        self.kubectl("apply", "-f", "-", input="apiVersion: admissionregistration.k8s.io/v1\n"
                     "kind: ValidatingWebhookConfiguration\n"
                     "metadata: {name: validator.training-operator.kubeflow.org}\nwebhooks: []\n")
        # ... and for the Secret's files where the kubelet would mount them; the webhook server needs some
        # certificate to start (the operator process reads this fixed path).
        certs = Path("/tmp/k8s-webhook-server/serving-certs")
        certs.mkdir(parents=True, exist_ok=True)
        for src, dst in (("apiserver.crt", "tls.crt"), ("apiserver.key", "tls.key")):
            if not (certs / dst).exists():
                (certs / dst).write_bytes((pki / src).read_bytes())
        self._spawn("training-operator", [
            bins["training-operator.v1"], "--enable-scheme=pytorchjob",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}", f"--webhook-server-port={free_port()}",
            f"--kubeconfig={self.kubeconfig}"], env={"MY_POD_NAMESPACE": "kubeflow"})
        if self.fake_nodes:
            # KWOK also plays the kubelets' API: every container's log is LOG_LINES (CRI format), served over TLS on
            # 127.0.0.1, where the API server's `pods/log` proxy reaches it.
            (self.root / "pod.log").write_text("".join(f"2026-01-01T00:00:0{i}.000000000Z stdout F {line}\n"
                                                       for i, line in enumerate(LOG_LINES)))
            (self.root / "logs.yaml").write_text("apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\n"
                                                 "metadata: {name: every-pod}\nspec:\n  selector: {}\n"
                                                 f"  logs:\n  - logsFile: {self.root / 'pod.log'}\n")
            kubelet_port = free_port()
            self._spawn("kwok", [bins["kwok"], f"--kubeconfig={self.kubeconfig}", "--config", str(POD_STAGES),
                                 "--config", str(self.root / "logs.yaml"), "--manage-all-nodes=false",
                                 "--manage-nodes-with-label-selector=type=kwok", "--cidr=10.0.0.1/16",
                                 "--node-ip=127.0.0.1", f"--node-port={kubelet_port}",
                                 f"--server-address=127.0.0.1:{kubelet_port}",
                                 f"--tls-cert-file={pki / 'apiserver.crt'}",
                                 f"--tls-private-key-file={pki / 'apiserver.key'}"])
            for name in self.fake_nodes:
                self.kubectl("apply", "-f", "-", input=_node(name, gpus=0 if name in CPU_NODES else 8))
            for i in range(8):  # pre-provisioned volumes for StatefulSets' claims (no provisioner runs here)
                self.kubectl("apply", "-f", "-", input=_volume(f"pv-{i}"))
            self._wait("fake GPU nodes", self._nodes_ready, 60, "kwok")
        self._wait("default service account", lambda: self.kubectl(
            "get", "serviceaccount", "default", check=False).returncode == 0, 60, "kube-controller-manager")

    def crd_files(self) -> list[Path]:
        """The PyTorchJob CRD the operator serves: ../shared/crds when present, else the operator module's own."""
        if PYTORCHJOB_CRD.exists():
            return [PYTORCHJOB_CRD]
        cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
        return [Path(cache) / "github.com/kubeflow/training-operator@v1.9.0/manifests/base/crds" /
                "kubeflow.org_pytorchjobs.yaml"]

    def _nodes_ready(self) -> bool:
        r = self.kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
                         check=False)
        return r.returncode == 0 and r.stdout.split() == ["True"] * len(self.fake_nodes)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _node(name: str, gpus: int) -> str:
    # ephemeral-storage as a real kubelet reports it: the pods request it for their scratch emptyDirs.
    resources = (f'{{cpu: "128", memory: 2Ti, pods: "110", ephemeral-storage: 8Ti, nvidia.com/gpu: "{gpus}"}}' if gpus
                 else '{cpu: "1024", memory: 16Ti, pods: "110", ephemeral-storage: 8Ti}')
    present = "true" if gpus else "false"
    return f"""apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{type: kwok, kubernetes.io/hostname: {name}, kubernetes.io/os: linux, nvidia.com/gpu.present: "{present}"}}
  annotations: {{node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}}
status:
  allocatable: {resources}
  capacity: {resources}
"""


def _volume(name: str) -> str:
    return f"""apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: 4Ti}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: ""
  hostPath: {{path: /tmp/ssrl-kwok-{name}}}
"""
