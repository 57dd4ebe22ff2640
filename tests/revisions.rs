//! App updates under load: a changed run spec rolls out as a new revision without a failed
//! request, and a new revision that cannot start leaves traffic on the old one.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

const HOST: &str = "web.p.test.local";

/// A gateway with the demo app `web` serving `GREETING = greeting` (checked).
async fn serving(greeting: &str) -> (ConfigDir, tidegate::Handle, std::net::SocketAddr) {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[("GREETING", greeting)], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(
        get(addr, HOST, "/env/GREETING").await.body,
        format!("{greeting}\n")
    );
    (config, handle, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_change_under_load_fails_no_request() {
    let (config, handle, addr) = serving("old").await;

    let load = Load::start(4, addr, HOST, "/env/GREETING");
    eventually(
        "200 requests before the edit",
        Duration::from_secs(20),
        || async { (load.answers().len() >= 200).then_some(()) },
    )
    .await;
    config.demo_app("web", &[("GREETING", "new")], "");
    eventually(
        "2,000 requests and the new env answering",
        Duration::from_secs(60),
        || async {
            let answers = load.answers();
            let last = answers.last().map(|(_, body)| body.as_str());
            (answers.len() >= 2000 && last == Some("new\n")).then_some(())
        },
    )
    .await;
    // Once the old revision has drained, only the new one answers.
    eventually(
        "the old revision to be gone",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            let instances = status["instances"].as_array().unwrap().clone();
            (status["revision"] == "web-00002"
                && instances.iter().all(|i| i["revision"] == "web-00002"))
            .then_some(())
        },
    )
    .await;
    let answers = load.stop().await;
    assert!(
        failed(&answers).is_empty(),
        "requests failed during the rollout: {:?}",
        failed(&answers)
    );
    assert_eq!(
        answers.first().map(|(_, body)| body.as_str()),
        Some("old\n")
    );
    assert!(answers
        .iter()
        .all(|(_, body)| body == "old\n" || body == "new\n"));
    assert!(answers.len() >= 2000);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_new_revision_leaves_traffic_on_the_old_one() {
    let (config, handle, addr) = serving("old").await;

    config.write_app(
        "web",
        "name = \"web\"\nproject = \"p\"\n[run]\ncommand = [\"/nonexistent/app\"]\nenv = { GREETING = \"new\" }\n",
    );
    eventually(
        "the new revision's failure to be reported",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            status["last_error"]
                .as_str()
                .is_some_and(|error| {
                    error.contains("web-00002") && error.contains("failed to start")
                })
                .then_some(())
        },
    )
    .await;
    assert!(metric(&handle, "tidegate_instance_crashes_total{app=\"web\"}").await >= 1.0);
    for _ in 0..50 {
        let answer = get(addr, HOST, "/env/GREETING").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "old\n");
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn an_edit_to_an_app_at_zero_must_prove_itself_before_it_takes_traffic() {
    let config = ConfigDir::new("", "");
    config.demo_app(
        "web",
        &[("GREETING", "old")],
        "scale_to_zero_grace = \"1s\"",
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "old\n");
    eventually("web to be at zero", Duration::from_secs(20), || async {
        (app_status(&handle, "web").await["instances"] == serde_json::json!([])).then_some(())
    })
    .await;

    // A broken edit at zero: the new revision starts one instance to prove itself, fails, and
    // the old revision keeps taking traffic (from zero).
    config.write_app(
        "web",
        "name = \"web\"\nproject = \"p\"\n[run]\ncommand = [\"/nonexistent/app\"]\n[scale]\nscale_to_zero_grace = \"1s\"\n",
    );
    eventually(
        "the new revision to fail",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            let failed = status["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("web-00002") && e.contains("failed to start"));
            failed.then_some(())
        },
    )
    .await;
    assert_eq!(
        app_status(&handle, "web").await["latest_ready"],
        "web-00001"
    );
    let answer = get(addr, HOST, "/env/GREETING").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "old\n")
    );

    // A good edit at zero: proven by one instance, it takes over, and the app idles to zero.
    config.demo_app(
        "web",
        &[("GREETING", "new")],
        "scale_to_zero_grace = \"1s\"",
    );
    wait_latest_ready(&handle, "web-00003").await;
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "new\n");
    eventually(
        "web to be at zero again",
        Duration::from_secs(20),
        || async {
            (app_status(&handle, "web").await["instances"] == serde_json::json!([])).then_some(())
        },
    )
    .await;
    handle.shutdown().await;
}

