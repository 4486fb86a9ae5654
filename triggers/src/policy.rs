//! Delivery policy: the effective `DeliverySpec` of a trigger (trigger over broker over process
//! defaults, field by field), and when a retry is due given its backoff schedule and the answer's
//! `Retry-After`. Which answers are retried, the schedules themselves and `Retry-After` parsing
//! are `kinetic_outbound::retry`, shared with the sources. All pure: no clock, no I/O.

use std::time::Duration;

use kinetic_outbound::retry::{Backoff, WEBHOOK_SCHEDULE};

use kinetic_api::DeliverySpec;
use kinetic_api::duration;
use kinetic_api::eventing::{BackoffPolicy, DeliveryFormat, StandardWebhooksSigning};

/// Process-wide defaults, used for every field neither the trigger nor its broker sets (like
/// Knative's `config-br-defaults`).
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub retry: u32,
    pub backoff_policy: BackoffPolicy,
    pub backoff_delay: Duration,
    pub timeout: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            retry: 10,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Defaults {
    /// These defaults under a `config-br-defaults` entry's delivery: each field it sets wins.
    /// Its durations were validated when the ConfigMap was read.
    pub fn under(&self, delivery: &DeliverySpec) -> Defaults {
        let parse = |text: Option<&String>| text.and_then(|t| duration::parse(t).ok());
        Defaults {
            retry: delivery
                .retry
                .map(|r| u32::try_from(r).unwrap_or(0))
                .unwrap_or(self.retry),
            backoff_policy: delivery.backoff_policy.unwrap_or(self.backoff_policy),
            backoff_delay: parse(delivery.backoff_delay.as_ref()).unwrap_or(self.backoff_delay),
            timeout: parse(delivery.timeout.as_ref()).unwrap_or(self.timeout),
        }
    }

    /// The defaults for triggers in `namespace`: the process's, under the `config-br-defaults`
    /// of `resources` (kinetic's system namespace), when it has one that reads. Also why it does
    /// not read, when it does not.
    pub fn configured(
        &self,
        resources: &kinetic_resources::Snapshot,
    ) -> (ConfiguredDefaults, Option<String>) {
        use kinetic_api::config::{BR_DEFAULTS, BrokerDefaults, SYSTEM_NAMESPACE};
        let mut configured = ConfiguredDefaults {
            process: self.clone(),
            config: None,
        };
        let Some((_, map)) =
            resources.get::<kinetic_api::core::ConfigMap>(SYSTEM_NAMESPACE, BR_DEFAULTS)
        else {
            return (configured, None);
        };
        match BrokerDefaults::from_config_map(map) {
            Ok(config) => {
                configured.config = Some(config);
                (configured, None)
            }
            Err(error) => (
                configured,
                Some(format!(
                    "ConfigMap {SYSTEM_NAMESPACE}/{BR_DEFAULTS}: {error}; the process's delivery defaults apply"
                )),
            ),
        }
    }
}

/// The process's delivery defaults and the `config-br-defaults` over them.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredDefaults {
    pub process: Defaults,
    pub config: Option<kinetic_api::config::BrokerDefaults>,
}

impl ConfiguredDefaults {
    pub fn for_namespace(&self, namespace: &str) -> Defaults {
        match self
            .config
            .as_ref()
            .and_then(|config| config.for_namespace(namespace))
            .and_then(|entry| entry.delivery.as_ref())
        {
            Some(delivery) => self.process.under(delivery),
            None => self.process.clone(),
        }
    }
}

/// The effective delivery settings of one trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// Retries after the first attempt.
    pub retry: u32,
    pub backoff_policy: BackoffPolicy,
    pub backoff_delay: Duration,
    pub timeout: Duration,
    /// `None`: `Retry-After` is honoured without a cap. `Some(ZERO)`: ignored.
    pub retry_after_max: Option<Duration>,
    pub format: DeliveryFormat,
    /// Standard Webhooks signing secrets (kinetic's extension), the trigger's or else the broker's.
    pub signing: Option<StandardWebhooksSigning>,
}

