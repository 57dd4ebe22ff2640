//! Several gateway processes on one cluster acting as one (`leader_election = true`): one
//! leader by Lease, handed over at once on SIGTERM and taken over within the lease duration
//! after a SIGKILL; any replica wakes an app from zero; load split over replicas scales a
//! revision as the same load through one.
#![cfg(feature = "kubernetes")]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use support::cluster::{Load, TestCluster};
use support::process::{spawn_gateway, Listeners};
use support::*;

const HOST: &str = "web.p.test.local";

/// One gateway process of the replicas.
struct Replica {
    _config: ConfigDir,
    listeners: Listeners,
    child: tokio::process::Child,
    identity: String,
}

impl Replica {
    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }
}

async fn replica(cluster: &TestCluster, scale: &str) -> Replica {
    let section = format!("{}leader_election = true\n", cluster.gateway_section());
    let config = ConfigDir::new("", &section);
    config.kube_app("web", "", scale);
    let listeners = config.fixed_ports("");
    let child = spawn_gateway(&config, &[], Stdio::null(), listeners.admin).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let identity = format!("{}-{}", host.trim(), child.id().unwrap());
    Replica {
        _config: config,
        listeners,
        child,
        identity,
    }
}

async fn holder(cluster: &TestCluster) -> String {
    match cluster
        .api::<Lease>()
        .get_opt("tidegate-leader")
        .await
        .unwrap()
    {
        Some(lease) => lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// Waits until one of `replicas` holds the Lease; its index.
async fn leader_among(cluster: &TestCluster, replicas: &[&Replica], within: Duration) -> usize {
    eventually("a leader", within, || async {
        let holder = holder(cluster).await;
        replicas.iter().position(|r| r.identity == holder)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_is_handed_over_on_sigterm_and_taken_over_after_sigkill() {
    let cluster = TestCluster::new("lead").await;
    let scale = "min_scale = 1\nconcurrency = 1\ntarget_utilization = 1.0\nmax_scale = 4\nstable_window = \"2s\"\npanic_window = \"1s\"";
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&cluster, scale).await);
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    let first = leader_among(&cluster, &all, Duration::from_secs(20)).await;
    // All three have joined (each announces itself with a Lease of its own).
    eventually("three peers", Duration::from_secs(20), || async {
        let peers = cluster
            .api::<Lease>()
            .list(&kube::api::ListParams::default().labels("tidegate.dev/peer"))
            .await
            .unwrap()
            .items
            .len();
        (peers == 3).then_some(())
    })
    .await;
    eventually(
        "the min_scale pod ready",
        Duration::from_secs(60),
        || async { (cluster.ready_endpoints("web-00001").await >= 1).then_some(()) },
    )
    .await;
    let pods = cluster.live_pods().await;

    // SIGTERM: the leader releases the Lease as its shutdown begins.
    let stopped = Instant::now();
    replicas[first].signal(nix::sys::signal::Signal::SIGTERM);
    let others: Vec<&Replica> = replicas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, r)| r)
        .collect();
    let second = leader_among(&cluster, &others, Duration::from_secs(20)).await;
    let handover = stopped.elapsed();
    let second_identity = others[second].identity.clone();
    // A replica that stops leaves the pods to the others: none is scaled away.
    // Its admin listener closes last in its shutdown.
    let admin = replicas[first].listeners.admin;
    eventually(
        "the stopped replica done",
        Duration::from_secs(30),
        || async {
            tokio::net::TcpStream::connect(admin)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(cluster.replicas("web-00001").await >= 1);
    assert_eq!(
        cluster.live_pods().await,
        pods,
        "a stopping replica scaled pods away"
    );

    // SIGKILL under load: nothing is released; the survivor waits out the lease (15 s)
    // while serving, then scales as the leader.
    let killed = Instant::now();
    let victim = replicas
        .iter()
        .find(|r| r.identity == second_identity)
        .unwrap();
    let survivor: Vec<&Replica> = others
        .iter()
        .copied()
        .filter(|r| r.identity != second_identity)
        .collect();
    let load = Load::start(survivor[0].listeners.http, HOST, "/?delay_ms=50", 1);
    victim.signal(nix::sys::signal::Signal::SIGKILL);
    leader_among(&cluster, &survivor, Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} failed through the survivor: {failures:?}",
        failures.len()
    );
    // Scaling goes on under the new leader: load that needs three pods gets them.
    let load = Load::start(survivor[0].listeners.http, HOST, "/?delay_ms=300", 3);
    eventually(
        "3 ready pods under the new leader",
        Duration::from_secs(60),
        || async { (cluster.ready_endpoints("web-00001").await >= 3).then_some(()) },
    )
    .await;
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    println!(
        "leader handover after SIGTERM {:.0} ms; takeover after SIGKILL {:.1} s",
        handover.as_secs_f64() * 1000.0,
        takeover.as_secs_f64()
    );
    assert!(
        handover < Duration::from_secs(2),
        "handover took {handover:?}"
    );
    // The lease runs 15 s from the last renewal the survivor saw (at most 2 s before the
    // kill), plus the API round trips to take it and to see it taken.
    assert!(
        takeover <= Duration::from_millis(16_000),
        "takeover took {takeover:?}"
    );
    for replica in &mut replicas {
        let _ = replica.child.kill().await;
    }
}

/// The first response from zero through `replica`, in ms, after the app is at zero.
async fn cold_start(cluster: &TestCluster, replica: &Replica) -> f64 {
    cluster.wait_zero("web-00001").await;
    let started = Instant::now();
    let answer = get(replica.listeners.http, HOST, "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    started.elapsed().as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_wakes_an_app_from_zero_as_fast_as_the_leader() {
    let cluster = TestCluster::new("wake").await;
    let scale = "scale_to_zero_grace = \"1s\"\nstable_window = \"2s\"\npanic_window = \"1s\"";
    let replicas = [
        replica(&cluster, scale).await,
        replica(&cluster, scale).await,
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    let leader = leader_among(&cluster, &all, Duration::from_secs(20)).await;
    let follower = 1 - leader;
    let (mut through_leader, mut through_follower) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        through_leader.push(cold_start(&cluster, &replicas[leader]).await);
        through_follower.push(cold_start(&cluster, &replicas[follower]).await);
    }
    through_leader.sort_by(f64::total_cmp);
    through_follower.sort_by(f64::total_cmp);
    let (leader_ms, follower_ms) = (through_leader[1], through_follower[1]);
    println!("cold start median through the leader {leader_ms:.0} ms, through a follower {follower_ms:.0} ms");
    assert!(
        follower_ms <= leader_ms * 1.5 + 50.0,
        "follower {through_follower:?} vs leader {through_leader:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_split_over_two_replicas_scales_as_through_one() {
    let cluster = TestCluster::new("split").await;
    let scale = "concurrency = 1\ntarget_utilization = 1.0\nmax_scale = 8\nstable_window = \"4s\"\npanic_window = \"1s\"\nscale_to_zero_grace = \"1s\"";
    let replicas = [
        replica(&cluster, scale).await,
        replica(&cluster, scale).await,
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    leader_among(&cluster, &all, Duration::from_secs(20)).await;
    let (a, b) = (replicas[0].listeners.http, replicas[1].listeners.http);

    // Four clients of 300 ms requests through one replica, then the same split two and two.
    let mut counts = Vec::new();
    for split in [[4, 0], [2, 2]] {
        cluster.wait_zero("web-00001").await;
        let through_a = Load::start(a, HOST, "/?delay_ms=300", split[0]);
        let through_b = Load::start(b, HOST, "/?delay_ms=300", split[1]);
        // Settled: the count the autoscaler wants (as replica A reports it) is the
        // Deployment's, and that many pods are ready.
        let settled = eventually(
            "a settled replica count",
            Duration::from_secs(60),
            || async {
                let apps = get(replicas[0].listeners.admin, "admin", "/apps")
                    .await
                    .body;
                let apps: serde_json::Value = serde_json::from_str(&apps).ok()?;
                let desired = apps["apps"][0]["desired"].as_i64()? as i32;
                let count = cluster.replicas("web-00001").await;
                let ready = cluster.ready_endpoints("web-00001").await as i32;
                (count >= 3 && desired == count && ready == count).then_some(count)
            },
        )
        .await;
        counts.push(settled);
        for load in [through_a, through_b] {
            let (_, failures) = load.finish().await;
            assert!(failures.is_empty(), "{failures:?}");
        }
    }
    println!(
        "replicas for 4 clients through one gateway: {}, split over two: {}",
        counts[0], counts[1]
    );
    assert!((counts[0] - counts[1]).abs() <= 1, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_created_through_one_replica_answers_through_the_others_within_2s() {
    let cluster = TestCluster::new("share").await;
    let replicas = [
        replica(&cluster, "").await,
        replica(&cluster, "").await,
        replica(&cluster, "").await,
    ];
    let api = support::api::Api::at(&replicas[0]._config, replicas[0].listeners.admin);
    let spec = serde_json::json!({
        "name": "hello",
        "project": "p",
        "runtime": "kubernetes",
        "container": {
            "image": support::node_agent::DEMO_IMAGE,
            "port": 8080,
            "env": { "GREETING": "shared" },
        },
    });
    let created = Instant::now();
    api.create("/api/v1/apps", spec).await;
    // Served through the other two: their mirrors wrote the file, their watchers loaded it.
    for other in &replicas[1..] {
        eventually(
            "hello through another replica",
            Duration::from_secs(10),
            || async {
                let answer = get(other.listeners.http, "hello.p.test.local", "/env/GREETING").await;
                (answer.status != StatusCode::NOT_FOUND).then_some(())
            },
        )
        .await;
    }
    let known = created.elapsed();
    println!(
        "an app created through one replica was routed by the others after {} ms",
        known.as_millis()
    );
    assert!(known < Duration::from_secs(2), "{known:?}");
    let answer = get(
        replicas[2].listeners.http,
        "hello.p.test.local",
        "/env/GREETING",
    )
    .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "shared\n")
    );

    // Deleted through another replica: gone everywhere, its objects too.
    let other = support::api::Api::at(&replicas[1]._config, replicas[1].listeners.admin);
    let deleted = other
        .call(http::Method::DELETE, "/api/v1/apps/hello", None, None)
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    for replica in &replicas {
        eventually("hello gone", Duration::from_secs(10), || async {
            let answer = get(replica.listeners.http, "hello.p.test.local", "/").await;
            (answer.status == StatusCode::NOT_FOUND).then_some(())
        })
        .await;
    }
    eventually(
        "hello's objects deleted",
        Duration::from_secs(30),
        || async {
            cluster
                .deployment_names()
                .await
                .iter()
                .all(|name| !name.starts_with("hello-"))
                .then_some(())
        },
    )
    .await;
}

/// A TCP forwarder from a loopback port to the API server: the one path a replica has to
/// it, so a test can cut that replica off alone.
struct Cuttable {
    port: u16,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cuttable {
    fn new(target: std::net::SocketAddr) -> Cuttable {
        let port = support::process::free_port();
        let mut this = Cuttable {
            port,
            target,
            task: None,
        };
        this.restore();
        this
    }

    /// Forwards again, on the same port.
    fn restore(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Refuses new connections and drops the open ones.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_api_server_keeps_serving_and_rejoins() {
    let cluster = TestCluster::new("partition").await;
    let leader = replica(&cluster, "min_scale = 1").await;
    leader_among(&cluster, &[&leader], Duration::from_secs(20)).await;
    // The follower reaches the API server only through a forwarder the test can cut.
    let admin: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(support::cluster::admin_kubeconfig()).unwrap(),
    )
    .unwrap();
    let server = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    let target: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
    let mut path = Cuttable::new(target);
    let text = std::fs::read_to_string(support::cluster::admin_kubeconfig())
        .unwrap()
        .replace(&server, &format!("https://127.0.0.1:{}", path.port));
    let config = ConfigDir::new("", "");
    let kubeconfig = config.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, text).unwrap();
    config.write_gateway(
        "",
        &format!(
            "{}leader_election = true\n",
            cluster.gateway_section_with(&kubeconfig)
        ),
    );
    config.kube_app("web", "", "min_scale = 1");
    let listeners = config.fixed_ports("");
    let _follower = spawn_gateway(&config, &[], Stdio::null(), listeners.admin).await;
    eventually("the follower serving", Duration::from_secs(60), || async {
        (get(listeners.http, HOST, "/").await.status == StatusCode::OK).then_some(())
    })
    .await;

    path.cut();
    let load = Load::start(listeners.http, HOST, "/", 2);
    eventually("the follower degraded", Duration::from_secs(20), || async {
        let answer = get(listeners.admin, "admin", "/readyz").await;
        (answer.status == StatusCode::OK && answer.body.contains("degraded")).then_some(())
    })
    .await;
    load.wait_sent(100).await; // a good many requests while cut off
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} failed while cut off: {failures:?}",
        failures.len()
    );
    assert!(sent > 20, "only {sent} requests");

    path.restore();
    eventually("the follower rejoined", Duration::from_secs(30), || async {
        let answer = get(listeners.admin, "admin", "/readyz").await;
        (!answer.body.contains("degraded")).then_some(())
    })
    .await;
    assert_eq!(get(listeners.http, HOST, "/").await.status, StatusCode::OK);
}
