//! The server behind [`super`]: binding (plain or TLS), the bounded accept loop, each connection's
//! request-answer cycle, the routes and the admin actions. Compiled only with the `http` feature.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::access::{Access, Refusal};
use super::counters::HttpCounters;
use super::request::{self, read_request, Request};
use super::response::{self, Response};
use super::settings::{HttpConfig, HttpRight};
use super::{api, csrf, metrics, tls};
use crate::broker::Broker;
use crate::forget::{ForgetOutcome, ForgetSender};
use crate::live::{LiveView, Snapshot};
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::stats::CommandCounters;
use crate::systemd::Health;

/// Connections open at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Time an answer may take to be written to a slow reader.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The status page (`page.html`: one HTML file with its CSS and script), gzip-compressed once and kept
/// so (`gzip -9n -c src/http/page.html > src/http/page.html.gz`; a unit test checks that it is the
/// page's current text): about a third of the page's size in the binary. Every browser takes gzip; a
/// client that does not is answered 406 with how to ask.
const PAGE_GZIP: &[u8] = include_bytes!("page.html.gz");

/// A probe of JSON statistics (the uplink's).
pub type JsonProbe = Box<dyn Fn() -> Json + Send + Sync>;
/// A probe of the commands' counters per source.
pub type CommandsProbe = Box<dyn Fn() -> BTreeMap<String, CommandCounters> + Send + Sync>;

/// The read-only handles the server shows.
pub struct Views {
    pub live: LiveView,
    pub health: Health,
    /// Weak, so that the broker's shutdown never waits for a page.
    pub broker: Weak<Broker>,
    pub uplink: Option<JsonProbe>,
    pub commands: Option<CommandsProbe>,
    /// Configured sources: name and kind.
    pub sources: Vec<(String, String)>,
    pub version: &'static str,
    pub started: Instant,
    pub counters: HttpCounters,
    /// The SIGHUP path: a reload request (admins only).
    pub reload: Option<mpsc::Sender<()>>,
    /// `[gateway] base_topic`: where an admin's command goes (`{base}/{device}/set`).
    pub base_topic: String,
    /// The pipeline's queue of requests to forget a device (admins only).
    pub forget: Option<ForgetSender>,
}

impl Views {
    pub(super) fn broker_clients(&self) -> i64 {
        self.broker
            .upgrade()
            .map_or(0, |broker| broker.connections() as i64)
    }

    /// The `{base}/gateway/stats` report as of the last snapshot, with the uplink and commands now.
    pub(super) fn stats_report(&self, snapshot: Option<&Snapshot>) -> Json {
        let Some(snapshot) = snapshot else {
            return json!({});
        };
        let broker = self
            .broker
            .upgrade()
            .map(|b| b.counters())
            .unwrap_or_default();
        let mut report = crate::stats::stats_json(
            &snapshot.stats,
            snapshot.devices_online,
            snapshot.devices_known,
            &broker,
            self.uplink.as_ref().map(|probe| probe()),
            snapshot.taken.saturating_duration_since(snapshot.started),
        );
        if let Some(probe) = &self.commands {
            crate::stats::add_command_counters(&mut report, &probe());
        }
        if let Json::Object(fields) = &mut report {
            fields.insert("http".into(), self.counters.json());
        }
        report
    }

    fn metrics(&self) -> String {
        let snapshot = self.live.snapshot();
        let broker = self.broker.upgrade();
        metrics::render(&metrics::MetricsInput {
            version: self.version,
            snapshot: snapshot.as_deref(),
            broker: broker.as_ref().map(|b| b.counters()).unwrap_or_default(),
            broker_clients: broker.as_ref().map_or(0, |b| b.connections() as i64),
            broker_sessions: broker.as_ref().map_or(0, |b| b.sessions() as i64),
            uplink: self.uplink.as_ref().map(|probe| probe()),
            commands: self
                .commands
                .as_ref()
                .map(|probe| probe())
                .unwrap_or_default(),
            inspector_overwritten: self.live.frames_overwritten(),
            http: self.counters.counts(),
        })
    }