impl DeliveryPolicy {
    /// Merges field by field: the trigger's value, else the broker's, else the default. Durations were
    /// validated when the resources were applied; an unparsable one falls back to the default.
    pub fn resolve(
        trigger: Option<&DeliverySpec>,
        broker: Option<&DeliverySpec>,
        defaults: &Defaults,
    ) -> Self {
        fn pick<'a, T>(
            trigger: Option<&'a DeliverySpec>,
            broker: Option<&'a DeliverySpec>,
            field: impl Fn(&'a DeliverySpec) -> Option<T>,
        ) -> Option<T> {
            trigger.and_then(&field).or_else(|| broker.and_then(&field))
        }
        let parse = |text: Option<&String>| text.and_then(|t| duration::parse(t).ok());
        let backoff_policy =
            pick(trigger, broker, |d| d.backoff_policy).unwrap_or(defaults.backoff_policy);
        // The webhook schedule's own length, unless a retry count is set somewhere.
        let default_retry = match backoff_policy {
            BackoffPolicy::Webhook => WEBHOOK_SCHEDULE.len() as u32,
            BackoffPolicy::Linear | BackoffPolicy::Exponential => defaults.retry,
        };
        Self {
            retry: pick(trigger, broker, |d| d.retry)
                .map(|r| u32::try_from(r).unwrap_or(0))
                .unwrap_or(default_retry),
            backoff_policy,
            backoff_delay: parse(pick(trigger, broker, |d| d.backoff_delay.as_ref()))
                .unwrap_or(defaults.backoff_delay),
            timeout: parse(pick(trigger, broker, |d| d.timeout.as_ref()))
                .unwrap_or(defaults.timeout),
            retry_after_max: parse(pick(trigger, broker, |d| d.retry_after_max.as_ref())),
            format: pick(trigger, broker, |d| d.format).unwrap_or(DeliveryFormat::Binary),
            signing: pick(trigger, broker, |d| {
                d.signing.as_ref().and_then(|s| s.standard_webhooks.clone())
            }),
        }
    }

    /// The backoff schedule this policy names, with its delay.
    pub fn schedule(&self) -> Backoff {
        match self.backoff_policy {
            BackoffPolicy::Linear => Backoff::Linear(self.backoff_delay),
            BackoffPolicy::Exponential => Backoff::Exponential(self.backoff_delay),
            BackoffPolicy::Webhook => Backoff::Webhook,
        }
    }

    /// Backoff before retry `k` (1-based), before jitter (see [`Backoff::exact`]).
    pub fn backoff(&self, k: u32) -> Duration {
        self.schedule().exact(k)
    }

    /// The backoff with this policy's jitter: `roll` is uniform in `[0, 1)`, drawn by the caller.
    pub fn jittered_backoff(&self, k: u32, roll: f64) -> Duration {
        self.schedule().wait(k, roll)
    }

    /// Whether another attempt follows `made` failed attempts (the first attempt plus `retry`
    /// retries in all).
    pub fn allows_retry(&self, made: i32) -> bool {
        u32::try_from(made).is_ok_and(|made| made <= self.retry)
    }

    /// When retry number `made` is due, `made` attempts having failed by `now` (Unix ms); `roll`
    /// is uniform in `[0, 1)` (see [`Self::jittered_backoff`]).
    pub fn retry_at(&self, made: i32, retry_after: Option<Duration>, now: i64, roll: f64) -> i64 {
        let k = u32::try_from(made).unwrap_or(1).max(1);
        let wait = self.wait_before_retry(k, retry_after, roll);
        now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    }

