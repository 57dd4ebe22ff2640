//! A tiny kubelet for the Kubernetes tests: test infrastructure, not product.
//!
//! It registers a Node, binds the namespace's unscheduled pods to it (there is no scheduler),
//! and runs each pod's single container as a local process in a network namespace of its
//! own, the way a kubelet with a bridge CNI plugin would: one bridge per agent with
//! `10.244.<n>.1/24` on the host, one veth pair per pod, the pod at `10.244.<n>.<k>`
//! (Kubernetes refuses loopback endpoint addresses). It reports podIP, the Ready condition
//! (from the pod's readiness probe, run from the host), restarts and last exit codes through
//! the status subresource, so the real ReplicaSet, Deployment and EndpointSlice controllers
//! do the rest. A deleted pod gets its preStop sleep, SIGTERM, SIGKILL after its grace
//! period, then its final delete.
//!
//! What it does not emulate: images (the test image runs `tidegate demo-app`; any other
//! image runs the container's `command` as a local program), resource limits, volumes,
//! liveness and startup probes, init containers, more than one container per pod, node
//! heartbeats and leases, and the kubelet's 10 s crash-loop back-off (it uses 0.5 s doubling
//! to 4 s, so tests are quick). Traffic goes only to loopback and to its own namespaces.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client};
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;
use tokio::sync::watch;

/// The image the agent runs as the demo app.
pub const DEMO_IMAGE: &str = "localhost/tidegate-demo:test";

/// The node agent of one test namespace; everything it started goes when it is dropped.
pub struct NodeAgent {
    pub node: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    pods: Api<Pod>,
    node: String,
    subnet: u8,
    bridge: String,
    /// The lock that reserves `subnet` on this machine while the agent lives.
    _lock: Flock<std::fs::File>,
    running: Mutex<HashMap<String, RunningPod>>,
    next_host: Mutex<u8>,
}

