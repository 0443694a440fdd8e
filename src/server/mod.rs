//! The listener and its lifecycle: accept connections, serve HTTP/1.1 and h2c on each, and
//! shut down gracefully.
//!
//! On the stop signal, readiness fails at once while the listener keeps serving through the
//! drain delay, so that load balancers stop sending new requests first. Then the listener
//! closes, idle keep-alive connections close at once, in-flight requests get up to the
//! shutdown timeout to finish, and the database closes.

mod connection;
mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::admin;
use crate::config::{Config, LoadShedMode};
use crate::http::{self, AppContext, AppState, MiddlewareConfig};
use crate::metrics::{Metrics, ShedLabels};
use crate::middleware::client_ip::TrustedProxies;
use crate::middleware::load_shed::InFlightLimit;
use crate::middleware::rate_limit::RateLimit;
use crate::shutdown::Readiness;
use crate::store::Store;
use connection::{ConnectionActivity, DeadlineStream};

/// Pause after a failed accept (out of file descriptors, for one), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Time the metrics and profiling listeners get to finish their requests at the end.
const SIDE_LISTENER_GRACE: Duration = Duration::from_secs(1);

/// A server that is bound and connected to its database, ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    side_listeners: Vec<SideListener>,
    max_connections: usize,
    store: Store,
    readiness: Readiness,
    timeouts: Timeouts,
}

/// A listener beside the public one, served with plain axum until the server has stopped.
struct SideListener {
    name: &'static str,
    listener: TcpListener,
    router: Router,
}

#[derive(Clone, Copy)]
struct Timeouts {
    read: Duration,
    idle: Duration,
    shutdown: Duration,
    drain_delay: Duration,
}