    /// The stages the watchdog finds wedged now (empty when all is well): the systemd watchdog's truth.
    pub(super) fn wedged(&self) -> Vec<String> {
        self.health.wedged(tokio::time::Instant::now())
    }

    /// 200 `ok` when every stage the watchdog watches is alive, else 503 naming the wedged ones.
    fn healthz(&self) -> Response {
        let wedged = self.wedged();
        if wedged.is_empty() {
            Response::text(200, "ok")
        } else {
            Response::text(503, &format!("wedged: {}", wedged.join(", ")))
        }
    }
}

struct Shared {
    access: Access,
    views: Views,
    log: RateLimiter,
}

/// The running server.
pub struct HttpServer {
    /// Where it listens (the configured port, or the one the system chose for port 0).
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl HttpServer {
    /// Binds `config.bind` (and reads the TLS files) and starts serving.
    pub async fn start(config: &HttpConfig, access: Access, views: Views) -> anyhow::Result<Self> {
        let acceptor = match config.tls.clone() {
            Some(files) => Some(
                tokio::task::spawn_blocking(move || tls::acceptor(&files))
                    .await
                    .map_err(|e| anyhow::anyhow!("[http] tls: {e}"))??,
            ),
            None => None,
        };
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("[http] bind {}: {e}", config.bind))?;
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            access,
            views,
            log: RateLimiter::new(Duration::from_secs(60)),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared, stop.clone()));
        Ok(HttpServer {
            local_addr,
            task,
            stop,
        })
    }

    /// Stops listening and ends every connection.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<rumqttc::tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        shared.views.counters.connection_refused();
                        if let Some(suppressed) = shared.log.admit("busy") {
                            log::warn!(
                                "http: {MAX_CONNECTIONS} connections open, {peer} closed at once{}",
                                suppressed_suffix(suppressed)
                            );
                        }
                        continue;
                    };
                    connections.spawn(connection(stream, peer, acceptor.clone(), shared.clone(), permit));
                }
                Err(error) => {
                    if let Some(suppressed) = shared.log.admit("accept") {
                        log::warn!("http: accept failed: {error}{}", suppressed_suffix(suppressed));
                    }
                    // Out of descriptors, most likely: let connections end before trying again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    connections.shutdown().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<rumqttc::tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    match acceptor {
        None => serve(Box::new(stream), peer, &shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(request::READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve(Box::new(stream), peer, &shared).await,
                _ => shared.views.counters.request_refused(),
            }
        }
    }
}

/// A plain or TLS connection, behind one type so that the request loop is compiled once.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection for S {}

/// Serves requests on one connection until the client closes it, asks to, or misbehaves.
async fn serve(mut stream: Box<dyn Connection>, peer: SocketAddr, shared: &Shared) {
    let mut buffer = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buffer).await {
            Ok(request) => request,
            Err(error) => {
                if let Some(status) = error.status() {
                    shared.views.counters.request_refused();
                    if let Some(suppressed) = shared.log.admit("request") {
                        log::warn!(
                            "http: request from {peer} refused: {error}{}",
                            suppressed_suffix(suppressed)
                        );
                    }
                    let answer = Response::text(status, &error.to_string());
                    let _ =
                        tokio::time::timeout(WRITE_TIMEOUT, answer.write(&mut stream, true, false))
                            .await;
                }
                return;
            }
        };
        shared.views.counters.request();
        let response = route(shared, peer, &request).await;
        let head_only = request.method == "HEAD";
        let written = tokio::time::timeout(
            WRITE_TIMEOUT,
            response.write(&mut stream, request.close, head_only),
        )
        .await;
        if request.close || !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
}

/// The admin paths (POST).
const ADMIN_PATHS: [&str; 3] = ["/api/reload", "/api/command", "/api/forget"];
/// How long `POST /api/forget` waits for the pipeline's answer.
const FORGET_WAIT: Duration = Duration::from_secs(5);

/// The paths that only read, and what they need.
const READ_PATHS: [&str; 7] = [
    "/",
    "/metrics",
    "/api/gateway",
    "/api/sources",
    "/api/devices",
    "/api/frames",
    "/api/heard",
];

