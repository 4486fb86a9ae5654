//! The time sources read: the system's, or one a test sets. Schedules (a PingSource's ticks) ask it
//! what time it is and sleep on it, so a test can step a source across minutes without waiting
//! for them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Wall-clock time for sources: [`Clock::system`] in kinetic, [`Clock::manual`] in tests.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. Otherwise the time a test set; sleepers wake when it moves.
    manual: Option<Arc<watch::Sender<DateTime<Utc>>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that shows `start` until [`Clock::set`] moves it.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock {
            manual: Some(Arc::new(watch::Sender::new(start))),
        }
    }

    /// Moves a manual clock to `to` (also backwards), waking the sleepers it reaches. Does
    /// nothing to the system clock.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Some(manual) = &self.manual {
            manual.send_replace(to);
        }
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(manual) => *manual.borrow(),
        }
    }

    /// Sleeps `duration` of this clock's time; `true` when `cancel` fired first.
    pub async fn sleep(&self, duration: Duration, cancel: &CancellationToken) -> bool {
        let Some(manual) = &self.manual else {
            return tokio::select! {
                () = cancel.cancelled() => true,
                () = tokio::time::sleep(duration) => false,
            };
        };
        let until = *manual.borrow()
            + chrono::Duration::from_std(duration).unwrap_or(chrono::TimeDelta::MAX);
        let mut time = manual.subscribe();
        tokio::select! {
            () = cancel.cancelled() => true,
            // The sender lives as long as `self`, so waiting ends only when the time is reached.
            _ = time.wait_for(|now| *now >= until) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_it_reaches_their_time() {
        let clock = Clock::manual(at("2026-01-01T00:00:00Z"));
        let cancel = CancellationToken::new();
        let sleeper = tokio::spawn({
            let (clock, cancel) = (clock.clone(), cancel.clone());
            async move { clock.sleep(Duration::from_secs(60), &cancel).await }
        });
        // The sleep starts (and so counts from 00:00:00) once the sleeper runs.
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.set(at("2026-01-01T00:00:59Z"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "woke a second early");
        clock.set(at("2026-01-01T00:01:00Z"));
        assert!(!sleeper.await.unwrap(), "not cancelled");
        assert_eq!(clock.now(), at("2026-01-01T00:01:00Z"));
    }

    #[tokio::test]
    async fn cancelling_ends_a_sleep_on_either_clock() {
        for clock in [Clock::system(), Clock::manual(at("2026-01-01T00:00:00Z"))] {
            let cancel = CancellationToken::new();
            cancel.cancel();
            assert!(clock.sleep(Duration::from_secs(3600), &cancel).await);
        }
    }
}
