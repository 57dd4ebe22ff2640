//! Route lookup with 10,000 apps: exact hits, wildcard hits, misses and host normalisation,
//! i.e. the work every request does before it is forwarded.
//!
//! Run: `cargo bench --bench route_lookup`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tidegate::autoscaler::AppRegistry;
use tidegate::config::{RawApp, RawGatewayFile, RawStatic};
use tidegate::metrics::Metrics;
use tidegate::routes::{normalize_host, RouteTable};
use tidegate::runtime::StaticBackend;

const APPS: usize = 10_000;

fn table() -> RouteTable {
    let apps: Vec<(PathBuf, RawApp)> = (0..APPS)
        .map(|i| {
            let raw = RawApp {
                name: Some(format!("app{i}")),
                project: Some(format!("proj{}", i % 100)),
                runtime: Some("static".into()),
                hosts: vec![format!("*.tenant{i}.example.com")],
                static_: Some(RawStatic {
                    upstreams: vec!["127.0.0.1:3000".into()],
                }),
                ..RawApp::default()
            };
            (PathBuf::from(format!("apps/app{i}.toml")), raw)
        })
        .collect();
    let config = tidegate::config::validate(
        PathBuf::from("tidegate.toml").as_path(),
        &RawGatewayFile::default(),
        &apps,
    )
    .expect("valid");
    let registry = AppRegistry::new(
        Metrics::new(),
        vec![Arc::new(StaticBackend)],
        None,
        tidegate::autoscaler::InstanceBudget::unlimited(),
    );
    let states = registry.apply(&config);
    RouteTable::build(&config, &states)
}

fn lookup(c: &mut Criterion) {
    let table = table();
    let mut group = c.benchmark_group("route_lookup_10k_apps");
    group.bench_function("exact", |b| {
        b.iter(|| {
            table
                .lookup(black_box("app7342.proj42.localhost"))
                .is_some()
        })
    });
    group.bench_function("wildcard", |b| {
        b.iter(|| {
            table
                .lookup(black_box("www.shop.tenant7342.example.com"))
                .is_some()
        })
    });
    group.bench_function("miss", |b| {
        b.iter(|| {
            table
                .lookup(black_box("nothing.here.example.org"))
                .is_none()
        })
    });
    group.bench_function("normalize_and_exact", |b| {
        b.iter(|| {
            let host = normalize_host(black_box("App7342.Proj42.localhost:8080")).unwrap();
            table.lookup(&host).is_some()
        })
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
