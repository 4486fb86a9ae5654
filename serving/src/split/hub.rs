//! The autoscaler's side of the split data path: the table it publishes, and what it learns from
//! activators (reports, pokes) and queue-proxies (scraped stats).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use futures::future::join_all;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Endpoint, LONG_POLL, Poke, QueueProxyStats, Report, RevisionEntry, RevisionReport, Table,
};
use crate::activator::RevisionSettings;
use crate::datapath::DataPath;
use crate::queue_proxy::stats::Sample;
use crate::route::Route;
use crate::runtime::Instance;

/// A reporter's numbers count this long after they arrived; an activator that stopped reporting
/// (it died, or lost its way to the autoscaler) stops counting after it.
const FRESH: Duration = Duration::from_secs(3);

/// How often every instance's queue-proxy is scraped.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

type Key = (String, String);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Publishes the table and collects the numbers of the revisions served from this process.
pub struct Hub {
    table: watch::Sender<Arc<Table>>,
    state: Mutex<HubState>,
    scrape: super::Wire,
}

#[derive(Default)]
struct HubState {
    routes: Vec<Route>,
    revisions: HashMap<Key, Arc<RemoteRevision>>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            table: watch::Sender::new(Arc::new(Table::default())),
            state: Mutex::new(HubState::default()),
            // Every scrape names its instance's full URL; the base is never used.
            scrape: super::Wire::new("http://127.0.0.1:1").expect("a valid base"),
        })
    }

    /// The published table, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.table.subscribe()
    }

    /// The table now.
    pub fn table(&self) -> Arc<Table> {
        self.table.borrow().clone()
    }

    /// The data path of a revision served from now on (replacing one of the same name).
    pub fn open(self: &Arc<Self>, settings: RevisionSettings, uid: &str) -> Arc<RemoteRevision> {
        let revision = Arc::new(RemoteRevision {
            hub: Arc::downgrade(self),
            settings,
            uid: uid.to_owned(),
            state: Mutex::new(RevisionState::default()),
            wake: Notify::new(),
        });
        let key = revision.key();
        lock(&self.state).revisions.insert(key, revision.clone());
        self.publish();
        revision
    }

    /// Replaces the Services' routes.
    pub fn set_routes(&self, mut routes: Vec<Route>) {
        routes.sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
        let mut state = lock(&self.state);
        if state.routes == routes {
            return;
        }
        state.routes = routes;
        drop(state);
        self.publish();
    }

    fn revision(&self, namespace: &str, revision: &str) -> Option<Arc<RemoteRevision>> {
        lock(&self.state)
            .revisions
            .get(&(namespace.to_owned(), revision.to_owned()))
            .cloned()
    }

    /// Takes one reporter's numbers for its last period.
    pub fn report(&self, report: Report) {
        let now = Instant::now();
        for numbers in report.revisions {
            if let Some(revision) = self.revision(&numbers.namespace, &numbers.revision) {
                lock(&revision.state)
                    .reports
                    .insert(report.reporter.clone(), Reported::new(now, numbers));
            }
        }
    }

    /// A request found the revision with no instance: its scaling loop decides at once.
    pub fn poke(&self, poke: &Poke) {
        if let Some(revision) = self.revision(&poke.namespace, &poke.revision) {
            lock(&revision.state).poked = Some((Instant::now(), poke.in_flight));
            revision.wake.notify_one();
        }
    }

    /// Scrapes every ready instance's queue-proxy each [`SCRAPE_INTERVAL`] until `cancel`.
    pub async fn scrape(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let targets: Vec<(Arc<RemoteRevision>, u64, std::net::SocketAddr)> = {
                let state = lock(&self.state);
                state
                    .revisions
                    .values()
                    .flat_map(|revision| {
                        let instances = lock(&revision.state).instances.clone();
                        instances
                            .into_iter()
                            .filter_map(|i| i.admin().map(|admin| (i.id, admin)))
                            .map(|(id, admin)| (revision.clone(), id, admin))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            let scrapes = targets.into_iter().map(|(revision, id, admin)| {
                let wire = self.scrape.clone();
                async move {
                    let url = format!("http://{admin}/stats");
                    let answer = wire
                        .absolute::<QueueProxyStats>(&url, SCRAPE_TIMEOUT)
                        .await;
                    match answer {
                        Ok(stats) => {
                            let mut state = lock(&revision.state);
                            // Only instances still ready count.
                            if state.instances.iter().any(|i| i.id == id) {
                                state.scraped.insert(id, Scraped::new(Instant::now(), stats));
                            }
                        }
                        Err(error) => {
                            tracing::debug!(revision = %revision.settings.revision, instance = id, %error, "Scraping a queue-proxy failed.");
                        }
                    }
                }
            });
            join_all(scrapes).await;
        }
    }

    /// Builds the table from the revisions and routes now, and publishes it if it changed.
    fn publish(&self) {
        let state = lock(&self.state);
        let mut revisions: Vec<RevisionEntry> = state
            .revisions
            .values()
            .map(|revision| revision.entry())
            .collect();
        revisions.sort_by(|a, b| (&a.namespace, &a.revision).cmp(&(&b.namespace, &b.revision)));
        let routes = state.routes.clone();
        drop(state);
        self.table.send_if_modified(|table| {
            if table.routes == routes && table.revisions == revisions {
                return false;
            }
            *table = Arc::new(Table {
                version: table.version + 1,
                routes,
                revisions,
            });
            true
        });
    }

    fn remove(&self, revision: &RemoteRevision) {
        let mut state = lock(&self.state);
        let key = revision.key();
        if state
            .revisions
            .get(&key)
            .is_some_and(|open| std::ptr::eq(Arc::as_ptr(open), revision))
        {
            state.revisions.remove(&key);
        }
        drop(state);
        self.publish();
    }
}

/// One served revision's data path, as seen from the autoscaler.
pub struct RemoteRevision {
    hub: Weak<Hub>,
    settings: RevisionSettings,
    uid: String,
    state: Mutex<RevisionState>,
    wake: Notify,
}

#[derive(Default)]
struct RevisionState {
    instances: Vec<Arc<Instance>>,
    in_path: bool,
    failures: (u64, Option<String>),
    closed: bool,
    /// By reporter.
    reports: HashMap<String, Reported>,
    /// By instance id.
    scraped: HashMap<u64, Scraped>,
    /// When the last poke came and how many requests it counted.
    poked: Option<(Instant, u64)>,
}

/// A reporter's latest numbers; the request count is taken by one sample only.
struct Reported {
    at: Instant,
    numbers: RevisionReport,
    counted: bool,
}

impl Reported {
    fn new(at: Instant, numbers: RevisionReport) -> Self {
        Self {
            at,
            numbers,
            counted: false,
        }
    }
}

struct Scraped {
    at: Instant,
    stats: QueueProxyStats,
    counted: bool,
}

impl Scraped {
    fn new(at: Instant, stats: QueueProxyStats) -> Self {
        Self {
            at,
            stats,
            counted: false,
        }
    }
}

impl RemoteRevision {
    fn key(&self) -> Key {
        (
            self.settings.namespace.clone(),
            self.settings.revision.clone(),
        )
    }

    fn entry(&self) -> RevisionEntry {
        let state = lock(&self.state);
        RevisionEntry {
            namespace: self.settings.namespace.clone(),
            revision: self.settings.revision.clone(),
            service: self.settings.service.clone(),
            uid: self.uid.clone(),
            container_concurrency: self.settings.container_concurrency,
            timeout_ms: millis(self.settings.timeout),
            activation_timeout_ms: millis(self.settings.activation_timeout),
            capacity: self.settings.capacity,
            endpoints: state
                .instances
                .iter()
                .map(|i| Endpoint {
                    id: i.id,
                    address: i.address(),
                })
                .collect(),
            in_path: state.in_path,
            failed_starts: state.failures.0,
            permanent_failure: state.failures.1.clone(),
        }
    }

    fn changed(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.publish();
        }
    }

    /// Numbers of reporters heard from within [`FRESH`] of `now`.
    fn fresh_reports(state: &RevisionState, now: Instant) -> impl Iterator<Item = &RevisionReport> {
        state
            .reports
            .values()
            .filter(move |r| now.saturating_duration_since(r.at) <= FRESH)
            .map(|r| &r.numbers)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl DataPath for RemoteRevision {
    /// Concurrency is a level: each reporter's and queue-proxy's latest counts while fresh.
    /// Requests are a count: each report and scrape is counted by one sample only. Requests an
    /// activator forwarded are counted there, not again at the queue-proxy.
    fn sample(&self, now: Instant) -> Sample {
        let mut state = lock(&self.state);
        state
            .reports
            .retain(|_, r| now.saturating_duration_since(r.at) <= FRESH);
        state
            .scraped
            .retain(|_, s| now.saturating_duration_since(s.at) <= FRESH);
        let mut sample = Sample::default();
        for reported in state.reports.values_mut() {
            sample.average_concurrency += reported.numbers.average_concurrency;
            sample.in_flight += reported.numbers.in_flight;
            if !reported.counted {
                sample.requests += reported.numbers.requests;
                reported.counted = true;
            }
        }
        for scraped in state.scraped.values_mut() {
            let stats = scraped.stats;
            sample.average_concurrency +=
                (stats.average_concurrency - stats.average_proxied_concurrency).max(0.0);
            if !scraped.counted {
                sample.requests += stats
                    .request_count
                    .saturating_sub(stats.proxied_request_count);
                scraped.counted = true;
            }
        }
        sample
    }

    fn in_flight(&self) -> u64 {
        let now = Instant::now();
        let state = lock(&self.state);
        let reported: u64 = Self::fresh_reports(&state, now).map(|r| r.in_flight).sum();
        let poked = state
            .poked
            .filter(|(at, _)| now.saturating_duration_since(*at) <= FRESH)
            .map_or(0, |(_, n)| n);
        reported.max(poked)
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }

    fn set_instances(&self, ready: &[Arc<Instance>]) {
        let mut state = lock(&self.state);
        let same = state.instances.len() == ready.len()
            && state.instances.iter().zip(ready).all(|(a, b)| a.id == b.id);
        if same || state.closed {
            return;
        }
        state.instances = ready.to_vec();
        state
            .scraped
            .retain(|id, _| ready.iter().any(|i| i.id == *id));
        drop(state);
        self.changed();
    }

    fn ready(&self) -> usize {
        lock(&self.state).instances.len()
    }

    fn waiting(&self) -> usize {
        let now = Instant::now();
        let state = lock(&self.state);
        let waiting: u64 = Self::fresh_reports(&state, now).map(|r| r.waiting).sum();
        usize::try_from(waiting).unwrap_or(usize::MAX)
    }

    fn set_in_path(&self, in_path: bool) {
        let mut state = lock(&self.state);
        if state.in_path == in_path {
            return;
        }
        state.in_path = in_path;
        drop(state);
        self.changed();
    }

    fn set_failures(&self, failed_starts: u64, permanent: Option<String>) {
        let mut state = lock(&self.state);
        if state.failures == (failed_starts, permanent.clone()) {
            return;
        }
        state.failures = (failed_starts, permanent);
        drop(state);
        self.changed();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self);
        }
    }

    fn cold_starts(&self) -> u64 {
        // Kept while the reporter is fresh: a count since each reporter started.
        let now = Instant::now();
        let state = lock(&self.state);
        Self::fresh_reports(&state, now)
            .map(|r| r.cold_starts)
            .sum()
    }
}