struct RunningPod {
    netns: String,
    /// Set to ask the pod's supervisor to stop it.
    stop: watch::Sender<bool>,
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must_ip(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reserves a subnet number no other agent on this machine holds (a lock that dies with
/// its process), and clears what a killed earlier holder left.
fn reserve_subnet() -> (u8, Flock<std::fs::File>) {
    let dir = PathBuf::from("/tmp/tidegate-k8s-nets");
    std::fs::create_dir_all(&dir).unwrap();
    for subnet in 1..=250u8 {
        let file = std::fs::File::create(dir.join(format!("{subnet}.lock"))).unwrap();
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return (subnet, lock);
        }
    }
    panic!("no free test pod subnet");
}

impl NodeAgent {
    /// Registers node `node` and starts serving the pods of `namespace`.
    pub async fn start(client: Client, namespace: &str, node: &str) -> NodeAgent {
        let (subnet, lock) = reserve_subnet();
        let bridge = format!("tgbr{subnet}");
        clear_subnet(subnet, &bridge);
        must_ip(&["link", "add", &bridge, "type", "bridge"]);
        must_ip(&[
            "addr",
            "add",
            &format!("10.244.{subnet}.1/24"),
            "dev",
            &bridge,
        ]);
        must_ip(&["link", "set", &bridge, "up"]);
        register_node(&client, node, subnet).await;
        let inner = Arc::new(Inner {
            pods: Api::namespaced(client, namespace),
            node: node.to_string(),
            subnet,
            bridge,
            _lock: lock,
            running: Mutex::new(HashMap::new()),
            next_host: Mutex::new(2),
        });
        let task = tokio::spawn(watch_pods(Arc::clone(&inner)));
        NodeAgent {
            node: node.to_string(),
            inner,
            task,
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
        let running: Vec<RunningPod> = self
            .inner
            .running
            .lock()
            .unwrap()
            .drain()
            .map(|(_, pod)| pod)
            .collect();
        for pod in &running {
            pod.stop.send_replace(true);
        }
        // The supervisors may not run again (the runtime may be ending): kill what is left in
        // the namespaces directly, then remove them and the bridge.
        for pod in &running {
            kill_netns(&pod.netns);
            ip(&["netns", "del", &pod.netns]);
        }
        clear_subnet(self.inner.subnet, &self.inner.bridge);
    }
}

/// Kills every process in network namespace `netns`.
fn kill_netns(netns: &str) {
    if let Ok(output) = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
    {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Removes the bridge and pod namespaces of `subnet`, from this agent or a killed one.
fn clear_subnet(subnet: u8, bridge: &str) {
    let prefix = format!("tgp{subnet}-");
    if let Ok(output) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(&prefix) {
                kill_netns(name);
                ip(&["netns", "del", name]);
            }
        }
    }
    ip(&["link", "del", bridge]);
}

async fn register_node(client: &Client, node: &str, subnet: u8) {
    let nodes: Api<Node> = Api::all(client.clone());
    let body: Node = serde_json::from_value(json!({
        "metadata": { "name": node, "labels": { "kubernetes.io/hostname": node } },
        "spec": { "podCIDR": format!("10.244.{subnet}.0/24") },
    }))
    .unwrap();
    match nodes.create(&PostParams::default(), &body).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("registering node {node}: {error}"),
    }
    let status = json!({ "status": {
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                         "message": "tidegate test node agent", "lastHeartbeatTime": now(),
                         "lastTransitionTime": now() }],
        "addresses": [{ "type": "InternalIP", "address": format!("10.244.{subnet}.1") }],
    }});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn watch_pods(inner: Arc<Inner>) {
    let mut stream = watcher(inner.pods.clone(), watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => handle(&inner, pod).await,
            Ok(Event::Delete(pod)) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(running) = inner.running.lock().unwrap().get(&uid) {
                    running.stop.send_replace(true);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn handle(inner: &Arc<Inner>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    match node {
        None if !deleting => {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": { "name": name },
                "target": { "apiVersion": "v1", "kind": "Node", "name": inner.node },
            });
            let _ = inner
                .pods
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
        }
        Some(node) if node == inner.node => {
            let mut running = inner.running.lock().unwrap();
            if deleting {
                if let Some(pod) = running.get(&uid) {
                    pod.stop.send_replace(true);
                }
            } else if !running.contains_key(&uid) {
                let host = {
                    let mut next = inner.next_host.lock().unwrap();
                    let host = *next;
                    *next = if host >= 254 { 2 } else { host + 1 };
                    host
                };
                let netns = format!("tgp{}-{host}", inner.subnet);
                let (stop, stopped) = watch::channel(false);
                running.insert(
                    uid.clone(),
                    RunningPod {
                        netns: netns.clone(),
                        stop,
                    },
                );
                tokio::spawn(supervise(Arc::clone(inner), pod, uid, netns, host, stopped));
            }
        }
        _ => {}
    }
}

/// Creates the pod's network namespace and veth pair; its address, or `None` if the agent
/// is being torn down meanwhile.
fn plumb(inner: &Inner, netns: &str, host: u8) -> Option<Ipv4Addr> {
    let address = Ipv4Addr::new(10, 244, inner.subnet, host);
    let (outside, inside) = (
        format!("tgv{}h{host}", inner.subnet),
        format!("tgv{}p{host}", inner.subnet),
    );
    ip(&["netns", "del", netns]);
    ip(&["link", "del", &outside]);
    let cidr = format!("{address}/24");
    let steps: [&[&str]; 7] = [
        &["netns", "add", netns],
        &[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ],
        &["link", "set", &inside, "netns", netns],
        &["link", "set", &outside, "master", &inner.bridge, "up"],
        &["-n", netns, "addr", "add", &cidr, "dev", &inside],
        &["-n", netns, "link", "set", &inside, "up"],
        &["-n", netns, "link", "set", "lo", "up"],
    ];
    steps.iter().all(|step| ip(step)).then_some(address)
}

/// The program and arguments for the pod's container.
fn program(container: &Container) -> (String, Vec<String>) {
    let port = container
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.container_port)
        .unwrap_or(8080);
    match &container.command {
        Some(command) if !command.is_empty() => {
            let mut args: Vec<String> = command[1..].to_vec();
            args.extend(container.args.clone().unwrap_or_default());
            (command[0].clone(), args)
        }
        _ => (
            super::TIDEGATE.to_string(),
            vec![
                "demo-app".into(),
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port.to_string(),
            ],
        ),
    }
}

fn environment(container: &Container, pod_name: &str, address: Ipv4Addr) -> Vec<(String, String)> {
    let mut env = vec![(
        "PATH".to_string(),
        "/usr/local/bin:/usr/bin:/bin".to_string(),
    )];
    for var in container.env.clone().unwrap_or_default() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod_name.to_string(),
                Some("status.podIP") => address.to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        env.push((var.name, value));
    }
    env
}