    /// How long to wait before retry `k` given the answer's `Retry-After` (already parsed):
    /// `max(Retry-After capped by retryAfterMax, backoff)`.
    pub fn wait_before_retry(&self, k: u32, retry_after: Option<Duration>, roll: f64) -> Duration {
        let backoff = self.jittered_backoff(k, roll);
        let honoured = match (retry_after, self.retry_after_max) {
            (None, _) => Duration::ZERO,
            (Some(_), Some(max)) if max.is_zero() => Duration::ZERO,
            (Some(after), Some(max)) => after.min(max),
            (Some(after), None) => after,
        };
        backoff.max(honoured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff_policy: BackoffPolicy, delay_ms: u64) -> DeliveryPolicy {
        DeliveryPolicy {
            retry: 5,
            backoff_policy,
            backoff_delay: Duration::from_millis(delay_ms),
            timeout: Duration::from_secs(1),
            retry_after_max: None,
            format: DeliveryFormat::Binary,
            signing: None,
        }
    }

    #[test]
    fn backoff_schedules() {
        let linear = policy(BackoffPolicy::Linear, 100);
        let exponential = policy(BackoffPolicy::Exponential, 100);
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            (1..=4).map(|k| ms(linear.backoff(k))).collect::<Vec<_>>(),
            [100, 200, 300, 400]
        );
        assert_eq!(
            (1..=4)
                .map(|k| ms(exponential.backoff(k)))
                .collect::<Vec<_>>(),
            [200, 400, 800, 1600]
        );
        // Monotone and saturating, never a panic on huge retry counts.
        let mut last = Duration::ZERO;
        for k in 0..200 {
            let next = exponential.backoff(k);
            assert!(next >= last);
            last = next;
        }
    }

