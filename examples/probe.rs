//! A routing check: does a load balancer keep reconnects on one node?
//!
//! Run with
//!
//! ```sh
//! cargo run --example probe -- ws://127.0.0.1:8080/ws -n 50 --min-sticky 100
//! ```
//!
//! It opens `-n` WebSocket connections one after another, like a client that
//! keeps reconnecting. The first goes without cookies; each later one sends
//! back every cookie received so far (the affinity cookie from the `101`, and
//! any the load balancer added, such as ALB's `AWSALBAPP-*`), newest value
//! winning. It reads the welcome frame of the example servers
//! (`{"affinity":…,"node":…,"session":…}`, keys in any order), prints one row
//! per connection and a summary.
//!
//! Stickiness is the share of reconnections (connections 2 to N) that landed
//! on the same node as connection 1 *and* kept its session id. The exit status
//! is 1 when it is below `--min-sticky` (default 100) or when connection 1
//! fails, 2 on bad arguments, 0 otherwise.
//!
//! Like a browser, it drops a cookie set with `Max-Age=0`; unlike one, it
//! sends `Secure` cookies back over `ws://`. A browser does so only to a
//! loopback host, so when a `Secure` affinity cookie comes over `ws://` from
//! any other host, the probe warns that browsers would not stick there.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use http::HeaderValue;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const USAGE: &str = "\
usage: probe WS_URL [OPTIONS]

  WS_URL                 e.g. ws://127.0.0.1:8080/ws (ws:// only: no TLS in this example)
  -n COUNT               connections to open, one after another (default 10, 2 to 100000)
  --min-sticky PCT       exit 1 below this stickiness, 0 to 100 (default 100)
  --cookie-name NAME     the affinity cookie (default WS_SESSION_ID)
  --interval MS          pause between connections (default 0)
  --timeout SECS         limit for each handshake and each read (default 5, at most 3600)
  -h, --help             print this help
";

/// The most connections one run opens.
const MAX_COUNT: usize = 100_000;
/// The longest `--timeout`: an hour.
const MAX_TIMEOUT_SECS: f64 = 3_600.0;

struct Options {
    url: String,
    count: usize,
    min_sticky: f64,
    cookie_name: String,
    interval: Duration,
    timeout: Duration,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut url = None;
    let mut opts = Options {
        url: String::new(),
        count: 10,
        min_sticky: 100.0,
        cookie_name: "WS_SESSION_ID".to_owned(),
        interval: Duration::ZERO,
        timeout: Duration::from_secs(5),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "-n" | "--count" => {
                let v = value()?;
                opts.count = v
                    .parse()
                    .ok()
                    .filter(|n| (2..=MAX_COUNT).contains(n))
                    .ok_or_else(|| format!("{flag}: `{v}` is not a count from 2 to {MAX_COUNT}"))?;
            }
            "--min-sticky" => {
                let v = value()?;
                opts.min_sticky = v
                    .trim_end_matches('%')
                    .parse()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| format!("{flag}: `{v}` is not a percentage from 0 to 100"))?;
            }
            "--cookie-name" => opts.cookie_name = value()?,
            "--interval" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("{flag}: `{v}` is not a number of milliseconds"))?;
                opts.interval = Duration::from_millis(ms);
            }
            "--timeout" => {
                let v = value()?;
                opts.timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECS)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        format!("{flag}: `{v}` is not a number of seconds above 0, at most {MAX_TIMEOUT_SECS}")
                    })?;
            }
            other if other.starts_with('-') => return Err(format!("unknown argument `{other}`")),
            _ if url.is_none() => url = Some(flag),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let url = url.ok_or("missing WS_URL")?;
    if url.starts_with("wss://") {
        return Err(
            "wss:// is not supported by this example (built without TLS); \
                    probe the balancer's plain listener or a port-forward"
                .to_owned(),
        );
    }
    if !url.starts_with("ws://") {
        return Err(format!("`{url}` is not a ws:// URL"));
    }
    opts.url = url;
    Ok(Some(opts))
}