/// Writes the demo app with GREETING=`greeting` and a `[[traffic]]` block.
fn demo_with_traffic(config: &ConfigDir, greeting: &str, traffic: &str) {
    config.demo_app("web", &[("GREETING", greeting)], &format!("\n{traffic}"));
}

/// Waits until `/apps` reports `revision` as the latest ready one.
async fn wait_latest_ready(handle: &tidegate::Handle, revision: &str) {
    eventually(
        &format!("{revision} to be the latest ready revision"),
        Duration::from_secs(20),
        || async { (app_status(handle, "web").await["latest_ready"] == revision).then_some(()) },
    )
    .await;
}

/// GREETING answers of `count` requests to `host`, over 4 concurrent clients.
async fn greetings(addr: std::net::SocketAddr, host: &'static str, count: usize) -> Vec<String> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(async move {
            let mut bodies = Vec::new();
            for _ in 0..count / 4 {
                let answer = get(addr, host, "/env/GREETING").await;
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                bodies.push(answer.body.trim().to_string());
            }
            bodies
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_and_tags_reach_their_revisions() {
    let (config, handle, addr) = serving("v1").await;

    config.demo_app("web", &[("GREETING", "v2")], "");
    wait_latest_ready(&handle, "web-00002").await;
    eventually("v2 to answer", Duration::from_secs(20), || async {
        (get(addr, HOST, "/env/GREETING").await.body == "v2\n").then_some(())
    })
    .await;

    // Back to 90% on the first revision, now only in the history: it starts again from zero.
    demo_with_traffic(
        &config,
        "v2",
        "[[traffic]]\nrevision = \"web-00001\"\npercent = 90\ntag = \"stable\"\n\n\
         [[traffic]]\nrevision = \"latest\"\npercent = 10\ntag = \"candidate\"\n",
    );
    eventually("the split to apply", Duration::from_secs(20), || async {
        let traffic = app_status(&handle, "web").await["traffic"].clone();
        (traffic
            == serde_json::json!([
                { "revision": "web-00001", "percent": 90 },
                { "revision": "web-00002", "percent": 10 },
            ]))
        .then_some(())
    })
    .await;
    let status = app_status(&handle, "web").await;
    assert_eq!(
        status["revision"], "web-00002",
        "a traffic edit makes no revision"
    );

    let answers = greetings(addr, HOST, 2000).await;
    let to_v2 = answers.iter().filter(|body| *body == "v2").count();
    eprintln!(
        "split: {to_v2} of {} requests reached the 10% revision",
        answers.len()
    );
    assert!(answers.iter().all(|body| body == "v1" || body == "v2"));
    // 10% of 2,000 is 200, with a standard deviation of about 13.
    assert!(
        (140..=260).contains(&to_v2),
        "{to_v2} of 2,000 requests reached the 10% revision"
    );

    // Each revision is autoscaled on its own traffic and listed with its share and tag.
    let status = app_status(&handle, "web").await;
    let revisions = status["revisions"].as_array().unwrap();
    let find = |name: &str| {
        revisions
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {revisions:?}"))
            .clone()
    };
    let (first, second) = (find("web-00001"), find("web-00002"));
    assert_eq!(
        (first["percent"].as_u64(), second["percent"].as_u64()),
        (Some(90), Some(10))
    );
    assert_eq!(first["tags"], serde_json::json!(["stable"]));
    assert_eq!(second["tags"], serde_json::json!(["candidate"]));
    assert_eq!(
        (first["state"].as_str(), second["state"].as_str()),
        (Some("active"), Some("active"))
    );

    let stable = greetings(addr, "stable-web.p.test.local", 40).await;
    assert!(stable.iter().all(|body| body == "v1"), "{stable:?}");
    let candidate = greetings(addr, "candidate-web.p.test.local", 40).await;
    assert!(candidate.iter().all(|body| body == "v2"), "{candidate:?}");

    // The tag hosts are listed with the others, and each revision has its own series.
    let hosts = app_status(&handle, "web").await["hosts"].clone();
    assert_eq!(
        hosts,
        serde_json::json!([
            "web.p.test.local",
            "stable-web.p.test.local",
            "candidate-web.p.test.local"
        ])
    );
    let series = |revision: &str| {
        format!(
            "tidegate_revision_requests_total{{app=\"web\",code=\"200\",revision=\"{revision}\"}}"
        )
    };
    let (v1, v2) = (
        metric(&handle, &series("web-00001")).await,
        metric(&handle, &series("web-00002")).await,
    );
    let all = metric(&handle, "tidegate_requests_total{app=\"web\",code=\"200\"}").await;
    assert!(v1 >= 40.0 + 1700.0 && v2 >= 40.0 + 140.0, "{v1} {v2}");
    assert_eq!(
        v1 + v2,
        all,
        "every request of the app counted on its revision"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traffic_block_is_refused_and_the_split_stays() {
    let (config, handle, addr) = serving("v1").await;

    // Percentages that do not add up: refused by `tidegate check` and by live reload.
    demo_with_traffic(
        &config,
        "v1",
        "[[traffic]]\nrevision = \"latest\"\npercent = 90\n",
    );
    let output = std::process::Command::new(TIDEGATE)
        .args(["check", "--config"])
        .arg(config.gateway_file())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("web.toml")
            && stderr.contains("traffic")
            && stderr.contains("add up to 90"),
        "{stderr}"
    );
    wait_reloads(&handle, "error", 1.0).await;
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "v1\n");

    // A revision the gateway never had: valid as a file, reported, and the split stays.
    demo_with_traffic(
        &config,
        "v1",
        "[[traffic]]\nrevision = \"web-00009\"\npercent = 100\n",
    );
    eventually(
        "the unknown revision to be reported",
        Duration::from_secs(20),
        || async {
            let status = app_status(&handle, "web").await;
            status["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("web-00009") && error.contains("does not know"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "v1\n");
    let status = app_status(&handle, "web").await;
    assert_eq!(
        status["traffic"],
        serde_json::json!([{ "revision": "web-00001", "percent": 100 }])
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_numbers_and_history_survive_a_restart() {
    let config = ConfigDir::new("state_dir = \"state\"", "");
    config.demo_app("web", &[("GREETING", "v1")], "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "v1\n");
    config.demo_app("web", &[("GREETING", "v2")], "");
    wait_latest_ready(&handle, "web-00002").await;
    handle.shutdown().await;

    // Same spec after the restart: still web-00002, and web-00001 is in the history.
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(get(addr, HOST, "/env/GREETING").await.body, "v2\n");
    let status = app_status(&handle, "web").await;
    assert_eq!(status["revision"], "web-00002");
    let names: Vec<&str> = status["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-00002", "web-00001"]);

    // So traffic can still name web-00001, and the next change is web-00003.
    demo_with_traffic(
        &config,
        "v3",
        "[[traffic]]\nrevision = \"web-00001\"\npercent = 100\n",
    );
    eventually(
        "web-00003 to be created",
        Duration::from_secs(20),
        || async { (app_status(&handle, "web").await["revision"] == "web-00003").then_some(()) },
    )
    .await;
    eventually(
        "the pinned first revision to answer",
        Duration::from_secs(20),
        || async { (get(addr, HOST, "/env/GREETING").await.body == "v1\n").then_some(()) },
    )
    .await;
    handle.shutdown().await;
    let stored =
        std::fs::read_to_string(config.dir.path().join("state/revisions/web.json")).unwrap();
    assert!(stored.contains("\"latest\": 3"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_can_return_to_a_revision_that_is_still_draining() {
    let (config, handle, addr) = serving("v1").await;
    // A long request keeps the first revision draining after the second takes over.
    let long = tokio::spawn(async move { get(addr, HOST, "/env/GREETING?delay_ms=3000").await });
    wait_in_flight(&handle, "web", 1.0).await;
    config.demo_app("web", &[("GREETING", "v2")], "");
    wait_latest_ready(&handle, "web-00002").await;
    eventually(
        "web-00001 to be draining",
        Duration::from_secs(10),
        || async {
            let status = app_status(&handle, "web").await;
            let revisions = status["revisions"].as_array().unwrap().clone();
            revisions
                .iter()
                .any(|r| r["name"] == "web-00001" && r["state"] == "retired")
                .then_some(())
        },
    )
    .await;

    demo_with_traffic(
        &config,
        "v2",
        "[[traffic]]\nrevision = \"web-00001\"\npercent = 100\n",
    );
    eventually(
        "web-00001 to answer again",
        Duration::from_secs(20),
        || async { (get(addr, HOST, "/env/GREETING").await.body == "v1\n").then_some(()) },
    )
    .await;
    let answers = greetings(addr, HOST, 40).await;
    assert!(answers.iter().all(|body| body == "v1"), "{answers:?}");
    let long = long.await.unwrap();
    assert_eq!((long.status, long.body.as_str()), (StatusCode::OK, "v1\n"));
    handle.shutdown().await;
}
