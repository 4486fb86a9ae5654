//! CloudEvents extension names and rules shared by the broker (which sets them) and the dispatcher
//! (which reads and forwards them).

/// Time the broker accepted the event (RFC 3339), set on every accepted event.
pub const ARRIVAL_TIME: &str = "knativearrivaltime";
/// Remaining hops before the event is refused, the reply-loop guard.
pub const BROKER_TTL: &str = "knativebrokerttl";
/// TTL given to an event that arrives without one.
pub const DEFAULT_BROKER_TTL: i64 = 255;
/// Ordered delivery lane of an event.
pub const PARTITION_KEY: &str = "partitionkey";
/// Dead-letter extensions (Knative's names).
pub const ERROR_DEST: &str = "knativeerrordest";
pub const ERROR_CODE: &str = "knativeerrorcode";
pub const ERROR_DATA: &str = "knativeerrordata";
/// Longest `knativeerrordata` value, in base64 characters.
pub const ERROR_DATA_MAX: usize = 1024;

/// What the broker does with an incoming TTL: absent → the default, present → clamped to the
/// default (a sender cannot buy itself more hops than a fresh event has) and decremented; an event
/// whose TTL would drop to zero or below is refused (`None`).
pub fn next_ttl(incoming: Option<i64>) -> Option<i64> {
    let ttl = incoming.map_or(DEFAULT_BROKER_TTL + 1, |ttl| ttl.min(DEFAULT_BROKER_TTL));
    (ttl > 1).then(|| ttl - 1)
}

/// `knativearrivaltime` for events accepted at `now`: formatted once for all events of a request.
pub fn arrival_time(now: chrono::DateTime<chrono::Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Applies the broker's acceptance rules to an event entering a broker's log (from a client or as a
/// reply): stamps `knativearrivaltime` (`arrival`, from [`arrival_time`]), and sets or decrements
/// `knativebrokerttl`, refusing an event whose TTL is spent (a reply loop).
pub fn admit(
    event: &mut cloudevents::Event,
    arrival: &str,
) -> Result<(), crate::cloudevent::EventError> {
    let incoming = crate::cloudevent::extension_i64(event, BROKER_TTL)?;
    let Some(ttl) = next_ttl(incoming) else {
        return Err(crate::cloudevent::EventError {
            kind: crate::cloudevent::EventErrorKind::Invalid,
            attribute: Some(BROKER_TTL.to_owned()),
            message: format!(
                "`{BROKER_TTL}` is {}: the event went through too many brokers (a reply loop?)",
                incoming.unwrap_or_default()
            ),
        });
    };
    event.set_extension(BROKER_TTL, cloudevents::event::ExtensionValue::Integer(ttl));
    event.set_extension(
        ARRIVAL_TIME,
        cloudevents::event::ExtensionValue::String(arrival.to_owned()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        assert_eq!(next_ttl(None), Some(255));
        assert_eq!(next_ttl(Some(255)), Some(254));
        assert_eq!(next_ttl(Some(2)), Some(1));
        assert_eq!(next_ttl(Some(1)), None);
        assert_eq!(next_ttl(Some(0)), None);
        assert_eq!(next_ttl(Some(-5)), None);
        assert_eq!(next_ttl(Some(256)), Some(254));
        assert_eq!(next_ttl(Some(i64::MAX)), Some(254));
        assert_eq!(next_ttl(Some(i64::MIN)), None);
    }
}