async fn route(shared: &Shared, peer: SocketAddr, request: &Request) -> Response {
    let views = &shared.views;
    let path = request.path.as_str();
    let reading = request.method == "GET" || request.method == "HEAD";
    if path == "/healthz" && reading {
        return views.healthz();
    }
    let needed = match (reading, path) {
        (true, p) if READ_PATHS.contains(&p) => HttpRight::Read,
        (false, p) if request.method == "POST" && ADMIN_PATHS.contains(&p) => HttpRight::Admin,
        (_, p) if READ_PATHS.contains(&p) || ADMIN_PATHS.contains(&p) || p == "/healthz" => {
            return Response::text(405, "method not allowed");
        }
        _ => return Response::text(404, "not found"),
    };
    let user = match authorize(shared, peer, request, needed).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    answer(shared, peer, request, user.as_deref()).await
}

/// Who asks, when they may have `needed` (`None`: anonymous access allows it): an admin request's
/// origin checked against forgery, then the login. `Err`: the answer that refuses it.
async fn authorize(
    shared: &Shared,
    peer: SocketAddr,
    request: &Request,
    needed: HttpRight,
) -> Result<Option<String>, Response> {
    let views = &shared.views;
    if needed == HttpRight::Admin {
        if let Some(why) = csrf::forged(request) {
            views.counters.request_refused();
            if let Some(suppressed) = shared.log.admit("forged") {
                log::warn!(
                    "http: admin request from {peer} refused: {why}{}",
                    suppressed_suffix(suppressed)
                );
            }
            return Err(Response::text(403, why));
        }
    }
    let authorization = request.header("authorization");
    match shared.access.check(peer, authorization, needed).await {
        Ok(user) => Ok(user),
        Err(refusal) => {
            views.counters.login_refused();
            Err(match refusal {
                Refusal::Unauthorized => Response::text(401, "login required").with_header(
                    "WWW-Authenticate",
                    "Basic realm=\"sensorgate\", charset=\"UTF-8\"".into(),
                ),
                Refusal::Forbidden => {
                    Response::text(403, "this user may not do that (see its http right)")
                }
            })
        }
    }
}

/// The answer to an allowed request for one of the known paths, `user` its login.
async fn answer(
    shared: &Shared,
    peer: SocketAddr,
    request: &Request,
    user: Option<&str>,
) -> Response {
    let views = &shared.views;
    match request.path.as_str() {
        "/" if request.accepts_gzip() => Response::new(200, response::HTML, PAGE_GZIP)
            .with_header("Content-Encoding", "gzip".into())
            .with_header("Vary", "Accept-Encoding".into()),
        "/" => Response::text(
            406,
            "the page is sent gzip-compressed: ask with Accept-Encoding: gzip (curl --compressed)",
        ),
        "/metrics" => Response::new(200, response::METRICS, views.metrics()),
        "/api/gateway" => Response::json(200, &api::gateway(views, shared.access.is_admin(user))),
        "/api/sources" => Response::json(200, &api::sources(views)),
        "/api/devices" => Response::json(200, &api::devices(views)),
        "/api/heard" => Response::json(200, &api::heard(views)),
        "/api/frames" => Response::json(
            200,
            &api::frames(
                views,
                request.query_param("after"),
                request.query_param("source"),
                request.query_param("device"),
                request.query_param("limit"),
            ),
        ),
        "/api/reload" => match &views.reload {
            Some(reload) => {
                let _ = reload.try_send(());
                log::info!("http: reload asked for by {peer}");
                Response::json(202, &json!({"reload": "requested"}))
            }
            None => Response::text(404, "no configuration file to reload"),
        },
        "/api/command" => command(views, user.unwrap_or_default(), &request.body),
        "/api/forget" => forget(views, user.unwrap_or_default(), &request.body).await,
        _ => Response::text(404, "not found"),
    }
}

