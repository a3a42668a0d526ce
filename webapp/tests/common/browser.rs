//! A real headless Chromium (Debian's `chromium` and `chromium-driver`) at a
//! phone's width, driven over WebDriver: what the browser tests share.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use flypack_e2e::free_port;

use super::PASSWORD;

/// chromedriver, ended by its PID when the test ends.
pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is missing: apt-get install chromium chromium-driver (.ci/debian-packages lists them)");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, port }
}

pub async fn browser(d: &Driver) -> Client {
    let caps = serde_json::json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--no-first-run", "--disable-background-networking"],
            // A phone's viewport (a desktop window cannot be narrower than 500 px).
            "mobileEmulation": {"deviceMetrics": {"width": 360, "height": 780, "pixelRatio": 2.0, "touch": true, "mobile": true}},
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a Chromium session")
}

pub struct Shots(PathBuf);

impl Shots {
    pub fn new() -> Shots {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webapp-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        Shots(dir)
    }
    pub async fn take(&self, c: &Client, name: &str) {
        let png = c.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

pub async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!("no {css} on {:?}: {e}", c.current_url().await.ok()),
    }
}

/// Waits until `css`'s text satisfies `ok` (the page's scripts change it).
pub async fn wait_text(c: &Client, css: &str, within: Duration, ok: impl Fn(&str) -> bool) -> (String, Duration) {
    let t0 = Instant::now();
    loop {
        let t = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if ok(&t) {
            return (t, t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "{css} never matched within {within:?}; last text: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn login(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("#login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "footer", Duration::from_secs(20), |t| t.contains(user)).await;
}

pub async fn logout(c: &Client) {
    c.find(Locator::Css("footer button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(c, "#login", Duration::from_secs(20), |_| true).await;
}

/// Accepts the confirmation dialog app.js opens before `what` posts.
pub async fn confirm(c: &Client, what: &str) {
    let t0 = Instant::now();
    loop {
        match c.accept_alert().await {
            Ok(()) => return,
            Err(_) if t0.elapsed() < Duration::from_secs(10) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("no confirmation dialog for {what}: {e}"),
        }
    }
}

/// A POST from the page itself (its cookie, its CSRF token): the HTTP status.
pub async fn post_from_page(c: &Client, path: &str) -> u64 {
    let js = r#"
        const done = arguments[arguments.length - 1];
        const token = document.querySelector('meta[name="csrf-token"]').content;
        fetch(arguments[0], {method: "POST", headers: {"X-CSRF-Token": token,
              "Content-Type": "application/x-www-form-urlencoded"}, body: "", redirect: "manual"})
          .then(r => done(r.status)).catch(e => done(String(e)));
    "#;
    let v = c.execute_async(js, vec![serde_json::json!(path)]).await.unwrap();
    v.as_u64().unwrap_or_else(|| panic!("the fetch failed: {v}"))
}

/// The page's laid-out width in CSS pixels: wider than the screen means the
/// phone scrolls sideways.
pub async fn page_width(c: &Client) -> u64 {
    let w = c
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await
        .unwrap();
    w.as_u64().unwrap_or_else(|| panic!("scrollWidth: {w}"))
}
