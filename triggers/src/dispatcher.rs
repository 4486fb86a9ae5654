//! The dispatcher: at-least-once delivery of every accepted event to every matching trigger.
//!
//! Three kinds of task run under one cancellation token:
//! - the planner reloads triggers and brokers from the store and compiles their [`Plan`]s;
//! - the claimer holds leases on trigger cursors and runs one [`crate::cursor`] worker per cursor it
//!   holds (first attempts, straight from the log);
//! - the [`crate::retry`] worker leases delivery rows that are due (retries, ordered lanes waiting,
//!   dead-letter sink sends).
//!
//! Several dispatcher processes can share one PostgreSQL store: cursors and rows are leased, so each
//! is worked on by one process at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kinetic_api::Kind;
use kinetic_api::eventing::BrokerClass;
use kinetic_api::reconcile::{self, Changes};
use kinetic_log::Committer;
use kinetic_log::kafka::KafkaLog;
use kinetic_store::{Store, TriggerRef};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::disable::DisabledTable;
use crate::log_cache::LogCache;
use crate::metrics::{BacklogLabels, Metrics};
use crate::plan::{Plan, PlanTable, Plans, ProblemTable, build_plans};
use crate::policy::Defaults;
use kinetic_outbound::destination::Resolver;
use kinetic_outbound::egress::Egress;
use kinetic_outbound::sender::Sender;

/// Settings of a dispatcher process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identifies this process in leases; unique per process.
    pub owner: String,
    pub resolver: Resolver,
    pub defaults: Defaults,
    /// Events read from the log per batch.
    pub batch_size: usize,
    /// Deliveries in flight per trigger.
    pub concurrency: usize,
    /// Deliveries in flight per outside subscriber origin.
    pub subscriber_concurrency: kinetic_outbound::limit::Policy,
    /// How long a cursor lease lasts without renewal.
    pub cursor_lease: Duration,
    /// How often cursors are claimed and renewed (well below `cursor_lease`).
    pub claim_interval: Duration,
    /// How often resources are reloaded.
    pub plan_interval: Duration,
    /// How often the log is read when no append signal arrives (the in-process ingress and the
    /// store's `watch_appends` normally wake the workers at once).
    pub poll_interval: Duration,
    pub dedupe_window: Duration,
    /// Which internal address classes deliveries to outside URLs may reach (none by default).
    pub egress: Egress,
    /// Signs the tokens of deliveries to destinations with an audience (Broker refs, Knative's
    /// `Destination.audience`); without it they go without one.
    pub tokens: Option<kinetic_outbound::sender::TokenSigner>,
    /// Largest reply read back from a subscriber (the ingress's `--max-body-bytes`: a reply is
    /// held to what a sender may post).
    pub max_reply_bytes: usize,
}

impl Config {
    pub fn new(owner: String, resolver: Resolver) -> Self {
        Self {
            owner,
            resolver,
            defaults: Defaults::default(),
            batch_size: 500,
            concurrency: 100,
            subscriber_concurrency: kinetic_outbound::limit::Policy::Adaptive {
                max: kinetic_outbound::limit::DEFAULT_MAX,
            },
            cursor_lease: Duration::from_secs(10),
            claim_interval: Duration::from_secs(2),
            plan_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            dedupe_window: Duration::from_secs(24 * 3600),
            egress: Egress::default(),
            tokens: None,
            max_reply_bytes: kinetic_outbound::sender::MAX_REPLY_BYTES,
        }
    }