impl Application {
    /// Opens the database, applies migrations unless DB_MIGRATE is false, and binds the
    /// listener. Nothing is served until [`Application::run_until`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_routes(config, Router::new()).await
    }

    /// Like [`Application::build`], with `routes` served beside the API under the same
    /// middleware; tests use it to add routes that stall or panic.
    pub async fn build_with_routes(
        config: Config,
        routes: Router<AppState>,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let database = config.database()?;
        let store =
            Store::connect(&database, &config.pool_settings(), metrics.store.clone()).await?;
        if config.db_migrate {
            let applied = store
                .migrate()
                .await
                .context("failed to apply migrations")?;
            tracing::info!(applied, "database schema up to date");
        } else {
            let pending = store.pending_migrations().await?;
            if pending > 0 {
                anyhow::bail!(
                    "the database lacks {pending} migration(s) and DB_MIGRATE is false; \
                     run `peregrine migrate` first, or start with DB_MIGRATE=true"
                );
            }
        }

        let listener = bind(config.server_addr(), "SERVER_HOST, SERVER_PORT").await?;
        let side_listeners = vec![
            SideListener {
                name: "metrics",
                listener: bind(config.metrics_addr, "METRICS_ADDR").await?,
                router: admin::metrics_router(Arc::clone(&metrics), store.clone()),
            },
            SideListener {
                name: "admin",
                listener: bind(config.admin_addr, "ADMIN_ADDR").await?,
                router: admin::admin_router(),
            },
        ];
        let local_addr = listener
            .local_addr()
            .context("failed to read the listener's address")?;

        http::problem::render_fixed_problems();
        let auth = crate::auth::Authenticator::start(&config.auth_settings()?).await?;
        let readiness = Readiness::default();
        let state = AppState::new(AppContext {
            store: store.clone(),
            readiness: readiness.clone(),
            body_limit: config.body_limit,
            auth,
        });
        let shed = metrics
            .http
            .shed
            .get_or_create(&ShedLabels {
                reason: "in_flight_limit",
            })
            .clone();
        let max_in_flight = config.max_in_flight as usize;
        let limit_gauge = metrics.http.in_flight_limit.clone();
        let rate_limit = config.rate_limit.map(|per_second| {
            let burst = config.rate_limit_burst.unwrap_or(per_second);
            let limited = metrics
                .http
                .shed
                .get_or_create(&ShedLabels {
                    reason: "rate_limit",
                })
                .clone();
            RateLimit::start(per_second, burst, limited)
        });
        let middleware = MiddlewareConfig {
            write_timeout: config.server_write_timeout,
            metrics: metrics.http.clone(),
            in_flight: match config.load_shed {
                LoadShedMode::Static => InFlightLimit::fixed(max_in_flight, shed, limit_gauge),
                LoadShedMode::Adaptive => InFlightLimit::adaptive(max_in_flight, shed, limit_gauge),
            },
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.0.clone()),
            rate_limit,
        };
        let open_file_limit = match limits::raise_open_file_limit() {
            Ok(limit) => limit,
            Err(err) => {
                tracing::warn!(error = %err, "failed to raise the open-file limit");
                1024
            }
        };
        let max_connections = config.max_connections.map_or_else(
            || limits::default_max_connections(open_file_limit),
            |max| max as usize,
        );
        let application = Application {
            listener,
            max_connections,
            local_addr,
            router: http::router(state, middleware, routes),
            side_listeners,
            store,
            readiness,
            timeouts: Timeouts {
                read: config.server_read_timeout,
                idle: config.server_idle_timeout,
                shutdown: config.shutdown_timeout,
                drain_delay: config.shutdown_drain_delay,
            },
        };
        tracing::info!(
            address = %local_addr,
            metrics_address = %application.metrics_addr(),
            admin_address = %application.admin_addr(),
            max_connections,
            open_file_limit,
            version = env!("CARGO_PKG_VERSION"),
            backend = application.store.backend_name(),
            "listening"
        );
        Ok(application)
    }

    /// Returns the metrics listener's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.side_addr("metrics")
    }

    /// Returns the profiling listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.side_addr("admin")
    }

    fn side_addr(&self, name: &str) -> SocketAddr {
        self.side_listeners
            .iter()
            .find(|side| side.name == name)
            .and_then(|side| side.listener.local_addr().ok())
            .expect("the side listeners are bound in build")
    }

    /// Returns the address the listener is bound to, with the real port when SERVER_PORT was 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then drains and stops as the module describes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The deadlines live in DeadlineStream; hyper's header timeout would also cut idle
        // keep-alive connections.
        builder.http1().header_read_timeout(None).keep_alive(true);
        let connections = Connections {
            slots: Arc::new(Semaphore::new(self.max_connections)),
            builder,
            graceful: GracefulShutdown::new(),
            router: self.router,
            timeouts: self.timeouts,
        };

        let (stop_side, side_stopped) = tokio::sync::watch::channel(());
        let side_servers: Vec<_> = self
            .side_listeners
            .into_iter()
            .map(|side| {
                let mut stopped = side_stopped.clone();
                let server =
                    axum::serve(side.listener, side.router).with_graceful_shutdown(async move {
                        let _sender_dropped_or_sent = stopped.changed().await;
                    });
                tokio::spawn(async move {
                    if let Err(err) = server.await {
                        tracing::error!(listener = side.name, error = %err, "listener failed");
                    }
                })
            })
            .collect();

        tokio::pin!(shutdown);
        accept_until(&self.listener, &connections, shutdown).await;

        self.readiness.start_draining();
        tracing::info!(drain_delay = ?self.timeouts.drain_delay, "draining: /readyz now fails");
        accept_until(
            &self.listener,
            &connections,
            tokio::time::sleep(self.timeouts.drain_delay),
        )
        .await;
        drop(self.listener);

        let open = connections.graceful.count();
        tracing::info!(
            open_connections = open,
            "stopped accepting; finishing in-flight requests"
        );
        // Everything from here on shares one deadline, so SHUTDOWN_TIMEOUT bounds the whole stop.
        let deadline = tokio::time::Instant::now() + self.timeouts.shutdown;
        if tokio::time::timeout_at(deadline, connections.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                shutdown_timeout = ?self.timeouts.shutdown,
                "shutdown timeout elapsed with requests still running; closing them"
            );
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.store.close(remaining).await;

        // Metrics stay up until here, so a scrape during the drain still works. A CPU profile
        // in progress is cut short.
        drop(stop_side);
        let grace = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(SIDE_LISTENER_GRACE);
        for mut server in side_servers {
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                server.abort();
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The shared parts every accepted connection is served with.
struct Connections {
    /// One permit per connection that may be open at once (MAX_CONNECTIONS).
    slots: Arc<Semaphore>,
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    router: Router,
    timeouts: Timeouts,
}

async fn bind(address: SocketAddr, settings: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on {address} ({settings})"))
}

/// Accepts and serves connections until `stop` completes.
///
/// At MAX_CONNECTIONS open connections it stops accepting until one closes, so new clients wait
/// in the kernel's backlog instead of exhausting descriptors. A failed accept (out of file
/// descriptors, for one) pauses the loop, so it does not spin, and is logged at most once a
/// second with the count of failures since the last line.
async fn accept_until(
    listener: &TcpListener,
    connections: &Connections,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut failures = AcceptFailures::default();
    loop {
        let slot = tokio::select! {
            () = &mut stop => return,
            slot = Arc::clone(&connections.slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => return,
            },
        };
        tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => connections.serve(stream, peer, slot),
                Err(err) => {
                    failures.record(&err);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Rate-limits the log of failed accepts.
#[derive(Default)]
struct AcceptFailures {
    last_logged: Option<std::time::Instant>,
    suppressed: u64,
}

impl AcceptFailures {
    fn record(&mut self, err: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|last| now - last < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %err, suppressed = self.suppressed, "failed to accept a connection");
        self.last_logged = Some(now);
        self.suppressed = 0;
    }
}

impl Connections {
    /// Serves one connection on its own task, watched for graceful shutdown.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, %peer, "failed to set TCP_NODELAY");
        }
        let activity = Arc::new(ConnectionActivity::default());
        let io = TokioIo::new(DeadlineStream::new(
            stream,
            Arc::clone(&activity),
            self.timeouts.read,
            self.timeouts.idle,
        ));

        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let guard = activity.start_request();
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        });

        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection closed with an error");
            }
            drop(slot);
        });
    }
}
