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

/// What the broker does with an incoming TTL: absent → the default, present → decremented; an
/// event whose TTL would drop to zero or below is refused (`None`).
pub fn next_ttl(incoming: Option<i64>) -> Option<i64> {
    match incoming {
        None => Some(DEFAULT_BROKER_TTL),
        Some(ttl) if ttl - 1 > 0 => Some(ttl - 1),
        Some(_) => None,
    }
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
    }
}
