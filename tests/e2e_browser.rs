//! End to end with a real browser: headless Chromium loads the example's demo
//! page through HAProxy (`deploy/haproxy.cfg`, three nodes). The page opens a
//! WebSocket, reconnects once, and reports both welcomes.
//!
//! A `kept` second welcome on the same node with the same session proves that
//! the browser stored the cookie set on the `101` and sent it back, and that
//! HAProxy routed the reconnect by it.
//!
//! Needs `haproxy` and `chromium` (`bash .ci/install-e2e.sh`). Without one of
//! them the test passes with a loud `SKIPPED` line, except under `CI=true`,
//! where it fails. `E2E_HAPROXY` / `E2E_CHROMIUM` pick the executables.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/lb.rs"]
mod lb;
mod support;

use std::time::{Duration, Instant};

use browser::{Cdp, Chromium};
use lb::{Cluster, NodeOptions, Welcome};
use serde_json::Value;

/// Bound on the page's whole run (load, connect, reconnect).
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn browser_sends_the_cookie_from_the_101_back_through_haproxy() {
    let tools = [lb::Tool::HaProxy, lb::Tool::Chromium];
    let Some([haproxy, chromium]) = lb::tools_or_skip("e2e_browser", tools) else {
        return;
    };
    let started = Instant::now();
    let cluster = Cluster::start(
        &haproxy,
        NodeOptions {
            close_delay: Duration::ZERO,
            close_spread: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(1),
        },
    );
    let browser = Chromium::start(&chromium);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(scenario(&cluster, &browser));
    lb::report(&format!(
        "browser e2e: total {:?} (including the cluster and browser start)",
        started.elapsed()
    ));
}

async fn scenario(cluster: &Cluster, browser: &Chromium) {
    let mut cdp = Cdp::connect(&browser.devtools_url).await;
    let url = format!("http://{}/?auto=1", cluster.frontend);
    let page = cdp.open(&url).await.expect("open the demo page");

    // The page sets its title to `done` (or `error`) when it has both welcomes.
    let loaded = Instant::now();
    let title = match cdp
        .wait_for_title(&page, &["done", "error"], PAGE_TIMEOUT)
        .await
    {
        Ok(title) => title,
        Err(title) => panic!(
            "the page did not finish within {PAGE_TIMEOUT:?} (title {title:?}); its log:\n{}",
            cdp.eval(&page, "document.getElementById('log').textContent")
                .await
                .unwrap_or_default()
        ),
    };
    let result = cdp
        .eval(&page, "document.getElementById('result').textContent")
        .await
        .expect("read the result");
    let result = result.as_str().expect("result text").to_owned();
    lb::report(&format!(
        "browser: page finished in {:?}: {result}",
        loaded.elapsed()
    ));
    assert_eq!(title, "done", "the page reported an error: {result}");

    let result: Value = serde_json::from_str(&result).expect("result is JSON");
    let first = Welcome::from_json(&result["first"]).expect("first welcome");
    let second = Welcome::from_json(&result["second"]).expect("second welcome");
    assert_eq!(first.affinity, "issued", "fresh profile: {first:?}");
    assert_eq!(
        (second.affinity.as_str(), &second.node, &second.session),
        ("kept", &first.node, &first.session),
        "the reconnect should keep the session on its node: {first:?} then {second:?}"
    );

    // The browser holds the cookie from the 101, HttpOnly: the page's script
    // cannot read it.
    let cookies = cdp.cookies().await.expect("Storage.getCookies");
    let cookie = cookies
        .iter()
        .find(|c| c["name"] == lb::COOKIE_NAME)
        .unwrap_or_else(|| panic!("no {} cookie in the browser: {cookies:?}", lb::COOKIE_NAME));
    lb::report(&format!("browser: stored cookie {cookie}"));
    let value = cookie["value"].as_str().expect("cookie value");
    assert!(
        value.starts_with(&first.session),
        "the cookie {value:?} should carry the session {}",
        first.session
    );
    assert_eq!(cookie["httpOnly"], true, "HttpOnly: {cookie}");
    assert_eq!(cookie["path"], "/", "Path: {cookie}");
    let visible = cdp
        .eval(&page, "document.cookie")
        .await
        .expect("read document.cookie");
    let visible = visible.as_str().expect("document.cookie is a string");
    assert!(
        !visible.contains(lb::COOKIE_NAME),
        "HttpOnly cookie visible to the page: {visible:?}"
    );

    // And HAProxy learned that value from the 101, for the node that set it.
    let stuck = cluster.stuck_node(value).expect("HAProxy admin socket");
    assert_eq!(
        stuck,
        Some(first.node.as_str()),
        "HAProxy's stick table for {value:?}"
    );

    cdp.close_browser().await;
}