impl super::Wire {
    /// GETs the JSON at an absolute `url`.
    pub(crate) async fn absolute<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<T, super::WireError> {
        let wire = super::Wire {
            client: self.client.clone(),
            base: String::new(),
        };
        wire.call(http::Method::GET, url, None, timeout)
            .await?
            .ok_or_else(|| super::WireError::Body {
                uri: url.to_owned(),
                source: "an empty body".into(),
            })
    }
}

#[derive(serde::Deserialize)]
struct After {
    /// The version the asker has; without it, the table now.
    after: Option<u64>,
}

/// The hub's HTTP API (see the module documentation of `split`).
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/v1/table", get(table))
        .route("/v1/stats", post(stats))
        .route("/v1/poke", post(poke))
        .with_state(hub)
}

async fn table(State(hub): State<Arc<Hub>>, Query(after): Query<After>) -> axum::Json<Arc<Table>> {
    let Some(after) = after.after else {
        return axum::Json(hub.table());
    };
    let mut changes = hub.subscribe();
    let newer = |table: &Arc<Table>| table.version > after;
    // A follower that has the table now waits for the next one, up to the long poll.
    let waited = tokio::time::timeout(LONG_POLL, async {
        changes
            .wait_for(newer)
            .await
            .map(|table| table.clone())
            .ok()
    })
    .await;
    match waited {
        Ok(Some(table)) => axum::Json(table),
        _ => axum::Json(hub.table()),
    }
}

