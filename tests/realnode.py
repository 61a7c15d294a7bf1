"""A real node for the opt-in ``realnode`` tier: containerd + runc, a CNI bridge and a real kubelet v1.34.2 that
registers with the control plane of tests/kube.py, so pods run the project's real images (issue 11).

Needs root, Debian's ``containerd``, ``runc``, ``containernetworking-plugins`` and ``iptables``, cgroup v1 or v2
mounted under /sys/fs/cgroup, and ``scripts/tools.sh realnode`` (kubelet, kube-proxy) and
``scripts/realnode/images.sh`` (pause, base, init, generator and trainer images).

Everything stays on loopback and on addresses this module creates: the bridge ``ssrlrn0`` with the gateway
address ``GATEWAY`` is made before the kubelet starts and is the node's InternalIP (the kubelet refuses
loopback), the kubelet serves on it, and servers the pods talk to (the API server, the test's MinIO) listen on
it. The CNI
bridge has no IP masquerade and the pods no default route, only routes to their subnet and to the Service
range (via the gateway, where kube-proxy's iptables rules translate ClusterIPs). kube-proxy and CoreDNS run as
host daemons (CoreDNS on the gateway address, the kubelet's clusterDNS, serving the cluster domain only).
No registry: the sandbox image is a local pause image and every pod uses ``imagePullPolicy: Never``.

What it changes outside its temp folder, and removes in :meth:`RealNode.stop` (also after a failed start, and
at the next start if a run was killed, from the state file ``STATE``): the bridge; the kubelet's and
kube-proxy's iptables chains (``KUBE-*``, IPv4 and IPv6, and the jumps to them from the built-in chains); the cgroups
``/sys/fs/cgroup/<controller>/ssrl-realnode`` (the kubelet's cgroupRoot; ``unified`` too on a hybrid host); mounts
under the temp folder; three host sysctls the kubelet sets (``vm.overcommit_memory``, ``kernel.panic``,
``kernel.panic_on_oops``), restored to their earlier values; the host folders in ``HOST_DIRS`` (kubelet
device-plugins socket, ``/var/log/containers`` links, libcni's cache: paths they hardcode), removed when this run
created them, else only this run's entries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.kube import Cluster, wait_daemon
from tests.servers import ACCESS_KEY, ROOT, SECRET_KEY, S3Server, free_port, tool

NODE = "ssrl-real-0"
BRIDGE = "ssrlrn0"
SUBNET = "10.213.77.0/24"
GATEWAY = "10.213.77.1"
#: tests/kube.py's --service-cluster-ip-range: pods route it via the gateway, where kube-proxy's rules DNAT it.
SERVICE_CIDR = "10.96.0.0/16"
CNI_NETWORK = "ssrl-realnode"
CGROUP = "ssrl-realnode"
PAUSE_IMAGE = "localhost/ssrl-pause:1"
GENERATOR_IMAGE = "localhost/ssrl-generator:realnode"
TRAINER_IMAGE = "localhost/ssrl-trainer:realnode"
#: The training operator's init container for Worker pods (waits for the Master's name); its default is
#: alpine:3.10 from Docker Hub, which no air-gapped node pulls (scripts/realnode/images.sh init).
INIT_IMAGE = "localhost/ssrl-init:1"
#: The kubelet sets these when protectKernelDefaults is false (its default); restored at stop.
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
#: Every iptables chain the kubelet and kube-proxy make starts with this (nothing else on the host uses it).
KUBE_CHAIN_PREFIX = "KUBE-"
CNI_BIN = Path("/usr/lib/cni")
#: Host folders the kubelet and libcni use whatever their configuration (device-plugins socket, /var/log/containers
#: links, libcni's result cache): removed at stop when this run created them, else only our entries in them.
HOST_DIRS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/var/lib/cni"),
             Path("/run/containerd"))  # containerd 1.6 puts shim sockets in /run/containerd/s whatever its state
#: Where a run records what it made, so the next start can clean up after a run that was killed.
STATE = Path(os.environ.get("SSRL_REALNODE_CACHE", Path.home() / ".cache/ssrl-realnode")) / "active.json"
IMAGES = ROOT / "scripts" / "realnode" / "images.sh"


def missing() -> list[str]:
    """What this machine lacks for a real node (empty: all there)."""
    gaps = [f"{b} (apt-get install containerd runc iptables)" for b in ("containerd", "ctr", "runc", "iptables")
            if not shutil.which(b)]
    gaps += [f"{CNI_BIN}/{p} (apt-get install containernetworking-plugins)"
             for p in ("bridge", "host-local", "loopback") if not (CNI_BIN / p).exists()]
    if os.geteuid() != 0:
        gaps.append("root")
    return gaps


def images(which: str = "all") -> list[str]:
    """What scripts/realnode/images.sh builds (cached; rebuilt only when missing or sources changed): OCI archive
    paths, or ``podman:<ref>`` for an image too large to write out (the trainer), streamed at import."""
    r = subprocess.run([str(IMAGES), which], capture_output=True, text=True, timeout=3600)
    if r.returncode:
        raise RuntimeError(f"{IMAGES} {which} failed:\n{r.stderr[-4000:]}")
    return r.stdout.split()


def _sh(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


class RealCluster(Cluster):
    """The control plane of tests/kube.py on the bridge's gateway address (pods reach the ``kubernetes`` Service's
    ClusterIP, which kube-proxy translates to it; :meth:`RealNode.prepare` makes the bridge first), with the API
    server given a client certificate for kubelets (so ``kubectl logs/exec`` reach a real kubelet, which
    authenticates its callers). No KWOK nodes: every pod runs for real."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, address=GATEWAY, fake_nodes=())

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        if name == "kube-apiserver":
            pki = self.root / "pki"
            cmd = [*cmd, f"--kubelet-client-certificate={pki / 'admin.crt'}",
                   f"--kubelet-client-key={pki / 'admin.key'}"]
        if name == "training-operator":
            cmd = [*cmd, f"--pytorch-init-container-image={INIT_IMAGE}"]
        super()._spawn(name, cmd, env)