    #[test]
    fn retry_after_rules() {
        let mut p = policy(BackoffPolicy::Linear, 100);
        assert_eq!(
            p.wait_before_retry(1, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.wait_before_retry(1, None, 0.5),
            Duration::from_millis(100)
        );
        p.retry_after_max = Some(Duration::from_secs(1));
        assert_eq!(
            p.wait_before_retry(1, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(1)
        );
        p.retry_after_max = Some(Duration::ZERO);
        assert_eq!(
            p.wait_before_retry(2, Some(Duration::from_secs(3)), 0.5),
            Duration::from_millis(200)
        );
        p.backoff_delay = Duration::from_secs(10);
        p.retry_after_max = None;
        assert_eq!(
            p.wait_before_retry(1, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_budget_and_due_time() {
        let p = policy(BackoffPolicy::Linear, 100);
        assert!((1..=5).all(|made| p.allows_retry(made)));
        assert!(!p.allows_retry(6));
        assert!(!p.allows_retry(-1));
        assert_eq!(p.retry_at(1, None, 1_000, 0.5), 1_100);
        assert_eq!(p.retry_at(3, None, 1_000, 0.5), 1_300);
        assert_eq!(
            p.retry_at(1, Some(Duration::from_secs(2)), 1_000, 0.5),
            3_000
        );
        assert_eq!(p.retry_at(1, None, i64::MAX - 1, 0.5), i64::MAX);
    }

    #[test]
    fn resolve_merges_field_by_field() {
        let broker = DeliverySpec {
            retry: Some(3),
            backoff_delay: Some("PT1S".into()),
            ..Default::default()
        };
        let trigger = DeliverySpec {
            retry: Some(1),
            backoff_policy: Some(BackoffPolicy::Linear),
            retry_after_max: Some("PT0S".into()),
            ..Default::default()
        };
        let defaults = Defaults::default();
        let p = DeliveryPolicy::resolve(Some(&trigger), Some(&broker), &defaults);
        assert_eq!(p.retry, 1);
        assert_eq!(p.backoff_policy, BackoffPolicy::Linear);
        assert_eq!(p.backoff_delay, Duration::from_secs(1));
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!(p.retry_after_max, Some(Duration::ZERO));
        let p = DeliveryPolicy::resolve(None, None, &defaults);
        assert_eq!(
            (p.retry, p.backoff_policy, p.backoff_delay),
            (10, BackoffPolicy::Exponential, Duration::from_millis(200))
        );
    }

    #[test]
    fn webhook_schedule() {
        let p = policy(BackoffPolicy::Webhook, 100);
        let secs = |k| p.backoff(k).as_secs();
        assert_eq!(
            (1..=9).map(secs).collect::<Vec<_>>(),
            [5, 300, 1800, 7200, 18_000, 36_000, 36_000, 36_000, 36_000],
            "backoffDelay does not apply; past the schedule the last wait repeats"
        );
        assert_eq!(p.backoff(0), Duration::ZERO);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(36_000));
        // Jitter is ±20 % around the step: the extremes of the roll and its middle.
        assert_eq!(p.jittered_backoff(1, 0.0), Duration::from_secs(4));
        assert_eq!(p.jittered_backoff(1, 0.5), Duration::from_secs(5));
        assert_eq!(p.jittered_backoff(2, 1.0), Duration::from_secs(360));
        assert_eq!(p.jittered_backoff(2, f64::NAN), Duration::from_secs(300));
        assert_eq!(p.retry_at(1, None, 1_000, 0.5), 6_000);
        assert_eq!(p.retry_at(2, None, 0, 0.0), 240_000);
        // Knative's policies stay exact whatever the roll.
        let linear = policy(BackoffPolicy::Linear, 100);
        assert_eq!(linear.jittered_backoff(3, 0.0), Duration::from_millis(300));
        assert_eq!(linear.jittered_backoff(3, 0.99), Duration::from_millis(300));
    }

    #[test]
    fn webhook_policy_defaults_to_its_schedule_length_unless_retry_is_set() {
        let defaults = Defaults::default();
        let webhook = DeliverySpec {
            backoff_policy: Some(BackoffPolicy::Webhook),
            ..Default::default()
        };
        let p = DeliveryPolicy::resolve(Some(&webhook), None, &defaults);
        assert_eq!(p.retry, 7, "8 attempts: the first, then the 7 waits");
        assert!(p.allows_retry(7) && !p.allows_retry(8));
        let broker = DeliverySpec {
            retry: Some(3),
            ..Default::default()
        };
        let p = DeliveryPolicy::resolve(Some(&webhook), Some(&broker), &defaults);
        assert_eq!(
            p.retry, 3,
            "a retry count set on the broker still bounds it"
        );
        let p = DeliveryPolicy::resolve(None, Some(&webhook), &defaults);
        assert_eq!((p.backoff_policy, p.retry), (BackoffPolicy::Webhook, 7));
    }

    #[test]
    fn signing_comes_from_the_trigger_else_the_broker() {
        use kinetic_api::eventing::{DeliverySigning, StandardWebhooksSigning};
        use kinetic_api::sources::SecretRef;
        let signing = |name: &str| DeliverySpec {
            signing: Some(DeliverySigning {
                standard_webhooks: Some(StandardWebhooksSigning {
                    secrets: vec![SecretRef::Env(name.into())],
                }),
            }),
            ..Default::default()
        };
        let defaults = Defaults::default();
        let secrets = |p: DeliveryPolicy| p.signing.map(|s| s.secrets);
        assert_eq!(
            secrets(DeliveryPolicy::resolve(
                Some(&signing("T")),
                Some(&signing("B")),
                &defaults
            )),
            Some(vec![SecretRef::Env("T".into())])
        );
        assert_eq!(
            secrets(DeliveryPolicy::resolve(
                Some(&DeliverySpec::default()),
                Some(&signing("B")),
                &defaults
            )),
            Some(vec![SecretRef::Env("B".into())])
        );
        assert_eq!(
            secrets(DeliveryPolicy::resolve(None, None, &defaults)),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn webhook_waits_stay_within_the_jitter_of_a_monotone_schedule(
            k in 1u32..64,
            roll in 0.0f64..1.0,
            retry_after in proptest::option::of(0u64..100_000),
        ) {
            let p = policy(BackoffPolicy::Webhook, 200);
            let step = p.backoff(k);
            proptest::prop_assert!(p.backoff(k + 1) >= step);
            proptest::prop_assert!(step >= WEBHOOK_SCHEDULE[0] && step <= WEBHOOK_SCHEDULE[6]);
            let jittered = p.jittered_backoff(k, roll);
            proptest::prop_assert!(jittered >= step.mul_f64(0.8));
            proptest::prop_assert!(jittered <= step.mul_f64(1.2));
            let retry_after = retry_after.map(Duration::from_secs);
            let wait = p.wait_before_retry(k, retry_after, roll);
            proptest::prop_assert_eq!(wait, jittered.max(retry_after.unwrap_or_default()));
        }
    }
}
