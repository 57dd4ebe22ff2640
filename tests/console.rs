//! The web console in a real headless Chromium against a real gateway: login, an app
//! created through the form and served from zero while the page watches its instance
//! count move, an env change rolling out a new revision, a bad form's field error, logs,
//! jobs; and without a session only the login page and 401s. Screenshots of each page go
//! to target/console-screenshots/.

mod support;

use std::time::Duration;

use fantoccini::Locator;
use http::StatusCode;
use serde_json::json;
use support::api::Api;
use support::browser::Browser;
use support::*;

const HOST: &str = "web.shop.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_watches_and_changes_an_app_in_a_browser() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    let console = format!("http://{}/", handle.admin_addr());
    let browser = Browser::start().await;
    let c = &browser.client;

    // No session: the login page, and the API says 401.
    browser.open(&console, "form#login").await;
    let unauthorized = get(handle.admin_addr(), "admin", "/api/v1/apps").await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    browser.screenshot("login").await;
    browser.fill(&[("#token", "not-the-token")]).await;
    browser.click("form#login button").await;
    browser
        .text_of("#login-error", "a wrong token refused", |t| {
            t.contains("not the API token")
        })
        .await;
    browser.fill(&[("#token", &api.token)]).await;
    browser.click("form#login button").await;
    browser
        .text_of("main h1", "the overview", |t| t == "Overview")
        .await;
    let cookie = c.get_named_cookie("tidegate_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert!(!c.current_url().await.unwrap().as_str().contains(&api.token));

    // Create an app through the form, in a new project.
    // (The gateway runs inside this test binary: the demo app is named by its path.)
    let demo = format!("{TIDEGATE} demo-app");
    browser
        .open(&format!("{console}console/#/new"), "#app-form")
        .await;
    browser
        .fill(&[
            ("#name", "web"),
            ("#new-project", "shop"),
            ("#command", demo.as_str()),
            ("#env", "GREETING=hello"),
            ("#max_scale", "2"),
        ])
        .await;
    browser.screenshot("create-app").await;
    browser.click("#save").await;
    browser
        .text_of("main h1", "the app page", |t| t.starts_with("web"))
        .await;
    let url = browser
        .text_of("#url", "its URL", |t| t.contains(HOST))
        .await;
    assert!(url.starts_with("http://web.shop.test.local:"), "{url}");

    // Listed on the overview with its URL.
    c.goto(&format!("{console}console/#/")).await.unwrap();
    browser
        .text_of("table.apps", "the app listed", |t| {
            t.contains("web") && t.contains(HOST)
        })
        .await;
    browser
        .text_of(
            "tr[data-app=\"web\"] .instances",
            "its live instance count",
            |t| t == "0/0",
        )
        .await;
    browser.screenshot("overview").await;

    // Requested: the app page sees its instance come, without a reload.
    c.goto(&format!("{console}console/#/apps/web"))
        .await
        .unwrap();
    browser
        .text_of("#instances", "no instance yet", |t| t.contains("none"))
        .await;
    let addr = handle.http_addr().unwrap();
    let answer = get(addr, HOST, "/env/GREETING").await;
    assert_eq!(answer.body, "hello\n");
    browser
        .text_of("#instances", "the instance to show up", |t| {
            t.contains("web-00001-") && t.contains("ready")
        })
        .await;
    browser
        .text_of("#log", "its output in the log", |t| !t.is_empty())
        .await;
    browser.screenshot("app").await;

    // Change an env var: a new revision appears and takes the traffic.
    browser
        .open(
            &format!("{console}console/#/apps/web/edit"),
            "#app-form #env",
        )
        .await;
    let env = c.find(Locator::Css("#app-form #env")).await.unwrap();
    env.clear().await.unwrap();
    env.send_keys("GREETING=bonjour").await.unwrap();
    browser.screenshot("edit-app").await;
    browser.click("#save").await;
    browser
        .text_of("#revisions", "web-00002 taking the traffic", |t| {
            t.lines()
                .any(|l| l.contains("web-00002") && l.contains("active") && l.contains("100%"))
        })
        .await;
    eventually(
        "the new revision to answer",
        Duration::from_secs(10),
        || async { (get(addr, HOST, "/env/GREETING").await.body == "bonjour\n").then_some(()) },
    )
    .await;

    // A bad form: the API's refusal shows next to its field, and nothing is written.
    browser
        .open(&format!("{console}console/#/new"), "#app-form")
        .await;
    browser
        .fill(&[
            ("#name", "broken"),
            ("#command", demo.as_str()),
            ("#env", "1BAD=x"),
        ])
        .await;
    browser.click("#save").await;
    browser
        .text_of("[data-for=\"env\"]", "the env field's error", |t| {
            t.contains("1BAD")
        })
        .await;
    browser.screenshot("form-error").await;
    assert!(!config.app_file("broken").exists());

    // Jobs: submit a run from the page and see its indices.
    api.create_job(
        json!({"name": "batch", "project": "shop", "array_indices": "0-5",
                          "run": {"command": ["sh", "-c", "echo index $JOB_INDEX"]}}),
    )
    .await;
    browser
        .open(&format!("{console}console/#/jobs"), "button.submit")
        .await;
    browser.click("button.submit").await;
    browser
        .text_of("#summary", "the run to succeed", |t| {
            t.contains("succeeded") && t.contains("6 succeeded")
        })
        .await;
    browser.click(".cell[data-index=\"3\"]").await;
    browser
        .text_of("#index-log", "index 3's log", |t| t.contains("index 3"))
        .await;
    browser.screenshot("jobrun").await;

    // A change without the session's CSRF header is refused, even with the cookie.
    let refused = c
        .execute(
            "return fetch('/api/v1/apps/web', {method: 'DELETE'}).then(r => r.status);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403));
    assert!(config.app_file("web").exists());

    browser.close().await;
    handle.shutdown().await;
}

/// An app whose instance takes 1.5 s to listen, with the starting page after 300 ms.
fn slow_app(config: &ConfigDir, name: &str) {
    config.write_app(
        name,
        &format!(
            "project = \"p\"\ncold_start_page = true\ncold_start_page_after = \"300ms\"\n\
             [run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\nenv = {{ STARTUP_DELAY_MS = \"1500\" }}\n\
             readiness_path = \"/healthz\"\n"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_waiting_for_a_cold_start_gets_the_starting_page_then_the_app() {
    let config = ConfigDir::new("", "");
    slow_app(&config, "slow");
    slow_app(&config, "later");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();

    // A page load gets the page after 300 ms; a request that is not one waits for the app.
    let page_load = http::Request::get("/")
        .header("host", "slow.p.test.local")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .body(full(bytes::Bytes::new()))
        .unwrap();
    let plain = tokio::spawn(get(addr, "slow.p.test.local", "/"));
    let started = std::time::Instant::now();
    let page = send(addr, page_load).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert!(page.body.contains("slow is starting"), "{}", page.body);
    assert!(page.body.contains("http-equiv=\"refresh\""));
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers["retry-after"], "1");
    let plain = plain.await.unwrap();
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    assert!(plain.body.starts_with("instance="), "{}", plain.body);

    // A browser sees the page, and lands on the app once it serves.
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("http://later.p.test.local:{}/", addr.port()))
        .await
        .unwrap();
    browser
        .text_of("h1", "the starting page", |t| t == "later is starting")
        .await;
    browser.screenshot("cold-start-page").await;
    browser
        .text_of("body", "the app itself", |t| t.starts_with("instance="))
        .await;
    browser.close().await;
    handle.shutdown().await;
}