async fn stats(State(hub): State<Arc<Hub>>, axum::Json(report): axum::Json<Report>) -> StatusCode {
    hub.report(report);
    StatusCode::NO_CONTENT
}

async fn poke(State(hub): State<Arc<Hub>>, axum::Json(poke): axum::Json<Poke>) -> StatusCode {
    hub.poke(&poke);
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(revision: &str) -> RevisionSettings {
        RevisionSettings {
            namespace: "default".into(),
            revision: revision.into(),
            service: "hello".into(),
            container_concurrency: 1,
            timeout: Duration::from_secs(300),
            activation_timeout: Duration::from_secs(60),
            capacity: 100,
            mark_proxied: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn instances_routes_and_failures_are_published_once_per_change() {
        let hub = Hub::new();
        let table = hub.subscribe();
        let revision = hub.open(settings("fn-00001"), "uid-1");
        assert_eq!(hub.table().version, 1);
        let instance = Arc::new(Instance::with_admin(
            4,
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:9001".parse().unwrap(),
        ));
        revision.set_instances(std::slice::from_ref(&instance));
        revision.set_instances(&[instance]);
        revision.set_in_path(true);
        revision.set_in_path(true);
        revision.set_failures(2, Some("image missing".into()));
        hub.set_routes(vec![Route {
            namespace: "default".into(),
            service: "fn".into(),
            split: vec![("fn-00001".into(), 100)],
            tags: HashMap::new(),
        }]);
        let now = table.borrow().clone();
        assert_eq!(now.version, 5, "one version per change: {now:?}");
        let entry = &now.revisions[0];
        assert_eq!(entry.endpoints[0].id, 4);
        assert!(entry.in_path);
        assert_eq!(entry.permanent_failure.as_deref(), Some("image missing"));
        assert_eq!(now.routes.len(), 1);
        // A revision stopped leaves the table; a stale handle of a replaced one does not remove
        // its successor.
        let again = hub.open(settings("fn-00001"), "uid-2");
        revision.close();
        assert_eq!(hub.table().revisions[0].uid, "uid-2");
        again.close();
        assert!(hub.table().revisions.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn forwarded_requests_are_counted_once_and_counts_once_per_report() {
        let hub = Hub::new();
        let revision = hub.open(settings("fn-00001"), "u");
        let instance = Arc::new(Instance::with_admin(
            1,
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:9001".parse().unwrap(),
        ));
        revision.set_instances(&[instance]);
        hub.report(Report {
            reporter: "activator-a".into(),
            revisions: vec![RevisionReport {
                namespace: "default".into(),
                revision: "fn-00001".into(),
                average_concurrency: 2.0,
                requests: 10,
                in_flight: 2,
                waiting: 1,
                cold_starts: 3,
            }],
        });
        lock(&revision.state).scraped.insert(
            1,
            Scraped::new(
                Instant::now(),
                QueueProxyStats {
                    average_concurrency: 5.0,
                    request_count: 30,
                    in_flight: 5,
                    average_proxied_concurrency: 2.0,
                    proxied_request_count: 10,
                },
            ),
        );
        let first = revision.sample(Instant::now());
        // 2 at the activator + (5 − 2 it forwarded) at the queue-proxy.
        assert!((first.average_concurrency - 5.0).abs() < 1e-9, "{first:?}");
        assert_eq!(first.requests, 10 + 20);
        assert_eq!(revision.waiting(), 1);
        assert_eq!(revision.cold_starts(), 3);
        // The same reports again: the level holds, the counts are not counted twice.
        let second = revision.sample(Instant::now());
        assert!((second.average_concurrency - 5.0).abs() < 1e-9);
        assert_eq!(second.requests, 0);
        // A reporter that went quiet stops counting.
        tokio::time::advance(FRESH + Duration::from_millis(1)).await;
        let stale = revision.sample(Instant::now());
        assert_eq!(stale, Sample::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_poke_wakes_the_revision_and_counts_its_requests() {
        let hub = Hub::new();
        let revision = hub.open(settings("fn-00001"), "u");
        hub.poke(&Poke {
            namespace: "default".into(),
            revision: "fn-00001".into(),
            in_flight: 7,
        });
        tokio::time::timeout(Duration::from_millis(1), revision.wake().notified())
            .await
            .expect("woken at once");
        assert_eq!(revision.in_flight(), 7);
        // Pokes and reports for revisions not served here are ignored.
        hub.poke(&Poke {
            namespace: "default".into(),
            revision: "other".into(),
            in_flight: 1,
        });
    }
}