/// Cookies received so far, in arrival order, newest value per name.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn store(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        // `Max-Age=0` (or negative) deletes, as a browser would.
        let expired = parts.any(|attr| {
            attr.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("max-age") && v.trim().starts_with(['0', '-'])
            })
        });
        self.0.retain(|(n, _)| n != name);
        if !expired && !name.is_empty() {
            self.0.push((name.to_owned(), value.to_owned()));
        }
    }

    fn header(&self) -> Option<String> {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What one connection saw.
struct Row {
    node: String,
    affinity: String,
    session: String,
    latency: Duration,
    set_affinity_cookie: bool,
    /// The affinity cookie came with `Secure`.
    secure_affinity_cookie: bool,
}

/// Whether a browser would drop a `Secure` cookie that `url` sets: over
/// `ws://` it keeps one only from a loopback host (`localhost`,
/// `127.0.0.0/8`, `[::1]`), which browsers treat as a secure context.
fn browser_drops_secure_cookie_from(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host().filter(|_| uri.scheme_str() == Some("ws")) else {
        return false;
    };
    // An IPv6 host comes in brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.to_ascii_lowercase();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

async fn probe_once(opts: &Options, jar: &mut Jar) -> Result<Row, String> {
    let mut req = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad URL: {e}"))?;
    if let Some(cookies) = jar.header() {
        let value = HeaderValue::from_str(&cookies).map_err(|e| format!("cookie header: {e}"))?;
        req.headers_mut().insert(COOKIE, value);
    }
    let started = Instant::now();
    let connected = tokio::time::timeout(opts.timeout, tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| format!("handshake timed out after {:?}", opts.timeout))?;
    let (mut ws, res) = match connected {
        Ok(ok) => ok,
        Err(tungstenite::Error::Http(res)) => {
            let retry = res
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(", Retry-After: {v}"))
                .unwrap_or_default();
            return Err(format!("refused: HTTP {}{retry}", res.status()));
        }
        Err(e) => return Err(format!("handshake failed: {e}")),
    };
    let latency = started.elapsed();
    let (mut set_affinity_cookie, mut secure_affinity_cookie) = (false, false);
    for value in res.headers().get_all(SET_COOKIE) {
        if let Ok(value) = value.to_str() {
            let affinity = value
                .strip_prefix(opts.cookie_name.as_str())
                .is_some_and(|rest| rest.starts_with('='));
            set_affinity_cookie |= affinity;
            secure_affinity_cookie |= affinity
                && value
                    .split(';')
                    .skip(1)
                    .any(|attr| attr.trim().eq_ignore_ascii_case("secure"));
            jar.store(value);
        }
    }

    let deadline = tokio::time::Instant::now() + opts.timeout;
    let text = loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no welcome within {:?}", opts.timeout))?;
        match msg {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed before welcome: {frame:?}"))
            }
            Some(Ok(other)) => return Err(format!("unexpected first frame: {other:?}")),
            Some(Err(e)) => return Err(format!("read failed: {e}")),
            None => return Err("closed before welcome".to_owned()),
        }
    };
    let welcome: Value = serde_json::from_str(text.as_str())
        .map_err(|e| format!("welcome is not JSON ({e}): {text}"))?;
    let field = |name: &str| welcome.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(node), Some(session), Some(mut affinity)) =
        (field("node"), field("session"), field("affinity"))
    else {
        return Err(format!("welcome lacks node, session or affinity: {text}"));
    };
    if let Some(from) = field("from") {
        affinity = format!("{affinity} from {from}");
    }

    // Close politely, but never wait long for the server's answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if ws.send(Message::Close(None)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    Ok(Row {
        node,
        affinity,
        session,
        latency,
        set_affinity_cookie,
        secure_affinity_cookie,
    })
}

fn short(session: &str) -> String {
    match session.char_indices().nth(13) {
        Some((i, _)) => format!("{}…", &session[..i]),
        None => session.to_owned(),
    }
}

