//! Headless browsers for the end-to-end browser tests: Chromium driven over
//! the DevTools protocol, Firefox over WebDriver BiDi (both a WebSocket,
//! spoken with tokio-tungstenite), behind one [`Driver`] trait, so that a
//! scenario runs in either.
//!
//! Declared from a test file next to `lb` (`#[macro_use]` for
//! [`in_each_browser!`]):
//!
//! ```ignore
//! #[macro_use]
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

use crate::lb::{OutputLog, TempDir, Tool};

/// Makes two tests of each scenario function named, `chromium::NAME` and
/// `firefox::NAME`, which call `NAME(lb::Tool::Chromium)` and
/// `NAME(lb::Tool::Firefox)`. For a test file that declares `lb`, and this
/// module with `#[macro_use]`.
macro_rules! in_each_browser {
    ($($scenario:ident),* $(,)?) => {
        mod chromium {
            $(#[test]
            fn $scenario() {
                super::$scenario(crate::lb::Tool::Chromium);
            })*
        }
        mod firefox {
            $(#[test]
            fn $scenario() {
                super::$scenario(crate::lb::Tool::Firefox);
            })*
        }
    };
}

/// A browser process started headless with a fresh profile. Its whole
/// process group is killed on drop (a browser forks content and utility
/// processes), and its output is reported if the test fails.
struct Process {
    child: Child,
    log: OutputLog,
    /// Which browser, for messages.
    name: &'static str,
    _profile: TempDir,
}