    pub fn dedupe_window_ms(&self) -> i64 {
        i64::try_from(self.dedupe_window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The concurrency limit of each trigger's subscriber, for the API.
#[derive(Clone)]
pub struct SubscriberLimits {
    plans: PlanTable,
    limits: Arc<kinetic_outbound::limit::Limits>,
}

impl SubscriberLimits {
    /// The limit of the subscriber of the trigger with `uid` and the deliveries in flight to it;
    /// `None` until something was sent to it, and for kinetic's own destinations (Services,
    /// brokers), which have their own admission.
    pub fn of(&self, uid: &str) -> Option<(usize, usize)> {
        let plan = self.plans.get(uid)?;
        self.limits.current(plan.subscriber.origin()?)
    }
}

/// What every dispatcher task shares.
pub struct Context {
    pub store: Arc<dyn Store>,
    pub sender: Sender,
    pub metrics: Metrics,
    pub plans: PlanTable,
    pub config: Config,
    /// Counts commits to the log; watched to read new events at once.
    pub committed: watch::Sender<u64>,
    /// Wakes the retry worker when rows were added.
    pub rows_added: Notify,
    /// The brokers' logs as this process's cursor workers read them.
    pub log: Arc<LogCache>,
    /// The Kafka class's log, when a Kafka cluster is configured: its triggers consume the
    /// brokers' topics, and replies are produced to them.
    pub kafka: Option<Arc<KafkaLog>>,
    /// The group commit replies to store-backed brokers go through, so the replies of many
    /// concurrent deliveries share one transaction (without it, each is its own append).
    pub replies: Option<Committer>,
    /// Triggers whose subscriber answered `410 Gone`.
    pub disabled: DisabledTable,
    /// Why triggers are not ready, for the API.
    pub problems: ProblemTable,
    /// The triggers and brokers, as every component of this process reads them.
    pub resources: kinetic_resources::Watch,
}

impl Context {
    /// Whether the plan's trigger is disabled: nothing is sent to its subscriber.
    pub fn is_disabled(&self, plan: &Plan) -> bool {
        self.disabled
            .is_disabled(&plan.trigger.uid, plan.generation)
    }
}

pub struct Dispatcher {
    context: Arc<Context>,
}

impl Dispatcher {
    /// `committed` is the ingress's commit counter when it runs in the same process; otherwise pass a
    /// fresh channel and the log is polled every `poll_interval`. Without `kafka`, triggers of
    /// Kafka-class brokers wait (and say why).
    pub fn new(
        store: Arc<dyn Store>,
        resources: kinetic_resources::Watch,
        config: Config,
        metrics: Metrics,
        committed: watch::Sender<u64>,
        kafka: Option<Arc<KafkaLog>>,
        replies: Option<Committer>,
    ) -> Self {
        let log = Arc::new(LogCache::new(
            store.clone(),
            metrics.corrupt_events.clone(),
            committed.subscribe(),
        ));
        metrics.limits.set_policy(config.subscriber_concurrency);
        let mut sender = Sender::new(
            config.resolver.gateway.as_ref(),
            Some(&config.resolver.ingress_url),
            config.egress.clone(),
        )
        .with_max_reply_bytes(config.max_reply_bytes)
        .with_limits(metrics.limits.clone());
        if let Some(tokens) = &config.tokens {
            sender = sender.with_tokens(tokens.clone());
        }
        Self {
            context: Arc::new(Context {
                store,
                sender,
                metrics,
                plans: PlanTable::default(),
                config,
                committed,
                rows_added: Notify::new(),
                log,
                kafka,
                replies,
                disabled: DisabledTable::default(),
                problems: ProblemTable::default(),
                resources,
            }),
        }
    }

    pub fn context(&self) -> Arc<Context> {
        self.context.clone()
    }

    /// Where an in-process group commit hands what it stored (see [`crate::log_cache`]).
    pub fn log_feed(&self) -> Arc<dyn kinetic_log::Feed> {
        self.context.log.clone()
    }

    /// Why triggers are not ready, as this dispatcher finds them; for the API.
    pub fn problems(&self) -> ProblemTable {
        self.context.problems.clone()
    }

    /// Each trigger's subscriber concurrency, as this process delivers.
    pub fn subscriber_limits(&self) -> SubscriberLimits {
        SubscriberLimits {
            plans: self.context.plans.clone(),
            limits: self.context.metrics.limits.clone(),
        }
    }

    /// Runs until `cancel` fires, then lets in-flight batches and attempts finish (each bounded by its
    /// trigger's timeout) and returns.
    pub async fn run(self, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        let context = self.context;
        // Plans first, so the first claim sees the triggers.
        let mut resources = context.resources.clone();
        let first = tokio::select! {
            () = cancel.cancelled() => None,
            first = resources.loaded() => first,
        };
        refresh_plans(&context, first, &mut HashMap::new()).await;
        tracker.spawn(plan_loop(context.clone(), cancel.clone()));
        tracker.spawn(crate::retry::run(context.clone(), cancel.clone()));
        tracker.spawn(backlog_loop(context.clone(), cancel.clone()));
        tracker.spawn(relay_appends(context.clone(), cancel.clone()));
        tracker.spawn(crate::kafka::run(context.clone(), cancel.clone()));
        claim_loop(context.clone(), cancel.clone(), &tracker).await;
        tracker.close();
        tracker.wait().await;
        leave(&context).await;
    }
}

/// After every cursor worker stopped: ends this process's cursor leases and membership now, so
/// another dispatcher (or this one restarted) takes the cursors at once instead of when the leases
/// run out.
async fn leave(context: &Context) {
    let uids: Vec<String> = context
        .plans
        .all()
        .iter()
        .map(|p| p.trigger.uid.clone())
        .collect();
    let owner = &context.config.owner;
    if let Err(error) = context.store.release_cursors(owner, &uids).await {
        tracing::warn!(%error, "Releasing cursor leases at shutdown failed; they expire on their own.");
    }
    let now = chrono::Utc::now().timestamp_millis();
    if let Err(error) = context.store.heartbeat(owner, now, -1).await {
        tracing::warn!(%error, "Leaving the dispatcher group failed; it expires on its own.");
    }
}

/// How many cursors one of `dispatchers` live dispatchers should hold: an even share, rounded up.
pub fn fair_share(triggers: usize, dispatchers: usize) -> usize {
    triggers.div_ceil(dispatchers.max(1))
}

/// Rebuilds the plans from the latest resource snapshot; keeps the previous plans while there is
/// none yet.
async fn refresh_plans(
    context: &Context,
    resources: Option<Arc<kinetic_resources::Snapshot>>,
    reported: &mut HashMap<String, String>,
) {
    let Some(resources) = resources else {
        return;
    };
    context
        .disabled
        .sync(
            &context.store,
            resources.stored(Kind::Trigger),
            tokio::time::Instant::now(),
        )
        .await;
    let Plans {
        ready,
        problems,
        config_problem,
    } = build_plans(
        &resources,
        &context.config.resolver,
        &context.config.defaults,
        &context.disabled,
    );
    let mut still = HashMap::new();
    // Reported once per change, under a key no trigger has.
    if let Some(problem) = config_problem {
        if reported.get("") != Some(&problem) {
            tracing::error!(%problem, "The broker defaults ConfigMap does not read.");
        }
        still.insert(String::new(), problem);
    }
    for (trigger, problem) in problems {
        if reported.get(&trigger) != Some(&problem) {
            tracing::warn!(%trigger, %problem, "Trigger is not ready; its events wait in the log.");
        }
        still.insert(trigger, problem);
    }
    context.problems.replace(
        still
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    *reported = still;
    context.plans.replace(ready);
}

/// Rebuilds the plans on every new snapshot, and every `plan_interval` (signing secrets and
/// released triggers are read again).
async fn plan_loop(context: Arc<Context>, cancel: CancellationToken) {
    let mut reported = HashMap::new();
    let mut resources = context.resources.clone();
    loop {
        let latest = tokio::select! {
            () = cancel.cancelled() => return,
            latest = resources.next_pass(context.config.plan_interval) => latest,
        };
        refresh_plans(&context, latest, &mut reported).await;
    }
}

/// Claims and renews cursor leases, and runs one cursor worker per cursor held. Each dispatcher
/// keeps at most its fair share of the cursors (see [`fair_share`]): one that holds more (it was
/// alone when others started) stops the surplus workers and, once their batch is committed, releases
/// those cursors for the others to take; its other cursors are renewed meanwhile.
async fn claim_loop(context: Arc<Context>, cancel: CancellationToken, tracker: &TaskTracker) {
    let mut running: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut releasing: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let owner = context.config.owner.clone();
    let lease_ms = i64::try_from(context.config.cursor_lease.as_millis()).unwrap_or(10_000);
    loop {
        running.retain(|_, (_, handle)| !handle.is_finished());
        releasing.retain(|_, handle| !handle.is_finished());
        let plans = context.plans.all();
        // Triggers of Kafka-class brokers read through consumer groups ([`crate::kafka`]); a
        // disabled trigger's cursor stays where it is.
        let refs: Vec<TriggerRef> = plans
            .iter()
            .filter(|p| p.class == BrokerClass::Store && !context.is_disabled(p))
            .map(|p| p.trigger.clone())
            .collect();
        let now = chrono::Utc::now().timestamp_millis();
        let claimed = async {
            let dispatchers = context.store.heartbeat(&owner, now, lease_ms).await?;
            let cursors = context
                .store
                .claim_cursors(&owner, &refs, now, lease_ms)
                .await?;
            Ok::<_, kinetic_store::Error>((dispatchers.len(), cursors))
        }
        .await;
        match claimed {
            Ok((dispatchers, mut cursors)) => {
                // Cursors being handed over are neither counted nor worked on again.
                cursors.retain(|c| !releasing.contains_key(&c.trigger_uid));
                let share = fair_share(refs.len(), dispatchers);
                if cursors.len() > share {
                    // Keep the cursors already being worked on; give up the rest.
                    cursors.sort_by_key(|c| {
                        (!running.contains_key(&c.trigger_uid), c.trigger_uid.clone())
                    });
                    for cursor in cursors.split_off(share) {
                        let uid = cursor.trigger_uid;
                        let worker = running.remove(&uid);
                        let store = context.store.clone();
                        let owner = owner.clone();
                        let handover = tracker.spawn({
                            let uid = uid.clone();
                            async move {
                                if let Some((token, handle)) = worker {
                                    // The worker commits its batch before the lease goes, so the next
                                    // holder does not deliver it again.
                                    token.cancel();
                                    let _ = handle.await;
                                }
                                if let Err(error) = store.release_cursors(&owner, &[uid]).await {
                                    tracing::warn!(%error, "Releasing a surplus cursor failed; it expires on its own.");
                                }
                            }
                        });
                        releasing.insert(uid, handover);
                    }
                    tracing::debug!(share, dispatchers, "Handing cursors to other dispatchers.");
                }
                // Workers run for the cursors held whose trigger reads from the store and is not
                // disabled; the others stop (the trigger gone, moved to a Kafka-class broker, or
                // disabled, or the lease lost).
                let wanted: HashMap<String, ()> = cursors
                    .iter()
                    .filter(|c| {
                        context.plans.get(&c.trigger_uid).is_some_and(|p| {
                            p.class == BrokerClass::Store && !context.is_disabled(&p)
                        })
                    })
                    .map(|c| (c.trigger_uid.clone(), ()))
                    .collect();
                let Changes { stop, start } = reconcile::plan(
                    &running.keys().map(|uid| (uid.clone(), ())).collect(),
                    &wanted,
                );
                for uid in stop {
                    if let Some((token, _)) = running.remove(&uid) {
                        token.cancel();
                    }
                }
                for cursor in cursors {
                    if !start.contains(&cursor.trigger_uid) {
                        continue;
                    }
                    let token = cancel.child_token();
                    let handle = tracker.spawn(crate::cursor::run(
                        context.clone(),
                        cursor.trigger_uid.clone(),
                        cursor.position,
                        token.clone(),
                    ));
                    running.insert(cursor.trigger_uid, (token, handle));
                }
            }
            Err(error) => tracing::warn!(%error, "Claiming trigger cursors failed."),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(context.config.claim_interval) => {}
        }
    }
}

/// Turns the store's append signals (other processes' commits, e.g. a separate `kinetic broker`)
/// into the same wake-up the in-process ingress gives, so cursor workers read new events at once
/// instead of at their next poll.
async fn relay_appends(context: Arc<Context>, cancel: CancellationToken) {
    loop {
        let signals = tokio::select! {
            () = cancel.cancelled() => return,
            signals = context.store.watch_appends() => signals,
        };
        match signals {
            Ok(None) => return,
            Ok(Some(mut signals)) => loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    next = signals.next() => match next {
                        Some(()) => context.committed.send_modify(|count| *count = count.wrapping_add(1)),
                        None => break,
                    },
                }
            },
            Err(error) => {
                tracing::warn!(%error, "Listening for appends failed; polling until it works again.");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Publishes the backlog gauges and drops cursors of deleted triggers.
async fn backlog_loop(context: Arc<Context>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let backlog = match context.store.backlog().await {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::warn!(%error, "Reading the backlog failed.");
                continue;
            }
        };
        // Every trigger that exists, readable or not: only a deleted one's cursor goes.
        let Some(resources) = context.resources.latest() else {
            continue;
        };
        let live: HashSet<&str> = resources
            .stored(Kind::Trigger)
            .iter()
            .map(|t| t.uid.as_str())
            .collect();
        for entry in backlog {
            if !live.contains(entry.trigger_uid.as_str()) {
                if let Err(error) = context.store.drop_trigger(&entry.trigger_uid).await {
                    tracing::warn!(%error, "Dropping a deleted trigger's cursor failed.");
                }
                continue;
            }
            let Some(plan) = context.plans.get(&entry.trigger_uid) else {
                continue;
            };
            let waited = entry.oldest.map_or(0.0, |since| {
                (chrono::Utc::now().timestamp_millis() - since).max(0) as f64 / 1000.0
            });
            context
                .metrics
                .oldest_undelivered
                .get_or_create(&crate::metrics::TriggerLabels {
                    trigger: plan.label.clone(),
                })
                .set(waited);
            for (state, value) in [("unread", entry.unread), ("pending", entry.pending)] {
                context
                    .metrics
                    .backlog
                    .get_or_create(&BacklogLabels {
                        trigger: plan.label.clone(),
                        state,
                    })
                    .set(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn shares_cover_every_trigger_and_differ_by_at_most_one() {
        for triggers in 0..40 {
            for dispatchers in 1..8 {
                let share = fair_share(triggers, dispatchers);
                assert!(share * dispatchers >= triggers, "{triggers}/{dispatchers}");
                assert!(
                    share * dispatchers < triggers + dispatchers,
                    "{triggers}/{dispatchers}"
                );
            }
        }
        assert_eq!(fair_share(6, 0), 6);
    }
}
