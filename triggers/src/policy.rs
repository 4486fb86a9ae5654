//! Delivery policy: the effective `DeliverySpec` of a trigger (trigger over broker over process
//! defaults, field by field), the backoff schedule, which answers are retried, and `Retry-After`.
//! All pure: no clock, no I/O.

use std::time::{Duration, SystemTime};

use kinetic_api::DeliverySpec;
use kinetic_api::duration;
use kinetic_api::eventing::{BackoffPolicy, DeliveryFormat};

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
        Self {
            retry: pick(trigger, broker, |d| d.retry)
                .map(|r| u32::try_from(r).unwrap_or(0))
                .unwrap_or(defaults.retry),
            backoff_policy: pick(trigger, broker, |d| d.backoff_policy)
                .unwrap_or(defaults.backoff_policy),
            backoff_delay: parse(pick(trigger, broker, |d| d.backoff_delay.as_ref()))
                .unwrap_or(defaults.backoff_delay),
            timeout: parse(pick(trigger, broker, |d| d.timeout.as_ref()))
                .unwrap_or(defaults.timeout),
            retry_after_max: parse(pick(trigger, broker, |d| d.retry_after_max.as_ref())),
            format: pick(trigger, broker, |d| d.format).unwrap_or(DeliveryFormat::Binary),
        }
    }

    /// Backoff before retry `k` (1-based): linear `delay × k`, exponential `delay × 2^k`.
    pub fn backoff(&self, k: u32) -> Duration {
        match self.backoff_policy {
            BackoffPolicy::Linear => self.backoff_delay.saturating_mul(k),
            BackoffPolicy::Exponential => {
                let factor = 1u32.checked_shl(k.min(31)).unwrap_or(u32::MAX);
                self.backoff_delay.saturating_mul(factor)
            }
        }
    }

    /// Whether another attempt follows `made` failed attempts (the first attempt plus `retry`
    /// retries in all).
    pub fn allows_retry(&self, made: i32) -> bool {
        u32::try_from(made).is_ok_and(|made| made <= self.retry)
    }

    /// When retry number `made` is due, `made` attempts having failed by `now` (Unix ms).
    pub fn retry_at(&self, made: i32, retry_after: Option<Duration>, now: i64) -> i64 {
        let k = u32::try_from(made).unwrap_or(1).max(1);
        let wait = self.wait_before_retry(k, retry_after);
        now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    }

    /// How long to wait before retry `k` given the answer's `Retry-After` (already parsed):
    /// `max(Retry-After capped by retryAfterMax, backoff)`.
    pub fn wait_before_retry(&self, k: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff(k);
        let honoured = match (retry_after, self.retry_after_max) {
            (None, _) => Duration::ZERO,
            (Some(_), Some(max)) if max.is_zero() => Duration::ZERO,
            (Some(after), Some(max)) => after.min(max),
            (Some(after), None) => after,
        };
        backoff.max(honoured)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: 404, 408, 409, 429, 5xx, connection errors, timeouts.
    Retryable,
    /// Other answers: straight to the dead letters.
    Permanent,
}

/// Classifies an HTTP status; `None` means no answer (connection error or timeout).
pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retryable,
        Some(200..=299) => Verdict::Delivered,
        Some(404 | 408 | 409 | 429 | 500..=599) => Verdict::Retryable,
        Some(_) => Verdict::Permanent,
    }
}

/// Parses a `Retry-After` value (delta-seconds or an HTTP-date) relative to `now`. A date in the past
/// is zero; garbage is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
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
            p.wait_before_retry(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(p.wait_before_retry(1, None), Duration::from_millis(100));
        p.retry_after_max = Some(Duration::from_secs(1));
        assert_eq!(
            p.wait_before_retry(1, Some(Duration::from_secs(3))),
            Duration::from_secs(1)
        );
        p.retry_after_max = Some(Duration::ZERO);
        assert_eq!(
            p.wait_before_retry(2, Some(Duration::from_secs(3))),
            Duration::from_millis(200)
        );
        p.backoff_delay = Duration::from_secs(10);
        p.retry_after_max = None;
        assert_eq!(
            p.wait_before_retry(1, Some(Duration::from_secs(3))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_budget_and_due_time() {
        let p = policy(BackoffPolicy::Linear, 100);
        assert!((1..=5).all(|made| p.allows_retry(made)));
        assert!(!p.allows_retry(6));
        assert!(!p.allows_retry(-1));
        assert_eq!(p.retry_at(1, None, 1_000), 1_100);
        assert_eq!(p.retry_at(3, None, 1_000), 1_300);
        assert_eq!(p.retry_at(1, Some(Duration::from_secs(2)), 1_000), 3_000);
        assert_eq!(p.retry_at(1, None, i64::MAX - 1), i64::MAX);
    }

    #[test]
    fn classification() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify(Some(status)), Verdict::Delivered);
        }
        for status in [404, 408, 409, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(Some(status)), Verdict::Retryable, "{status}");
        }
        for status in [300, 301, 400, 401, 403, 405, 410, 413, 415, 422] {
            assert_eq!(classify(Some(status)), Verdict::Permanent, "{status}");
        }
        assert_eq!(classify(None), Verdict::Retryable);
    }

    #[test]
    fn retry_after_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
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
}