class BridgeMinio(S3Server):
    """The test's MinIO, listening on the bridge's gateway address, which the pods reach (and the host too)."""

    @property
    def endpoint(self) -> str:
        return f"http://{GATEWAY}:{self.port}"

    def _command(self) -> list[str]:
        return [a.replace(f"127.0.0.1:{self.port}", f"{GATEWAY}:{self.port}") for a in super()._command()]

    def _ready(self) -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=1).close()
            return True
        except Exception:
            return False

    def make_bucket(self, name: str) -> None:
        from minio import Minio

        client = Minio(f"{GATEWAY}:{self.port}", ACCESS_KEY, SECRET_KEY, secure=False)
        if not client.bucket_exists(name):
            client.make_bucket(name)


def _sign_node_cert(cluster_pki: Path, out: Path) -> None:
    """The kubelet's client certificate (system:node:<NODE> in system:nodes), signed by the cluster's CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate((cluster_pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((cluster_pki / "ca.key").read_bytes(), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{NODE}")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "node.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "node.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))


def _cgroup_dirs() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # cgroup v2
        return [base / CGROUP]
    return [base / c / CGROUP for c in ("blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids",
                                       "systemd", "unified", "hugetlb", "net_cls", "net_prio", "perf_event")
            if (base / c).is_dir() and not (base / c).is_symlink()]


@dataclass
class RealNode:
    cluster: Cluster
    root: Path
    gpus: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    made_dirs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    prepared: bool = False

    @property
    def sock(self) -> Path:
        return self.root / "ctrd" / "containerd.sock"

    def log_tail(self, name: str, n: int = 40) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                            start_new_session=True)
        (self.root / "pids").mkdir(exist_ok=True)
        (self.root / "pids" / name).write_text(str(self.procs[name].pid))

    def _wait(self, what: str, ok, timeout: float, proc: str) -> None:
        wait_daemon(what, ok, timeout, self.procs[proc], lambda: self.log_tail(proc))

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["ctr", "-a", str(self.sock), "-n", "k8s.io", *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode:
            raise RuntimeError(f"ctr {' '.join(args)}: {r.stderr.strip()}")
        return r

    # -- start ---------------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """What the host needs before the control plane starts: a killed run's leftovers gone, this run's state
        file, the bridge with the gateway address (the API server listens on it) and the kubelet's cgroups."""
        cleanup_leftovers()
        self.prepared = True
        self.root.mkdir(parents=True, exist_ok=True)
        STATE.parent.mkdir(parents=True, exist_ok=True)
        self.sysctls = {k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS}
        self.made_dirs = [str(d) for d in HOST_DIRS if not d.exists()]
        self._save_state()
        _sh("ip", "link", "add", BRIDGE, "type", "bridge", check=True)
        _sh("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE, check=True)
        _sh("ip", "link", "set", BRIDGE, "up", check=True)
        for d in _cgroup_dirs():
            d.mkdir(exist_ok=True)
            if d.parent.name == "cpuset":  # a new cpuset is empty until given its parent's cpus and mems
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((d.parent / f).read_text())

    def start(self, archives: list[str]) -> None:
        """containerd (images imported from ``archives``, the pause image first), CNI, kubelet; node Ready."""
        if not self.prepared:
            self.prepare()
        self._containerd(archives)
        self._kubelet()

    def _save_state(self) -> None:
        STATE.write_text(json.dumps({"root": str(self.root), "sysctls": self.sysctls, "made_dirs": self.made_dirs,
                                     "pid": os.getpid(), "pid_start": _start_time(os.getpid())}))

    def _containerd(self, archives: list[str]) -> None:
        c = self.root / "ctrd"
        (self.root / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (self.root / "cni" / "net.d" / "10-ssrl.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": CNI_NETWORK, "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                         "routes": [{"dst": SERVICE_CIDR, "gw": GATEWAY}],
                         "dataDir": str(self.root / "cni" / "ipam")}}]}))
        c.mkdir(parents=True, exist_ok=True)
        (c / "config.toml").write_text(f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{c / 'debug.sock'}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{c / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.root / 'cni' / 'net.d'}"
    max_conf_num = 1
""")
        t0 = time.monotonic()
        self._spawn("containerd", ["containerd", "--config", str(c / "config.toml")])
        self._wait("containerd", lambda: self.sock.exists() and self.ctr("version", check=False).returncode == 0,
                   60, "containerd")
        self.timings["containerd up"] = time.monotonic() - t0
        t0 = time.monotonic()
        for archive in archives:
            if archive.startswith("podman:"):  # streamed from podman's storage, never written out whole
                save = subprocess.Popen([str(IMAGES), "save", archive.removeprefix("podman:")], stdout=subprocess.PIPE)
                r = subprocess.run(["ctr", "-a", str(self.sock), "-n", "k8s.io", "images", "import", "-"],
                                   stdin=save.stdout, capture_output=True, text=True, timeout=1800)
                save.stdout.close()
                if save.wait(60) or r.returncode:
                    raise RuntimeError(f"importing {archive}: {r.stderr.strip()}")
            else:
                self.ctr("images", "import", archive)
        self.timings["images imported"] = time.monotonic() - t0

    def _kubelet(self) -> None:
        pki = self.root / "pki"
        cluster_pki = self.cluster.root / "pki"
        _sign_node_cert(cluster_pki, pki)
        (self.root / "node.kubeconfig").write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: ssrl-test
  cluster: {{server: "{self.cluster.server}", certificate-authority: "{cluster_pki / 'ca.crt'}"}}
users:
- name: node
  user: {{client-certificate: "{pki / 'node.crt'}", client-key: "{pki / 'node.key'}"}}
contexts:
- name: node
  context: {{cluster: ssrl-test, user: node}}
current-context: node
""")
        self.kubelet_port, healthz = free_port(), free_port()
        (self.root / "kubelet-config.yaml").write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {GATEWAY}