/// The `"device"` of an admin request's JSON body: one topic level, or the answer that refuses it.
fn device_of(body: &[u8], shape: &str) -> Result<(Json, String), Response> {
    let Ok(request) = serde_json::from_slice::<Json>(body) else {
        return Err(Response::text(
            400,
            &format!("the body is not JSON: {shape}"),
        ));
    };
    let device = request["device"].as_str().unwrap_or_default().to_string();
    if device.is_empty() || device.contains(['/', '+', '#', '\0']) {
        return Err(Response::text(
            400,
            "\"device\" must be a device name (one topic level)",
        ));
    }
    Ok((request, device))
}

/// `POST /api/forget` `{"device": NAME}`: the pipeline forgets the device (its retained availability,
/// state, fields and Home Assistant configs cleared, its registry entry removed); 200 with the number of
/// topics cleared, 404 when no tracked device has that name, 503 when the pipeline is busy or gone.
async fn forget(views: &Views, user: &str, body: &[u8]) -> Response {
    let (_, device) = match device_of(body, "{\"device\": ...}") {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
    };
    let Some(queue) = &views.forget else {
        return Response::text(503, "the pipeline takes no requests here");
    };
    match queue.ask(&device, FORGET_WAIT).await {
        Ok(ForgetOutcome::Forgotten { cleared_topics }) => {
            log::info!("http: {user} had device {device:?} forgotten");
            Response::json(
                200,
                &json!({"forgotten": device, "cleared_topics": cleared_topics}),
            )
        }
        Ok(ForgetOutcome::Unknown) => Response::text(404, "no tracked device has that name"),
        Err(error) => Response::text(503, &error.to_string()),
    }
}

/// `POST /api/command` `{"device": NAME, "command": JSON or "text"}`: the command goes to the command
/// router as if the admin had published it on `{base}/{device}/set` (same queues, refusals and result
/// on `{base}/{device}/set/result`); 202 when the router took it.
fn command(views: &Views, user: &str, body: &[u8]) -> Response {
    let (request, device) = match device_of(body, "{\"device\": ..., \"command\": ...}") {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
    };
    let payload = match &request["command"] {
        Json::Null => return Response::text(400, "\"command\" is missing"),
        Json::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let topic = format!("{}/{device}/set", views.base_topic);
    let injected = views.broker.upgrade().is_some_and(|broker| {
        broker.inject_command(crate::broker::ClientPublish {
            topic: topic.clone(),
            payload,
            client_id: format!("http-{user}"),
            user: Some(user.to_string()),
            allowed: true,
            response_topic: None,
            correlation_data: None,
        })
    });
    if injected {
        log::info!("http: {user} sent a command on {topic}");
        Response::json(
            202,
            &json!({"topic": topic, "result_topic": format!("{topic}/result")}),
        )
    } else {
        Response::text(
            503,
            "no source takes commands here, or the command queue is full",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(health: &Health) -> Views {
        Views {
            live: LiveView::new(),
            health: health.clone(),
            broker: Weak::new(),
            uplink: None,
            commands: None,
            sources: Vec::new(),
            version: "0.0.0",
            started: Instant::now(),
            counters: HttpCounters::default(),
            reload: None,
            base_topic: "sensorgate".into(),
            forget: None,
        }
    }

    #[test]
    fn the_compressed_page_is_the_current_page() {
        let unzipped = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/http/page.html.gz"
            ))
            .output()
            .expect("gzip (Debian: gzip)");
        assert!(unzipped.status.success());
        assert!(
            unzipped.stdout == include_bytes!("page.html"),
            "src/http/page.html.gz is not page.html: gzip -9n -c src/http/page.html > src/http/page.html.gz"
        );
    }

    #[test]
    fn healthz_tells_what_the_watchdog_sees() {
        let health = Health::new();
        let views = views(&health);
        let alive = health.register("pipeline", Duration::from_secs(30));
        assert_eq!(views.healthz(), Response::text(200, "ok"));
        // A stage that ended without retiring is what makes the watchdog stop feeding systemd.
        drop(alive);
        let _uplink = health.register("uplink", Duration::from_secs(30));
        assert_eq!(views.healthz(), Response::text(503, "wedged: pipeline"));
        assert_eq!(api::gateway(&views, false)["wedged"], json!(["pipeline"]));
    }
}
