//! Container cold-start overhead, measured in one run against the engine at `DOCKER_HOST`
//! (`scripts/test` and `scripts/podman-service start` provide one):
//!
//! 1. the test image's build time through the engine's build endpoint (no cache);
//! 2. the engine's own time from create to the first HTTP 200 on the published port, the way
//!    tidegate runs a container (port on 127.0.0.1 chosen by the engine, init process);
//! 3. the first response through tidegate for a container app at zero (a fresh app each
//!    round, so every round is a real cold start; the image check happens at config load).
//!
//! tidegate's overhead is (3) - (2), medians over the rounds.
//!
//! Run: `cargo bench --bench container_cold_start` (ROUNDS=N to change the 20 rounds).

mod support;

use support::*;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    RemoveContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;

const IMAGE: &str = "tidegate-bench/busybox-httpd:latest";

#[tokio::main]
async fn main() {
    let rounds = rounds(20, 2);
    let host = std::env::var("DOCKER_HOST")
        .expect("DOCKER_HOST must name the engine's unix socket (scripts/podman-service start)");
    let docker = Docker::connect_with_unix(
        &host,
        60,
        &ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .unwrap();

    let build = build_image(&docker).await;

    // The engine's own containers stay up until the end, as tidegate's do, so both phases
    // run with the same number of containers on the engine.
    let mut own = Vec::new();
    let names: Vec<String> = (0..rounds)
        .map(|round| format!("tidegate-bench-own-{}-{round}", std::process::id()))
        .collect();
    for name in &names {
        own.push(engine_create_to_200(&docker, name).await);
    }

    let dir = config_dir();
    for round in 0..rounds {
        std::fs::write(
            dir.path().join(format!("apps/box{round}.toml")),
            format!("project = \"p\"\nruntime = \"container\"\n[container]\nimage = \"{IMAGE}\"\npull = \"never\"\n[scale]\nscale_to_zero_grace = \"1h\"\n"),
        )
        .unwrap();
    }
    let gateway = tidegate::Gateway::start(dir.path().join("tidegate.toml"))
        .await
        .unwrap();
    let addr = gateway.http_addr().unwrap();
    // Every app's image check (prepare) has run once /apps lists no revision as building.
    loop {
        let (_, apps) = send(gateway.admin_addr(), "admin", "/apps").await;
        if !apps.contains("\"building\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut through = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let (status, body) = send(addr, &format!("box{round}.p.bench"), "/").await;
        through.push(started.elapsed());
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
    gateway.shutdown().await;
    for name in &names {
        docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .unwrap();
    }

    own.sort();
    through.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    let p90 = |v: &[Duration]| v[v.len() * 9 / 10];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("container cold start, {rounds} rounds (busybox httpd image, engine at {host}):");
    println!(
        "  test image build (no cache):           {:7.1} ms",
        ms(build)
    );
    println!(
        "  engine create -> first 200:            median {:7.2} ms  p90 {:7.2} ms",
        ms(median(&own)),
        ms(p90(&own))
    );
    println!(
        "  first response through tidegate:       median {:7.2} ms  p90 {:7.2} ms",
        ms(median(&through)),
        ms(p90(&through))
    );
    println!(
        "  tidegate container cold-start overhead: median {:7.2} ms",
        ms(median(&through)) - ms(median(&own))
    );
}

/// Builds the bench image from a static busybox and returns how long the build took.
async fn build_image(docker: &Docker) -> Duration {
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\n\
        ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec /bin/busybox httpd -f -p 0.0.0.0:${PORT} -h /www\"]\n";
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "Containerfile", dockerfile.as_bytes())
        .unwrap();
    builder
        .append_path_with_name("/bin/busybox", "busybox")
        .expect("/bin/busybox from busybox-static");
    let archive = builder.into_inner().unwrap();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Containerfile")
        .t(IMAGE)
        .nocache(true)
        .rm(true)
        .build();
    let started = Instant::now();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(archive.into())));
    while let Some(item) = stream.next().await {
        item.expect("the bench image builds");
    }
    started.elapsed()
}

/// Create, start, inspect for the port, then poll until an HTTP 200: the engine's own cold
/// start for the image, as tidegate runs it.
async fn engine_create_to_200(docker: &Docker, name: &str) -> Duration {
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        env: Some(vec!["PORT=8080".into()]),
        exposed_ports: Some(vec!["8080/tcp".into()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                "8080/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            init: Some(true),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let started = Instant::now();
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            body,
        )
        .await
        .unwrap();
    docker.start_container(name, None).await.unwrap();
    let inspect = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let port: u16 = inspect.network_settings.unwrap().ports.unwrap()["8080/tcp"]
        .clone()
        .unwrap()[0]
        .host_port
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Some((200, _)) = try_send(addr, "bench", "/").await {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    started.elapsed()
}
