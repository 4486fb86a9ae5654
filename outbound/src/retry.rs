//! When sending again is worth it, and how long to wait first, for every sender of kinetic: the
//! dispatcher's deliveries and the sources' posts to their sinks follow the same rules.
//!
//! - [`classify`]: Knative's retryable answers (404, 408, 409, 429, every status from 500, and no
//!   answer at all), as its dispatcher's `SelectiveRetry` decides.
//! - [`parse_retry_after`]: a `Retry-After` header, honoured on 429 and 503 ([`honours_retry_after`]).
//! - [`Backoff`]: the schedules (Knative's linear and exponential, the webhook schedule with
//!   jitter, and a capped doubling for the sources' own loops). Pure: the caller passes the
//!   random roll, so tests need no seed.

use std::time::{Duration, SystemTime};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: 404, 408, 409, 429, 5xx (and above), connection errors, timeouts.
    Retryable,
    /// Other answers: straight to the dead letters.
    Permanent,
}

/// Classifies an HTTP status; `None` means no answer (connection error or timeout).
///
/// Every status from 500 is retried, as Knative's dispatcher does (`>= 500`): a server that
/// answers with a code past 599 is as broken as one that answers 500.
pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retryable,
        Some(200..=299) => Verdict::Delivered,
        Some(404 | 408 | 409 | 429 | 500..) => Verdict::Retryable,
        Some(_) => Verdict::Permanent,
    }
}

/// Whether an answer's `Retry-After` is read: on 429 and 503, as Knative does.
pub fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// Parses a `Retry-After` value (delta-seconds or an HTTP-date) relative to `now`. A date in the
/// past is zero; garbage is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `webhook` backoff policy's waits before retries 1, 2, …: the schedule webhook senders use
/// (the first attempt is immediate); retries past the end wait as long as the last.
pub const WEBHOOK_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// How far the `webhook` policy moves each wait at random, either way, so that subscribers coming
/// back after an outage are not hit by every retry at once.
pub const WEBHOOK_JITTER: f64 = 0.2;

/// A backoff schedule: how long to wait before retry `k` (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// Knative's `linear`: `delay × k`.
    Linear(Duration),
    /// Knative's `exponential`: `delay × 2^k`.
    Exponential(Duration),
    /// [`WEBHOOK_SCHEDULE`], moved by up to ±[`WEBHOOK_JITTER`].
    Webhook,
    /// `first`, doubling each retry, never more than `max`: a source's wait while its sink or
    /// its input is away.
    Doubling { first: Duration, max: Duration },
}

impl Backoff {
    /// The wait before retry `k`, before jitter.
    pub fn exact(&self, k: u32) -> Duration {
        match *self {
            Backoff::Linear(delay) => delay.saturating_mul(k),
            Backoff::Exponential(delay) => {
                let factor = 1u32.checked_shl(k.min(31)).unwrap_or(u32::MAX);
                delay.saturating_mul(factor)
            }
            Backoff::Webhook => match k {
                0 => Duration::ZERO,
                k => WEBHOOK_SCHEDULE[(k as usize).min(WEBHOOK_SCHEDULE.len()) - 1],
            },
            Backoff::Doubling { first, max } => {
                let factor = 1u32
                    .checked_shl(k.saturating_sub(1).min(31))
                    .unwrap_or(u32::MAX);
                first.saturating_mul(factor).min(max)
            }
        }
    }

    /// The wait before retry `k` with the schedule's jitter; `roll` is uniform in `[0, 1)`, drawn
    /// by the caller. Only the webhook schedule has jitter; Knative's are exact.
    pub fn wait(&self, k: u32, roll: f64) -> Duration {
        let exact = self.exact(k);
        match self {
            Backoff::Webhook => {
                let roll = if roll.is_finite() {
                    roll.clamp(0.0, 1.0)
                } else {
                    0.5
                };
                exact.mul_f64(1.0 - WEBHOOK_JITTER + 2.0 * WEBHOOK_JITTER * roll)
            }
            Backoff::Linear(_) | Backoff::Exponential(_) | Backoff::Doubling { .. } => exact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify(Some(status)), Verdict::Delivered);
        }
        for status in [404, 408, 409, 429, 500, 502, 503, 504, 599, 600, 999] {
            assert_eq!(classify(Some(status)), Verdict::Retryable, "{status}");
        }
        for status in [100, 301, 304, 400, 401, 403, 405, 410, 413, 422] {
            assert_eq!(classify(Some(status)), Verdict::Permanent, "{status}");
        }
        assert_eq!(classify(None), Verdict::Retryable);
        assert!(honours_retry_after(429) && honours_retry_after(503));
        assert!(!honours_retry_after(500) && !honours_retry_after(404));
    }

    #[test]
    fn retry_after_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
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
    fn doubling_is_capped_and_never_overflows() {
        let doubling = Backoff::Doubling {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let ms: Vec<u128> = (1..=8).map(|k| doubling.wait(k, 0.9).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(doubling.exact(u32::MAX), Duration::from_secs(5));
        assert_eq!(doubling.exact(0), Duration::from_millis(100));
    }
}