/// Runs one pod until it is deleted: starts its container, restarts it when it exits (with
/// back-off), reports its status, and stops it the way a kubelet does.
async fn supervise(
    inner: Arc<Inner>,
    pod: Pod,
    uid: String,
    netns: String,
    host: u8,
    mut stopped: watch::Receiver<bool>,
) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec.containers.first().cloned().unwrap_or_default();
    let Some(address) = plumb(&inner, &netns, host) else {
        inner.running.lock().unwrap().remove(&uid);
        ip(&["netns", "del", &netns]);
        return;
    };
    let (program, args) = program(&container);
    let env = environment(&container, &name, address);
    let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30) as u64);
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map(|s| Duration::from_secs(s.seconds as u64))
        .unwrap_or_default();
    let mut status = Status::new(&container, address);
    let mut restarts = 0u32;
    loop {
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &netns, &program])
            .args(&args)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("ip netns exec");
        status.running(restarts);
        let mut reported = status.report(&inner.pods, &name).await;
        let probe = probe_target(&container, address);
        let exit = loop {
            tokio::select! {
                exit = child.wait() => break Some(exit),
                _ = stop_asked(&mut stopped) => break None,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let ready = probe.check().await;
                    if status.set_ready(ready) || !reported {
                        reported = status.report(&inner.pods, &name).await;
                    }
                }
            }
        };
        match exit {
            Some(exit) => {
                let code = exit.ok().and_then(|e| e.code()).unwrap_or(137);
                restarts += 1;
                status.exited(code, restarts);
                status.report(&inner.pods, &name).await;
                let backoff = Duration::from_millis(500 << (restarts - 1).min(3));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = stop_asked(&mut stopped) => {}
                }
            }
            None => {
                status.set_ready(false);
                status.report(&inner.pods, &name).await;
                tokio::time::sleep(pre_stop).await;
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
        break;
    }
    kill_netns(&netns);
    ip(&["netns", "del", &netns]);
    inner.running.lock().unwrap().remove(&uid);
    // The kubelet's last word: the pod object goes once its container is gone.
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = inner.pods.delete(&name, &params).await;
}

/// Resolves once the pod is to stop.
async fn stop_asked(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// How the agent checks a container's readiness.
enum Probe {
    Http(SocketAddr, String),
    Tcp(SocketAddr),
}

fn probe_target(container: &Container, address: Ipv4Addr) -> Probe {
    let probe = container.readiness_probe.clone().unwrap_or_default();
    let port = |p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match p {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n as u16,
        _ => 8080,
    };
    match (probe.http_get, probe.tcp_socket) {
        (Some(http), _) => Probe::Http(
            SocketAddr::from((address, port(&http.port))),
            http.path.unwrap_or_else(|| "/".into()),
        ),
        (None, Some(tcp)) => Probe::Tcp(SocketAddr::from((address, port(&tcp.port)))),
        _ => Probe::Tcp(SocketAddr::from((address, 8080))),
    }
}

impl Probe {
    async fn check(&self) -> bool {
        let attempt = async {
            match self {
                Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                Probe::Http(addr, path) => {
                    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                        return false;
                    };
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let request =
                        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                    if stream.write_all(request.as_bytes()).await.is_err() {
                        return false;
                    }
                    let mut head = [0u8; 12];
                    stream.read_exact(&mut head).await.is_ok()
                        && (head[9] == b'2' || head[9] == b'3')
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .unwrap_or(false)
    }
}

/// The pod status the agent reports.
struct Status {
    container: String,
    image: String,
    address: Ipv4Addr,
    ready: bool,
    restarts: u32,
    state: serde_json::Value,
    last_state: serde_json::Value,
    started: String,
}

impl Status {
    fn new(container: &Container, address: Ipv4Addr) -> Status {
        Status {
            container: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            address,
            ready: false,
            restarts: 0,
            state: json!({}),
            last_state: json!({}),
            started: now(),
        }
    }

    fn running(&mut self, restarts: u32) {
        self.restarts = restarts;
        self.ready = false;
        self.state = json!({ "running": { "startedAt": now() } });
    }

    fn exited(&mut self, code: i32, restarts: u32) {
        self.restarts = restarts;
        self.ready = false;
        let reason = if code == 0 { "Completed" } else { "Error" };
        self.last_state = json!({ "terminated": { "exitCode": code, "reason": reason,
                                                   "startedAt": now(), "finishedAt": now() } });
        self.state = json!({ "waiting": { "reason": "CrashLoopBackOff",
            "message": format!("back-off restarting failed container {}", self.container) } });
    }

    /// Whether readiness changed.
    fn set_ready(&mut self, ready: bool) -> bool {
        std::mem::replace(&mut self.ready, ready) != ready
    }

    /// Sends the status; false if the API server did not take it (the caller tries again).
    async fn report(&self, pods: &Api<Pod>, name: &str) -> bool {
        let ready = if self.ready { "True" } else { "False" };
        let condition = |kind: &str, status: &str| json!({ "type": kind, "status": status, "lastTransitionTime": now() });
        let status = json!({ "status": {
            "phase": "Running",
            "hostIP": format!("10.244.{}.1", self.address.octets()[2]),
            "podIP": self.address.to_string(),
            "podIPs": [{ "ip": self.address.to_string() }],
            "startTime": self.started,
            "conditions": [
                condition("PodScheduled", "True"),
                condition("Initialized", "True"),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "containerStatuses": [{
                "name": self.container, "image": self.image, "imageID": "", "ready": self.ready,
                "started": true, "restartCount": self.restarts,
                "state": self.state, "lastState": self.last_state,
            }],
        }});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .is_ok()
    }
}