async fn run(opts: Options) -> ExitCode {
    println!(
        "probing {} with {} connections (affinity cookie {})",
        opts.url, opts.count, opts.cookie_name
    );
    println!(
        "{:>4}  {:<16} {:<22} {:<15} {:>9}",
        "#", "node", "affinity", "session", "ms"
    );
    let mut jar = Jar::default();
    let mut first: Option<(String, String)> = None;
    let (mut sticky, mut same_session, mut failed) = (0usize, 0usize, 0usize);
    let mut latencies = Vec::new();
    let mut secure_over_ws = false;
    let mut nodes: Vec<(String, usize)> = Vec::new();
    for i in 1..=opts.count {
        if i > 1 && !opts.interval.is_zero() {
            tokio::time::sleep(opts.interval).await;
        }
        match probe_once(&opts, &mut jar).await {
            Ok(row) => {
                let ms = row.latency.as_secs_f64() * 1000.0;
                latencies.push(ms);
                secure_over_ws |= row.secure_affinity_cookie;
                println!(
                    "{i:>4}  {:<16} {:<22} {:<15} {ms:>9.2}{}",
                    row.node,
                    row.affinity,
                    short(&row.session),
                    if row.set_affinity_cookie {
                        ""
                    } else {
                        "  (no affinity cookie set)"
                    }
                );
                match nodes.iter_mut().find(|(n, _)| *n == row.node) {
                    Some((_, seen)) => *seen += 1,
                    None => nodes.push((row.node.clone(), 1)),
                }
                match &first {
                    None => first = Some((row.node, row.session)),
                    Some((node, session)) => {
                        let same = *session == row.session;
                        same_session += usize::from(same);
                        sticky += usize::from(same && *node == row.node);
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("{i:>4}  error: {e}");
                if first.is_none() {
                    eprintln!("probe: connection 1 failed, nothing to compare with: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let Some((node, session)) = first else {
        return ExitCode::FAILURE;
    };
    let reconnects = opts.count - 1;
    let pct = |n: usize| n as f64 * 100.0 / reconnects as f64;
    let stickiness = pct(sticky);
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    let spread: Vec<String> = nodes.iter().map(|(n, c)| format!("{n} ×{c}")).collect();
    println!();
    println!(
        "stickiness: {stickiness:.1}% ({sticky} of {reconnects} reconnections on node {node} with session {})",
        short(&session)
    );
    println!(
        "same session: {:.1}% ({same_session} of {reconnects}); failed: {failed}",
        pct(same_session)
    );
    println!("nodes: {}", spread.join(", "));
    println!(
        "handshake ms: min {:.2}, median {median:.2}, max {:.2}",
        latencies[0],
        latencies[latencies.len() - 1]
    );
    if jar.get(&opts.cookie_name).is_none() {
        println!("warning: no {} cookie was ever set", opts.cookie_name);
    }
    if secure_over_ws && browser_drops_secure_cookie_from(&opts.url) {
        println!(
            "warning: {} is Secure, and browsers keep a Secure cookie from ws:// only on a \
             loopback host: this probe sent it back, browsers would not stick here \
             (serve the page and socket over https:// and wss://, or drop Secure)",
            opts.cookie_name
        );
    }
    // Compare in whole counts so that 100 means every single reconnection.
    if (sticky as f64) * 100.0 < opts.min_sticky * reconnects as f64 {
        println!(
            "FAIL: stickiness {stickiness:.1}% is below --min-sticky {}",
            opts.min_sticky
        );
        ExitCode::FAILURE
    } else {
        println!(
            "OK: stickiness {stickiness:.1}% meets --min-sticky {}",
            opts.min_sticky
        );
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("probe: {e}\nrun `probe --help` for the options");
            return ExitCode::from(2);
        }
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(opts)),
        Err(e) => {
            eprintln!("probe: cannot start the tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::browser_drops_secure_cookie_from as drops;

    #[test]
    fn browsers_keep_secure_cookies_over_ws_only_from_loopback_hosts() {
        for kept in [
            "ws://127.0.0.1:3000/ws",
            "ws://127.8.9.10/ws",
            "ws://[::1]:3000/ws",
            "ws://localhost:3000/ws",
            "ws://LocalHost/ws",
            "ws://app.localhost/ws",
            "ws://user@127.0.0.1:3000/ws?x=1",
        ] {
            assert!(!drops(kept), "{kept}");
        }
        for dropped in [
            "ws://lb.example.com/ws",
            "ws://10.0.0.5:8080/ws",
            "ws://[2001:db8::1]:80/ws",
            "ws://localhost.example.com/ws",
            "ws://127.0.0.1.example.com/ws",
        ] {
            assert!(drops(dropped), "{dropped}");
        }
    }
}
