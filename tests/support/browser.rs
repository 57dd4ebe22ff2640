//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/test`): chromedriver on a free port, a session
//! with the flags the machine needs, screenshots saved under `target/`.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::eventually;

/// chromedriver and one browser session; both end when dropped (the session is closed by
/// `close`, chromedriver is killed with the value).
pub struct Browser {
    pub client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own, which the browser it starts joins: dropping the
        // `Browser` kills the whole group, so a test that fails before `close` leaves no
        // Chromium behind.
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (chromium-driver, installed by ./scripts/test)");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually(
            "chromedriver to listen",
            Duration::from_secs(20),
            || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--no-first-run", "--window-size=1280,1000",
                         // App hosts (`<app>.<project>.test.local`) reach the gateway.
                         "--host-resolver-rules=MAP *.test.local 127.0.0.1"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://{addr}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
        }
    }

    /// Waits until the element `css` exists and its text satisfies `check`; its text.
    pub async fn text_of(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        eventually(what, Duration::from_secs(30), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            let text = element.text().await.ok()?;
            check(&text).then_some(text)
        })
        .await
    }

    /// Goes to `url` and waits until the element `css` is on the page.
    pub async fn open(&self, url: &str, css: &str) {
        self.client.goto(url).await.unwrap();
        self.client
            .wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} on {url}: {e}"));
    }

    /// Types each value into the element of its selector.
    pub async fn fill(&self, fields: &[(&str, &str)]) {
        for (css, value) in fields {
            let element = self.client.find(Locator::Css(css)).await.unwrap();
            element.send_keys(value).await.unwrap();
        }
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        element.click().await.unwrap();
    }

    /// Saves a screenshot as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
