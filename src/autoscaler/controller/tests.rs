//! The controller end to end on the in-memory backend and a paused clock: real activator,
//! KPA, planner, probes and sockets, no processes, and minutes of scaling in milliseconds of
//! wall time. The same behaviours are tested with real processes in `tests/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Controller;
use crate::apps::AppState;
use crate::autoscaler::InstanceBudget;
use crate::config::{validate, AppSpec, RawApp, RawGatewayFile};
use crate::metrics::Metrics;
use crate::runtime::memory::MemoryBackend;

/// A process app (run by the in-memory backend) with these `[scale]` lines.
fn app_spec(scale: &str) -> Arc<AppSpec> {
    let gateway: RawGatewayFile = toml::from_str("[gateway]\ndomain = \"test\"").unwrap();
    let app: RawApp = toml::from_str(&format!(
        "project = \"p\"\n[run]\ncommand = [\"unused\"]\n[scale]\n{scale}\n"
    ))
    .unwrap();
    let config = validate(
        Path::new("tidegate.toml"),
        &gateway,
        &[(PathBuf::from("apps/web.toml"), app)],
    )
    .unwrap();
    Arc::clone(&config.apps[0])
}

/// Requests that each hold an instance slot until `release` turns true, as slow requests do.
fn hold_requests(app: &Arc<AppState>, count: usize, release: &watch::Receiver<bool>) {
    for _ in 0..count {
        let (app, mut release) = (Arc::clone(app), release.clone());
        tokio::spawn(async move {
            let mut in_flight = app.begin_request();
            let revision = Arc::clone(app.traffic().pick(None).expect("a revision"));
            let revision = Arc::clone(in_flight.route_to(&revision));
            let lease = revision
                .activator
                .acquire(1000, Duration::from_secs(600))
                .await
                .expect("a slot");
            let _ = release.wait_for(|release| *release).await;
            drop((lease, in_flight));
        });
    }
}

/// Waits (on the paused clock, which moves on while everything is idle) until the app's
/// status satisfies `check`.
async fn status_until(
    app: &AppState,
    what: &str,
    check: impl Fn(&crate::status::AppStatus) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !check(&app.status()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            app.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn scales_from_zero_to_several_and_back_to_zero_in_well_under_a_second() {
    let wall = std::time::Instant::now();
    let backend = MemoryBackend::new("process");
    let spec = app_spec("concurrency = 10\nscale_to_zero_grace = \"30s\"");
    let app = AppState::new(Arc::clone(&spec), &Metrics::new());
    let controller = Controller::spawn(
        Arc::clone(&app),
        backend.clone(),
        spec,
        None,
        Arc::new(InstanceBudget::unlimited()),
    );
    assert_eq!(backend.starts(), 0, "nothing starts before a request");

    // 30 slow requests at 10 per instance, aiming at 70%: 5 instances.
    let (release, released) = watch::channel(false);
    hold_requests(&app, 30, &released);
    status_until(&app, "5 ready", |status| status.ready == 5).await;
    assert_eq!(backend.running().len(), 5);

    // Quiet: after the stable window and the grace, back to zero.
    release.send_replace(true);
    status_until(&app, "zero instances", |status| {
        status.instances.is_empty() && status.desired == 0
    })
    .await;
    assert!(backend.running().is_empty());
    assert_eq!(backend.starts(), 5, "no instance started in vain");

    controller.stop();
    controller.join().await;
    let elapsed = wall.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_crashed_instance_is_replaced_and_repeated_crashes_back_off() {
    let backend = MemoryBackend::new("process");
    let spec = app_spec("min_scale = 1");
    let app = AppState::new(Arc::clone(&spec), &Metrics::new());
    let controller = Controller::spawn(
        Arc::clone(&app),
        backend.clone(),
        spec,
        None,
        Arc::new(InstanceBudget::unlimited()),
    );
    status_until(&app, "1 ready", |status| status.ready == 1).await;

    let started = tokio::time::Instant::now();
    for round in 1..=4u64 {
        let id = backend.running()[0].clone();
        assert!(backend.crash(&id, "exit status 1"));
        status_until(&app, "replaced", |status| {
            status.ready == 1 && status.instances[0].id != id
        })
        .await;
        assert_eq!(backend.starts(), 1 + round);
    }
    // Backoff after the 2nd, 3rd and 4th crash in a row: 100 + 200 + 400 ms at least.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );

    controller.stop();
    controller.join().await;
    assert!(backend.running().is_empty(), "stopped with the controller");
}