port: {self.kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{cluster_pki / 'ca.crt'}"}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{self.sock}
imageServiceEndpoint: unix://{self.sock}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP}
failCgroupV1: false
failSwapOn: false
podLogsDir: {self.root / 'podlogs'}
volumePluginDir: {self.root / 'volume-plugins'}
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
oomScoreAdj: 0
serializeImagePulls: false
clusterDNS: ["{GATEWAY}"]
clusterDomain: cluster.local
""")
        t0 = time.monotonic()
        self._spawn("kubelet", [str(tool("kubelet")), f"--config={self.root / 'kubelet-config.yaml'}",
                                f"--kubeconfig={self.root / 'node.kubeconfig'}", f"--root-dir={self.root / 'kubelet'}",
                                f"--cert-dir={pki}", f"--hostname-override={NODE}", f"--node-ip={GATEWAY}",
                                "--node-labels=ssrl.io/real-node=true", "--v=1"])
        self._wait("real node Ready", self.ready, 120, "kubelet")
        self.timings["kubelet to Ready"] = time.monotonic() - t0
        # An extended resource as a GPU device plugin would advertise it; the containers run on CPU.
        patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(self.gpus)}]
        self.cluster.kubectl("patch", "node", NODE, "--subresource=status", "--type=json", "-p", json.dumps(patch))
        self._wait("nvidia.com/gpu allocatable", lambda: self.cluster.kubectl(
            "get", "node", NODE, "-o", r"jsonpath={.status.allocatable.nvidia\.com/gpu}", check=False
        ).stdout.strip() == str(self.gpus), 60, "kubelet")
        t0 = time.monotonic()
        self._services()
        self.timings["kube-proxy + CoreDNS"] = time.monotonic() - t0

    def _services(self) -> None:
        """kube-proxy (iptables mode) and CoreDNS as host daemons: ClusterIPs and Service names work in pods.

        CoreDNS runs on the host, listening on the gateway address (the kubelet's clusterDNS): no cluster DNS
        image is built here; it serves the cluster domain only (no ``forward``: pods resolve nothing outside the
        cluster)."""
        kubeconfig = self.cluster.kubeconfig
        health_port = free_port()
        (self.root / "kube-proxy.yaml").write_text(f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {{kubeconfig: "{kubeconfig}"}}
hostnameOverride: {NODE}
bindAddress: {GATEWAY}
healthzBindAddress: 127.0.0.1:{health_port}
metricsBindAddress: 127.0.0.1:{free_port()}
clusterCIDR: {SUBNET}
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
iptables: {{localhostNodePorts: false, masqueradeAll: false}}
""")
        self._spawn("kube-proxy", [str(tool("kube-proxy")), f"--config={self.root / 'kube-proxy.yaml'}", "--v=1"])
        ready_port = free_port()
        (self.root / "Corefile").write_text(f""".:53 {{
    bind {GATEWAY}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} ssrl-test
    }}
}}
""")
        self._spawn("coredns", [str(tool("coredns")), "-conf", str(self.root / "Corefile")])

        def up(port: int, path: str) -> bool:
            import urllib.request

            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).close()
                return True
            except Exception:
                return False

        self._wait("kube-proxy", lambda: up(health_port, "/healthz"), 60, "kube-proxy")
        self._wait("CoreDNS", lambda: up(ready_port, "/ready"), 60, "coredns")

    def ready(self) -> bool:
        r = self.cluster.kubectl("get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                 check=False)
        return r.stdout.strip() == "True"

    # -- stop ----------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Pods, kubelet, containers, containerd, then everything made on the host (see the module docstring)."""
        errors: list[str] = []
        t0 = time.monotonic()
        kubelet = self.procs.get("kubelet")
        if kubelet and kubelet.poll() is None:
            # Let the kubelet tear the pods down through the CRI (CNI DEL, netns, cgroups) while it still runs.
            self.cluster.kubectl("delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NODE}",
                                 "--grace-period=0", "--force", "--wait=false", check=False, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._tasks(running=True):
                time.sleep(0.5)
        self.timings["pods removed"] = time.monotonic() - t0
        for name in ("coredns", "kube-proxy", "kubelet", "containerd"):
            if name == "containerd":
                self._kill_containers()
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.timings["daemons stopped"] = time.monotonic() - t0
        self.cluster.kubectl("delete", "node", NODE, "--wait=false", check=False, timeout=30)
        errors += cleanup(self.root, self.sysctls, self.made_dirs)
        errors += leftovers(self.root, self.sysctls, self.made_dirs)
        STATE.unlink(missing_ok=True)
        if errors:
            raise RuntimeError("real node teardown left:\n" + "\n".join(errors))

    def _tasks(self, running: bool = False) -> list[str]:
        """containerd's tasks (containers with a process or a not yet deleted exit), or only the RUNNING ones."""
        if not self.procs.get("containerd") or self.procs["containerd"].poll() is not None:
            return []
        r = self.ctr("tasks", "ls", check=False, timeout=30)
        rows = [line.split() for line in r.stdout.splitlines()[1:]] if r.returncode == 0 else []
        return [row[0] for row in rows if row and (not running or row[-1] == "RUNNING")]

    def _kill_containers(self) -> None:
        for task in self._tasks():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False, timeout=30)
        time.sleep(0.5)
        for task in self._tasks():
            self.ctr("tasks", "delete", "-f", task, check=False, timeout=30)


def _shim_pids(root: Path) -> list[int]:
    """containerd shims started for this root's containerd (they outlive it: own session)."""
    sock = str(root / "ctrd" / "containerd.sock")
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
                pids.append(int(p.name))
    return pids


def _start_time(pid: int) -> str:
    """A process's start time (field 22 of /proc/PID/stat): with the pid, tells a live owner from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _kill_naming(folder: Path) -> None:
    """SIGKILL every process whose command line names ``folder`` (a killed run's daemons, by their own pids)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            with contextlib.suppress(OSError):
                if str(folder) + "/" in (p / "cmdline").read_text(errors="replace"):
                    os.kill(int(p.name), signal.SIGKILL)


def cleanup(root: Path, sysctls: dict[str, str], made_dirs: list[str]) -> list[str]:
    """Remove what a node under ``root`` made on the host; returns what could not be removed."""
    errors: list[str] = []
    # Processes recorded in pids/ (a killed run's daemons), then the shims.
    for f in sorted((root / "pids").glob("*")) if (root / "pids").is_dir() else []:
        try:
            pid = int(f.read_text())
            if str(root) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
    for pid in _shim_pids(root):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    # Mounts under the root (pod volumes, overlay rootfs, shm, netns), deepest first.
    for _ in range(3):
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        mine = sorted({m for m in mounts if m == str(root) or m.startswith(str(root) + "/")}, key=len, reverse=True)
        if not mine:
            break
        for m in mine:
            _sh("umount", "-l", m)
    else:
        errors.append(f"mounts under {root}: {mine}")
    # containerd's content and snapshots (the 7 GB trainer image, twice) and the pods' volumes: pytest keeps the
    # last runs' temp folders, so leaving them would fill the disk run after run; the logs beside them stay.
    if not errors:
        for d in (root / "ctrd" / "root", root / "kubelet"):
            shutil.rmtree(d, ignore_errors=True)
    if _sh("ip", "link", "show", BRIDGE).returncode == 0:
        _sh("ip", "link", "delete", BRIDGE)
    # The kubelet's and kube-proxy's chains: the jumps to them from the built-in chains, then the chains.
    for iptables in ("iptables", "ip6tables"):
        if not shutil.which(iptables):
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _sh(f"{iptables}-save", "-t", table).stdout.splitlines()
            chains = [r[1:].split()[0] for r in rules if r.startswith(":" + KUBE_CHAIN_PREFIX)]
            for rule in rules:
                parts = rule.split()
                jumps_to_kube = "-j" in parts[:-1] and parts[parts.index("-j") + 1].startswith(KUBE_CHAIN_PREFIX)
                if rule.startswith("-A ") and not parts[1].startswith(KUBE_CHAIN_PREFIX) and jumps_to_kube:
                    _sh("sh", "-c", f"{iptables} -t {table} -D {rule[3:]}")  # iptables-save quotes for a shell
            for chain in chains:
                _sh(iptables, "-t", table, "-F", chain)
            for chain in chains:
                if _sh(iptables, "-t", table, "-X", chain).returncode:
                    errors.append(f"{iptables} -t {table} chain {chain}")
    # Whatever still runs in the pods' cgroups (a container whose shim died first): killed, so the cgroups go.
    for d in _cgroup_dirs():
        for procs in d.rglob("cgroup.procs") if d.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
    if any(d.is_dir() for d in _cgroup_dirs()):
        time.sleep(0.5)
    for d in _cgroup_dirs():
        if d.is_dir():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            try:
                d.rmdir()
            except OSError as e:
                errors.append(f"cgroup {d}: {e}")
    for key, value in sysctls.items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError as e:
            errors.append(f"sysctl {key}: {e}")
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(root)):
                link.unlink()
    for cache in Path("/var/lib/cni/results").glob(f"{CNI_NETWORK}-*"):
        cache.unlink(missing_ok=True)
    for d in map(Path, made_dirs):
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            errors.append(f"{d} (made by this run)")
    return errors


def cleanup_leftovers() -> None:
    """A run killed before its teardown (SIGKILL, a lost session) left its state file: clean up after it."""
    if not STATE.exists():
        return
    state = json.loads(STATE.read_text())
    owner = state.get("pid")
    if owner and owner != os.getpid() and Path(f"/proc/{owner}").exists() and \
            state.get("pid_start") == _start_time(owner):
        raise RuntimeError(f"another real-node run is active (pid {owner}, {state['root']}): one per host")
    root = Path(state["root"])
    # The rest of that run's tier (control plane, MinIO) lives beside the node's root: its processes name it.
    if root.parent.name.startswith("realnode"):
        _kill_naming(root.parent)
    cleanup(root, state.get("sysctls", {}), state.get("made_dirs", []))
    STATE.unlink(missing_ok=True)


def leftovers(root: Path, sysctls: dict[str, str], made_dirs: list[str]) -> list[str]:
    """What is still on the host after :func:`cleanup`, looked up afresh (empty: nothing)."""
    found = []
    if _sh("ip", "link", "show", BRIDGE).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    for save in ("iptables-save", "ip6tables-save"):
        if shutil.which(save):
            rules = [r for r in _sh(save).stdout.splitlines() if KUBE_CHAIN_PREFIX in r]
            found += [f"{save}: {r}" for r in rules]
    found += [f"cgroup {d}" for d in _cgroup_dirs() if d.exists()]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(root))]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if str(root) in (p / "cmdline").read_text(errors="replace"):
                    found.append(f"process {p.name}: {(p / 'cmdline').read_text().replace(chr(0), ' ')[:200]}")
    found += [f"sysctl {k}={Path('/proc/sys', k).read_text().strip()} (was {v})" for k, v in sysctls.items()
              if Path("/proc/sys", k).read_text().strip() != v]
    found += [f"{d} (made by this run)" for d in made_dirs if Path(d).exists()]
    return found
