//! Headless Chromium driven over the DevTools protocol (a WebSocket, spoken
//! with tokio-tungstenite), for the end-to-end browser test.
//!
//! Declared from a test file next to `lb`:
//!
//! ```ignore
//! #[path = "support/browser.rs"]
//! mod browser;
//! ```
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::lb::{OutputLog, TempDir};

/// A headless Chromium with a fresh profile. Its whole process group is
/// killed on drop (the browser forks renderer and utility processes).
pub struct Chromium {
    child: Child,
    log: OutputLog,
    /// `ws://127.0.0.1:PORT/devtools/browser/ID`.
    pub devtools_url: String,
    _profile: TempDir,
}

impl Chromium {
    /// Starts `bin` headless on `about:blank` and waits (bounded) for its
    /// `DevTools listening on ws://...` line.
    pub fn start(bin: &Path) -> Chromium {
        Chromium::start_with(bin, &[])
    }

    /// [`Chromium::start`] with more command-line switches.
    pub fn start_with(bin: &Path, switches: &[&str]) -> Chromium {
        let profile = TempDir::new("chromium");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--headless",
            // Root in a container has no usable sandbox; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-quic",
            // Loopback only: no proxy from the environment.
            "--no-proxy-server",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .args(switches)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        // Chromium's own scratch directories (`org.chromium.Chromium.*`) go in
        // the profile too, which is removed after the browser is killed;
        // otherwise every run leaves a few in /tmp.
        .env("TMPDIR", profile.path())
        // Its own process group, so drop can end the browser's children too.
        .process_group(0);
        let (child, log) = OutputLog::spawn(&mut cmd, bin);
        let mut browser = Chromium {
            child,
            log,
            devtools_url: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        browser.devtools_url = loop {
            let found = browser
                .log
                .lines()
                .iter()
                .find_map(|l| l.strip_prefix("DevTools listening on ").map(str::to_owned));
            if let Some(url) = found {
                break url.trim().to_owned();
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!(
                    "chromium exited with {status} before listening:\n{}",
                    browser.log.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium printed no DevTools address within 30 s:\n{}",
                browser.log.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        browser
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The group id is the browser's pid (`process_group(0)`).
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL -{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.report_if_failing("chromium's output");
    }
}

/// A DevTools protocol connection to the browser endpoint. Commands for a
/// page go through its flat session id.
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The target (tab) of each session [`Cdp::open`] made.
    targets: Vec<(String, String)>,
}

/// Bound on any single DevTools command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Cdp {
    pub async fn connect(devtools_url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio_tungstenite::connect_async(devtools_url),
        )
        .await
        .expect("DevTools handshake timed out")
        .unwrap_or_else(|e| panic!("connect to DevTools at {devtools_url}: {e}"));
        Cdp {
            ws,
            next_id: 1,
            targets: Vec::new(),
        }
    }

    /// Sends `method` and returns its `result`, skipping the events that
    /// arrive meanwhile. `session`: a page's session id, `None` for the browser.
    pub async fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            msg["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| format!("{method}: no answer within {COMMAND_TIMEOUT:?}"))?;
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => {
                    return Err(format!("{method}: DevTools closed: {f:?}"))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{method}: {e}")),
                None => return Err(format!("{method}: DevTools connection ended")),
            };
            let answer: Value = serde_json::from_str(text.as_str())
                .map_err(|e| format!("{method}: answer is not JSON ({e}): {text}"))?;
            if answer.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // an event, or an answer to nobody
            }
            if let Some(error) = answer.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(answer.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Opens `url` in a new tab and attaches to it; returns the session id.
    pub async fn open(&mut self, url: &str) -> Result<String, String> {
        let target = self
            .call("Target.createTarget", json!({ "url": url }), None)
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| format!("no targetId: {target}"))?
            .to_owned();
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
                None,
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no sessionId: {attached}"))?;
        self.targets.push((session.clone(), target_id));
        Ok(session)
    }

    /// Closes the tab of `session` (one [`Cdp::open`] made), and with it the
    /// page's sockets.
    pub async fn close_tab(&mut self, session: &str) -> Result<(), String> {
        let target = self
            .targets
            .iter()
            .find(|(s, _)| s == session)
            .map(|(_, target)| target.clone())
            .ok_or_else(|| format!("no tab of session {session}"))?;
        self.call("Target.closeTarget", json!({ "targetId": target }), None)
            .await
            .map(drop)
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
                Some(session),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls the page's `document.title` every 50 ms until it is one of
    /// `titles`, and returns it; after `timeout`, returns the last title seen
    /// as the error. While the tab changes documents (a redirect to another
    /// site swaps its renderer), it has no context to evaluate in for a
    /// moment: that counts as no title yet. Any other failure to read the
    /// title (the browser or the tab gone) is returned at once.
    pub async fn wait_for_title(
        &mut self,
        session: &str,
        titles: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        const BETWEEN_DOCUMENTS: [&str; 2] = [
            "Cannot find default execution context",
            "Execution context was destroyed",
        ];
        let since = Instant::now();
        loop {
            let title = match self.eval(session, "document.title").await {
                Ok(title) => title.as_str().unwrap_or_default().to_owned(),
                Err(e) if BETWEEN_DOCUMENTS.iter().any(|m| e.contains(m)) => {
                    format!("(between documents: {e})")
                }
                Err(e) => return Err(format!("(unreadable: {e})")),
            };
            if titles.contains(&title.as_str()) {
                return Ok(title);
            }
            if since.elapsed() > timeout {
                return Err(title);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every cookie the browser holds, with its attributes.
    pub async fn cookies(&mut self) -> Result<Vec<Value>, String> {
        let result = self.call("Storage.getCookies", json!({}), None).await?;
        Ok(result["cookies"].as_array().cloned().unwrap_or_default())
    }

    /// Asks the browser to exit (drop kills it anyway).
    pub async fn close_browser(&mut self) {
        let _ = self.call("Browser.close", json!({}), None).await;
    }
}