impl Process {
    /// Runs `cmd` (its profile in `profile`) in a process group of its own
    /// and waits, at most 30 s, for the line of its output that starts with
    /// `announce`; returns the process and the rest of that line.
    fn start(
        name: &'static str,
        bin: &Path,
        mut cmd: Command,
        profile: TempDir,
        announce: &str,
    ) -> (Process, String) {
        // The browser's own scratch files go in the profile too, which is
        // removed after the browser is killed; otherwise every run leaves
        // some in /tmp.
        cmd.env("TMPDIR", profile.path()).process_group(0);
        let (child, log) = OutputLog::spawn(&mut cmd, bin);
        let mut process = Process {
            child,
            log,
            name,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let rest = loop {
            let found = process
                .log
                .lines()
                .iter()
                .find_map(|l| l.strip_prefix(announce).map(|rest| rest.trim().to_owned()));
            if let Some(rest) = found {
                break rest;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "{name} exited with {status} before printing {announce:?}:\n{}",
                    process.log.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not print {announce:?} within 30 s:\n{}",
                process.log.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (process, rest)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The group id is the browser's pid (`process_group(0)`).
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL -{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log
            .report_if_failing(&format!("{}'s output", self.name));
    }
}

/// A headless Chromium with a fresh profile, killed on drop.
pub struct Chromium {
    process: Process,
    /// `ws://127.0.0.1:PORT/devtools/browser/ID`.
    pub devtools_url: String,
}

impl Chromium {
    /// Starts `bin` headless on `about:blank`, with `switches` besides the
    /// usual ones and `cookies` for third-party cookies, and waits (bounded)
    /// for its `DevTools listening on ws://...` line.
    pub fn start(bin: &Path, switches: &[&str], cookies: ThirdPartyCookies) -> Chromium {
        let profile = TempDir::new("chromium");
        // The setting behind "Third-party cookies" in chrome://settings/cookies.
        let mode = match cookies {
            ThirdPartyCookies::BrowserDefault => None,
            ThirdPartyCookies::Allowed => Some(0),
            ThirdPartyCookies::Blocked => Some(1),
            ThirdPartyCookies::Partitioned => {
                panic!("Chromium has no setting that partitions third-party cookies")
            }
        };
        if let Some(mode) = mode {
            let default = profile.path().join("Default");
            std::fs::create_dir_all(&default).expect("create the profile's Default");
            let prefs = json!({ "profile": { "cookie_controls_mode": mode } });
            std::fs::write(default.join("Preferences"), prefs.to_string())
                .expect("write Preferences");
        }
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
        .arg("about:blank");
        let (process, devtools_url) =
            Process::start("chromium", bin, cmd, profile, "DevTools listening on ");
        Chromium {
            process,
            devtools_url,
        }
    }
}

/// What a browser does with third-party cookies, set in its fresh profile.
/// Browsers' defaults differ, and change from one version to the next (a
/// fresh profile of Debian's Chromium 156 blocks them, Firefox 153 keeps each
/// in a jar of its own for the top-level site), so a test whose outcome
/// depends on it sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdPartyCookies {
    /// Whatever the fresh profile does: nothing is set.
    BrowserDefault,
    /// Stored and sent like first-party ones: Chromium's
    /// `profile.cookie_controls_mode` 0, Firefox's
    /// `network.cookie.cookieBehavior` 0.
    Allowed,
    /// Stored and sent, in a jar of the top-level site (Firefox's default,
    /// "Total Cookie Protection"): `network.cookie.cookieBehavior` 5.
    /// Chromium has no such setting.
    Partitioned,
    /// Refused: Chromium's `profile.cookie_controls_mode` 1 ("Block
    /// third-party cookies"), Firefox's `network.cookie.cookieBehavior` 1
    /// ("All cross-site cookies").
    Blocked,
}

/// A headless Firefox with a fresh profile, killed on drop.
pub struct Firefox {
    process: Process,
    /// `ws://127.0.0.1:PORT`, where WebDriver BiDi sessions start at
    /// `/session`.
    pub bidi_url: String,
}

/// Preferences of the test profile, on top of those Firefox's remote agent
/// sets itself for automation (no updates, telemetry or first-run pages).
const FIREFOX_PREFS: &str = r#"// Loopback only: no proxy from the environment.
user_pref("network.proxy.type", 0);
// An evaluation that a navigation interrupts is retried in the new
// document, not failed (Firefox does so on its own only for a tab's first).
user_pref("remote.retry-on-abort", true);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
"#;

impl Firefox {
    /// Starts `bin` headless on `about:blank`, with `cookies` for
    /// third-party cookies, and waits (bounded) for its `WebDriver BiDi
    /// listening on ws://...` line.
    pub fn start(bin: &Path, cookies: ThirdPartyCookies) -> Firefox {
        let profile = TempDir::new("firefox");
        let behavior = match cookies {
            ThirdPartyCookies::BrowserDefault => None,
            ThirdPartyCookies::Allowed => Some(0),
            ThirdPartyCookies::Partitioned => Some(5),
            ThirdPartyCookies::Blocked => Some(1),
        };
        let mut prefs = FIREFOX_PREFS.to_owned();
        if let Some(behavior) = behavior {
            prefs += &format!("user_pref(\"network.cookie.cookieBehavior\", {behavior});\n");
        }
        std::fs::write(profile.path().join("user.js"), prefs).expect("write user.js");
        let mut cmd = Command::new(bin);
        cmd.args(["--headless", "--no-remote", "--profile"])
            .arg(profile.path())
            .args(["--remote-debugging-port", "0", "about:blank"])
            .env("MOZ_CRASHREPORTER_DISABLE", "1");
        let (process, bidi_url) =
            Process::start("firefox", bin, cmd, profile, "WebDriver BiDi listening on ");
        Firefox { process, bidi_url }
    }
}

/// A DevTools protocol connection to the browser endpoint. Commands for a
/// page go through its flat session id.
pub struct Cdp {
    ws: Socket,
    next_id: u64,
    /// The target (tab) of each session [`Cdp::open`] made.
    targets: Vec<(String, String)>,
}

/// Bound on any single command, DevTools or BiDi.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to a browser's control WebSocket at `url`, within
/// [`COMMAND_TIMEOUT`].
async fn connect_control(url: &str) -> Socket {
    let (ws, _) = tokio::time::timeout(COMMAND_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|_| panic!("handshake with {url} timed out"))
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    ws
}

/// Sends `msg` (command `id`, `method`) and returns the message that answers
/// it, skipping the events and other messages that arrive meanwhile; at most
/// [`COMMAND_TIMEOUT`].
async fn round_trip(ws: &mut Socket, id: u64, msg: &Value, method: &str) -> Result<Value, String> {
    ws.send(Message::text(msg.to_string()))
        .await
        .map_err(|e| format!("{method}: send: {e}"))?;
    let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("{method}: no answer within {COMMAND_TIMEOUT:?}"))?;
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => return Err(format!("{method}: browser closed: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("{method}: {e}")),
            None => return Err(format!("{method}: the browser's connection ended")),
        };
        let answer: Value = serde_json::from_str(text.as_str())
            .map_err(|e| format!("{method}: answer is not JSON ({e}): {text}"))?;
        if answer.get("id").and_then(Value::as_u64) == Some(id) {
            return Ok(answer);
        }
    }
}

impl Cdp {
    pub async fn connect(devtools_url: &str) -> Cdp {
        Cdp {
            ws: connect_control(devtools_url).await,
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
        let answer = round_trip(&mut self.ws, id, &msg, method).await?;
        if let Some(error) = answer.get("error") {
            return Err(format!("{method}: {error}"));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// A WebDriver BiDi session with Firefox, one that accepts the tests'
/// self-made certificates. A tab is named by its browsing context id.
pub struct Bidi {
    ws: Socket,
    next_id: u64,
}

impl Bidi {
    /// Connects to `bidi_url` ([`Firefox::bidi_url`]) and starts a session.
    pub async fn connect(bidi_url: &str) -> Bidi {
        let mut bidi = Bidi {
            ws: connect_control(&format!("{bidi_url}/session")).await,
            next_id: 1,
        };
        let capabilities = json!({ "alwaysMatch": { "acceptInsecureCerts": true } });
        bidi.call("session.new", json!({ "capabilities": capabilities }))
            .await
            .unwrap_or_else(|e| panic!("start a WebDriver BiDi session: {e}"));
        bidi
    }

    /// Sends `method` and returns its `result`, skipping the events that
    /// arrive meanwhile.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params });
        let answer = round_trip(&mut self.ws, id, &msg, method).await?;
        if answer["type"] == "error" {
            return Err(format!(
                "{method}: {}: {}",
                answer["error"].as_str().unwrap_or("error"),
                answer["message"].as_str().unwrap_or_default()
            ));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// A BiDi remote value of a primitive type as plain JSON; other types
/// (objects, nodes) are an error: [`Driver::eval`] returns primitives only.
fn primitive(remote: &Value) -> Result<Value, String> {
    match remote["type"].as_str() {
        // A number is JSON's, or a string for NaN, -0 and the infinities.
        Some("string" | "boolean" | "number") => Ok(remote["value"].clone()),
        Some("null" | "undefined") => Ok(Value::Null),
        _ => Err(format!("not a primitive value: {remote}")),
    }
}

/// What the page scenarios need of a browser, whichever protocol drives it.
/// A tab is named by the string [`Driver::open`] returns.
pub trait Driver {
    /// Opens `url` in a new tab; returns the tab's handle.
    async fn open(&mut self, url: &str) -> Result<String, String>;

    /// Closes `tab` (one [`Driver::open`] made), and with it the page's
    /// sockets.
    async fn close_tab(&mut self, tab: &str) -> Result<(), String>;

    /// Evaluates `expression` in `tab` and returns its value, a string,
    /// number, boolean or null.
    async fn eval(&mut self, tab: &str, expression: &str) -> Result<Value, String>;

    /// Every cookie the browser holds, each as an object with at least
    /// `name`, `value` (a string), `domain`, `path`, `secure`, `httpOnly`,
    /// `session` (true when it has no expiry) and `expires` (its expiry in
    /// seconds since the Unix epoch, -1 for none), and `sameSite` (`Strict`,
    /// `Lax` or `None`) when the cookie set it: the DevTools protocol's
    /// names.
    async fn cookies(&mut self) -> Result<Vec<Value>, String>;

    /// The cookie named `name` that the browser holds, as [`Driver::cookies`]
    /// gives it; panics, listing the cookies it holds, when there is none.
    async fn stored_cookie(&mut self, name: &str) -> Value {
        let cookies = self.cookies().await.expect("the browser's cookies");
        cookies
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} cookie in the browser: {cookies:?}"))
    }

    /// Deletes every cookie the browser holds.
    async fn clear_cookies(&mut self) -> Result<(), String>;

    /// Stores `cookie`, one that [`Driver::cookies`] returned, with its
    /// name, value, domain, path, `Secure`, `HttpOnly` and `SameSite`, as a
    /// session cookie (its expiry, if it had one, is not restored).
    async fn set_cookie(&mut self, cookie: &Value) -> Result<(), String>;

    /// Asks the browser to exit (dropping it kills it anyway).
    async fn close_browser(&mut self);

    /// Whether `error`, from [`Driver::eval`], says only that the tab is
    /// between two documents (it has none to evaluate in for a moment).
    fn between_documents(&self, error: &str) -> bool;

    /// Polls the page's `document.title` every 50 ms until it is one of
    /// `titles`, and returns it; after `timeout`, returns the last title seen
    /// as the error. While the tab changes documents (a redirect to another
    /// site swaps its renderer), that counts as no title yet. Any other
    /// failure to read the title (the browser or the tab gone) is returned at
    /// once.
    async fn wait_for_title(
        &mut self,
        tab: &str,
        titles: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let since = Instant::now();
        loop {
            let title = match self.eval(tab, "document.title").await {
                Ok(title) => title.as_str().unwrap_or_default().to_owned(),
                Err(e) if self.between_documents(&e) => format!("(between documents: {e})"),
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
}

impl Driver for Cdp {
    async fn open(&mut self, url: &str) -> Result<String, String> {
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

    async fn close_tab(&mut self, session: &str) -> Result<(), String> {
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

    async fn eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
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

    async fn cookies(&mut self) -> Result<Vec<Value>, String> {
        let result = self.call("Storage.getCookies", json!({}), None).await?;
        Ok(result["cookies"].as_array().cloned().unwrap_or_default())
    }

    async fn clear_cookies(&mut self) -> Result<(), String> {
        self.call("Storage.clearCookies", json!({}), None)
            .await
            .map(drop)
    }

    async fn set_cookie(&mut self, cookie: &Value) -> Result<(), String> {
        let mut stored = json!({
            "name": cookie["name"], "value": cookie["value"], "domain": cookie["domain"],
            "path": cookie["path"], "secure": cookie["secure"], "httpOnly": cookie["httpOnly"],
        });
        // Without the field, the cookie has none.
        if cookie["sameSite"].is_string() {
            stored["sameSite"] = cookie["sameSite"].clone();
        }
        self.call("Storage.setCookies", json!({ "cookies": [stored] }), None)
            .await
            .map(drop)
    }

    async fn close_browser(&mut self) {
        let _ = self.call("Browser.close", json!({}), None).await;
    }

    fn between_documents(&self, error: &str) -> bool {
        [
            "Cannot find default execution context",
            "Execution context was destroyed",
        ]
        .iter()
        .any(|m| error.contains(m))
    }
}

impl Driver for Bidi {
    async fn open(&mut self, url: &str) -> Result<String, String> {
        let created = self
            .call("browsingContext.create", json!({ "type": "tab" }))
            .await?;
        let context = created["context"]
            .as_str()
            .ok_or_else(|| format!("no context: {created}"))?
            .to_owned();
        // Like DevTools' Target.createTarget, returns before the page loads.
        self.call(
            "browsingContext.navigate",
            json!({ "context": context, "url": url, "wait": "none" }),
        )
        .await?;
        Ok(context)
    }

    async fn close_tab(&mut self, context: &str) -> Result<(), String> {
        self.call("browsingContext.close", json!({ "context": context }))
            .await
            .map(drop)
    }

    async fn eval(&mut self, context: &str, expression: &str) -> Result<Value, String> {
        let params = json!({
            "expression": expression,
            "target": { "context": context },
            "awaitPromise": false,
            "resultOwnership": "none",
        });
        let result = self.call("script.evaluate", params).await?;
        if result["type"] == "exception" {
            return Err(format!("{expression}: {}", result["exceptionDetails"]));
        }
        primitive(&result["result"]).map_err(|e| format!("{expression}: {e}"))
    }

    async fn cookies(&mut self) -> Result<Vec<Value>, String> {
        let result = self.call("storage.getCookies", json!({})).await?;
        let mut cookies = result["cookies"].as_array().cloned().unwrap_or_default();
        // In the DevTools protocol's terms, which the scenarios use. BiDi
        // gives each value as `{ "type": "string", "value": .. }`, SameSite in
        // lower case, and the expiry only of a cookie that has one.
        for cookie in &mut cookies {
            let value = primitive(&cookie["value"])?;
            cookie["value"] = value;
            let same_site = match cookie["sameSite"].as_str() {
                Some("strict") => Some("Strict"),
                Some("lax") => Some("Lax"),
                Some("none") => Some("None"),
                // The cookie did not set it; DevTools leaves the field out.
                Some("default") => None,
                other => return Err(format!("sameSite {other:?} in {cookie}")),
            };
            match same_site {
                Some(same_site) => cookie["sameSite"] = json!(same_site),
                None => drop(cookie.as_object_mut().and_then(|c| c.remove("sameSite"))),
            }
            let expiry = cookie.get("expiry").and_then(Value::as_f64);
            cookie["session"] = json!(expiry.is_none());
            cookie["expires"] = json!(expiry.unwrap_or(-1.0));
        }
        Ok(cookies)
    }

    async fn clear_cookies(&mut self) -> Result<(), String> {
        self.call("storage.deleteCookies", json!({}))
            .await
            .map(drop)
    }

    async fn set_cookie(&mut self, cookie: &Value) -> Result<(), String> {
        let mut stored = json!({
            "name": cookie["name"],
            "value": { "type": "string", "value": cookie["value"] },
            "domain": cookie["domain"], "path": cookie["path"], "secure": cookie["secure"],
            "httpOnly": cookie["httpOnly"],
        });
        // Firefox refuses a null; without the field, the cookie has none.
        if let Some(same_site) = cookie["sameSite"].as_str() {
            stored["sameSite"] = json!(same_site.to_ascii_lowercase());
        }
        self.call("storage.setCookie", json!({ "cookie": stored }))
            .await
            .map(drop)
    }

    async fn close_browser(&mut self) {
        let _ = self.call("browser.close", json!({})).await;
    }

    fn between_documents(&self, _error: &str) -> bool {
        // With `remote.retry-on-abort` (FIREFOX_PREFS), Firefox retries an
        // evaluation that a change of documents interrupts, in the new one.
        // (Even without it, thousands of evaluations sent back to back over
        // ten navigations between two origins all succeeded, in Firefox 153
        // ESR.) So any error is a real one.
        false
    }
}

/// Chromium or Firefox, running: for a test that runs one scenario in each.
pub enum Launched {
    Chromium(Chromium),
    Firefox(Firefox),
}

impl Launched {
    /// Starts `browser` ([`Tool::Chromium`] or [`Tool::Firefox`]) at `bin`.
    /// Both accept the tests' self-made certificates: Chromium is told to
    /// ignore certificate errors, and [`Bidi::connect`] asks Firefox to.
    pub fn start(browser: Tool, bin: &Path) -> Launched {
        Launched::with_third_party_cookies(browser, bin, ThirdPartyCookies::BrowserDefault)
    }

    /// [`Launched::start`], with `cookies` set for third-party cookies.
    pub fn with_third_party_cookies(
        browser: Tool,
        bin: &Path,
        cookies: ThirdPartyCookies,
    ) -> Launched {
        match browser {
            Tool::Chromium => Launched::Chromium(Chromium::start(
                bin,
                &["--ignore-certificate-errors"],
                cookies,
            )),
            Tool::Firefox => Launched::Firefox(Firefox::start(bin, cookies)),
            other => panic!("{other:?} is not a browser"),
        }
    }

    /// A driver connected to the browser.
    pub async fn connect(&self) -> AnyDriver {
        match self {
            Launched::Chromium(chromium) => {
                AnyDriver::Cdp(Cdp::connect(&chromium.devtools_url).await)
            }
            Launched::Firefox(firefox) => AnyDriver::Bidi(Bidi::connect(&firefox.bidi_url).await),
        }
    }
}

/// The driver of a [`Launched`] browser.
pub enum AnyDriver {
    Cdp(Cdp),
    Bidi(Bidi),
}

/// `$body`, with `$d` bound to whichever driver `$self` holds.
macro_rules! on_either {
    ($self:ident, $d:ident => $body:expr) => {
        match $self {
            AnyDriver::Cdp($d) => $body,
            AnyDriver::Bidi($d) => $body,
        }
    };
}

impl Driver for AnyDriver {
    async fn open(&mut self, url: &str) -> Result<String, String> {
        on_either!(self, d => d.open(url).await)
    }

    async fn close_tab(&mut self, tab: &str) -> Result<(), String> {
        on_either!(self, d => d.close_tab(tab).await)
    }

    async fn eval(&mut self, tab: &str, expression: &str) -> Result<Value, String> {
        on_either!(self, d => d.eval(tab, expression).await)
    }

    async fn cookies(&mut self) -> Result<Vec<Value>, String> {
        on_either!(self, d => d.cookies().await)
    }

    async fn clear_cookies(&mut self) -> Result<(), String> {
        on_either!(self, d => d.clear_cookies().await)
    }

    async fn set_cookie(&mut self, cookie: &Value) -> Result<(), String> {
        on_either!(self, d => d.set_cookie(cookie).await)
    }

    async fn close_browser(&mut self) {
        on_either!(self, d => d.close_browser().await)
    }

    fn between_documents(&self, error: &str) -> bool {
        on_either!(self, d => d.between_documents(error))
    }
}
