//! Knative's `config-autoscaler` ConfigMap: the cluster-wide autoscaling defaults, with Knative's key
//! names, defaults and validation rules. Per-revision settings built from these and a revision's
//! annotations live in [`super::revision`] and are re-exported here.

use std::time::Duration;

use kinetic_api::Error;
use serde_json::{Map, Value};

use super::duration;
pub use super::revision::{Config, Metric, revision_config};

/// The only autoscaler class kinetic has.
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// Knative's horizontal pod autoscaler class, named in errors because users copy it from Knative.
pub const HPA_CLASS: &str = "hpa.autoscaling.knative.dev";
/// Smallest target (concurrency or requests per second) Knative allows.
pub const TARGET_MIN: f64 = 0.01;
/// Shortest stable window: decisions every 2 s would miss panic-window samples below this.
pub const WINDOW_MIN: Duration = Duration::from_secs(6);
/// Longest stable window, scale-down delay and pod retention period.
pub const WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Panic threshold bounds, in percent of the target.
pub const PANIC_THRESHOLD_PERCENTAGE_RANGE: (f64, f64) = (110.0, 1000.0);
/// Panic window bounds, in percent of the stable window.
pub const PANIC_WINDOW_PERCENTAGE_RANGE: (f64, f64) = (1.0, 100.0);
/// Utilization applied to request-per-second targets. Knative does not expose it in the ConfigMap;
/// only the `target-utilization-percentage` annotation overrides it.
pub const RPS_TARGET_UTILIZATION: f64 = 0.7;

/// The settings of Knative's `config-autoscaler` ConfigMap. Field docs name the ConfigMap key.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// `container-concurrency-target-percentage`, stored as a fraction in (0, 1]: the share of the
    /// per-instance concurrency target the autoscaler aims for.
    pub container_concurrency_target_fraction: f64,
    /// `container-concurrency-target-default`: the concurrency target when the revision sets neither
    /// `containerConcurrency` nor a `target` annotation.
    pub container_concurrency_target_default: f64,
    /// `requests-per-second-target-default`: the target of revisions scaled on `rps`.
    pub requests_per_second_target_default: f64,
    /// `target-burst-capacity`: spare concurrency to keep; -1 keeps the activator always in path.
    pub target_burst_capacity: f64,
    /// `stable-window`: the averaging window of the stable metric.
    pub stable_window: Duration,
    /// `panic-window-percentage`: the panic window as a percentage of the stable window.
    pub panic_window_percentage: f64,
    /// `panic-threshold-percentage`: panic when the panic-window metric asks for this percentage
    /// of the ready instances.
    pub panic_threshold_percentage: f64,
    /// `max-scale-up-rate`: at most this many times the ready instances per decision.
    pub max_scale_up_rate: f64,
    /// `max-scale-down-rate`: at least the ready instances divided by this per decision.
    pub max_scale_down_rate: f64,
    /// `enable-scale-to-zero`: when false, at least one instance stays.
    pub enable_scale_to_zero: bool,
    /// `scale-to-zero-grace-period`: how long the activator must have been in the path before the
    /// last instance goes.
    pub scale_to_zero_grace_period: Duration,
    /// `scale-to-zero-pod-retention-period`: how long the last instance stays after the revision
    /// became inactive.
    pub scale_to_zero_pod_retention_period: Duration,
    /// `pod-autoscaler-class`: only `kpa.autoscaling.knative.dev`.
    pub pod_autoscaler_class: String,
    /// `activator-capacity`: Knative uses it to size the activator fleet; kinetic has one activator
    /// per process and accepts the key for compatibility only.
    pub activator_capacity: f64,
    /// `activation-scale` (a kinetic addition; Knative only has the annotation): instances to start
    /// when scaling up from zero. 1 means no minimum beyond the first instance.
    pub activation_scale: u32,
    /// `initial-scale`: instances a new revision starts with.
    pub initial_scale: u32,
    /// `allow-zero-initial-scale`: whether `initial-scale` may be 0.
    pub allow_zero_initial_scale: bool,
    /// `min-scale`: default lower bound of instances.
    pub min_scale: u32,
    /// `max-scale`: default upper bound of instances; 0 is unbounded.
    pub max_scale: u32,
    /// `max-scale-limit`: the largest `max-scale` a revision may ask for; 0 is no limit.
    pub max_scale_limit: u32,
    /// `scale-down-delay`: a scale-down waits until the lower count held for this long.
    pub scale_down_delay: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            container_concurrency_target_fraction: 0.7,
            container_concurrency_target_default: 100.0,
            requests_per_second_target_default: 200.0,
            target_burst_capacity: 211.0,
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            enable_scale_to_zero: true,
            scale_to_zero_grace_period: Duration::from_secs(30),
            scale_to_zero_pod_retention_period: Duration::ZERO,
            pod_autoscaler_class: KPA_CLASS.to_owned(),
            activator_capacity: 100.0,
            activation_scale: 1,
            initial_scale: 1,
            allow_zero_initial_scale: false,
            min_scale: 0,
            max_scale: 0,
            max_scale_limit: 0,
            scale_down_delay: Duration::ZERO,
        }
    }
}

/// Every key `from_map` accepts, in Knative's documentation order.
pub const KEYS: &[&str] = &[
    "container-concurrency-target-percentage",
    "container-concurrency-target-default",
    "requests-per-second-target-default",
    "target-burst-capacity",
    "stable-window",
    "panic-window-percentage",
    "panic-threshold-percentage",
    "max-scale-up-rate",
    "max-scale-down-rate",
    "enable-scale-to-zero",
    "scale-to-zero-grace-period",
    "scale-to-zero-pod-retention-period",
    "pod-autoscaler-class",
    "activator-capacity",
    "activation-scale",
    "initial-scale",
    "allow-zero-initial-scale",
    "min-scale",
    "max-scale",
    "max-scale-limit",
    "scale-down-delay",
];

impl Defaults {
    /// Reads the `config-autoscaler` settings. Values may be strings, as in a ConfigMap, or YAML
    /// numbers and booleans. Missing keys keep Knative's defaults; unknown keys are refused, except
    /// Knative's `_example` documentation block. Errors name the key as `autoscaler.<key>`.
    pub fn from_map(map: &Map<String, Value>) -> Result<Defaults, Error> {
        let defaults = Self::read_map(map)?;
        defaults.validate()?;
        Ok(defaults)
    }

    /// The settings of `map` over Knative's defaults, not yet validated together.
    fn read_map(map: &Map<String, Value>) -> Result<Defaults, Error> {
        let mut defaults = Defaults::default();
        for (key, value) in map {
            if key == "_example" {
                continue;
            }
            let d = &mut defaults;
            match key.as_str() {
                "container-concurrency-target-percentage" => {
                    d.container_concurrency_target_fraction = float(key, value)?;
                }
                "container-concurrency-target-default" => {
                    d.container_concurrency_target_default = float(key, value)?;
                }
                "requests-per-second-target-default" => {
                    d.requests_per_second_target_default = float(key, value)?;
                }
                "target-burst-capacity" => d.target_burst_capacity = float(key, value)?,
                "stable-window" => d.stable_window = duration(key, value)?,
                "panic-window-percentage" => d.panic_window_percentage = float(key, value)?,
                "panic-threshold-percentage" => d.panic_threshold_percentage = float(key, value)?,
                "max-scale-up-rate" => d.max_scale_up_rate = float(key, value)?,
                "max-scale-down-rate" => d.max_scale_down_rate = float(key, value)?,
                "enable-scale-to-zero" => d.enable_scale_to_zero = boolean(key, value)?,
                "scale-to-zero-grace-period" => {
                    d.scale_to_zero_grace_period = duration(key, value)?
                }
                "scale-to-zero-pod-retention-period" => {
                    d.scale_to_zero_pod_retention_period = duration(key, value)?;
                }
                "pod-autoscaler-class" => d.pod_autoscaler_class = string(key, value)?,
                "activator-capacity" => d.activator_capacity = float(key, value)?,
                "activation-scale" => d.activation_scale = count(key, value)?,
                "initial-scale" => d.initial_scale = count(key, value)?,
                "allow-zero-initial-scale" => d.allow_zero_initial_scale = boolean(key, value)?,
                "min-scale" => d.min_scale = count(key, value)?,
                "max-scale" => d.max_scale = count(key, value)?,
                "max-scale-limit" => d.max_scale_limit = count(key, value)?,
                "scale-down-delay" => d.scale_down_delay = duration(key, value)?,
                _ => {
                    return Err(Error::new(path(key), format!("unknown setting `{key}`"))
                        .with_hint(known_keys_hint(key, KEYS)));
                }
            }
        }
        // For legacy reasons Knative accepts the percentage as a fraction in (0, 1] too.
        if defaults.container_concurrency_target_fraction > 1.0 {
            defaults.container_concurrency_target_fraction /= 100.0;
        }
        Ok(defaults)
    }

    /// [`Defaults::from_map`] for revisions run as local processes: without a `max-scale` key, a
    /// revision may have at most [`crate::runtime::DEFAULT_MAX_SCALE`] instances (or the
    /// configured min-scale, initial-scale or activation-scale if higher; never above
    /// max-scale-limit) instead of Knative's unbounded 0. `max-scale: 0` still means unbounded.
    pub fn from_map_for_processes(map: &Map<String, Value>) -> Result<Defaults, Error> {
        let mut defaults = Self::read_map(map)?;
        if !map.contains_key("max-scale") {
            let mut max = crate::runtime::DEFAULT_MAX_SCALE
                .max(defaults.min_scale)
                .max(defaults.initial_scale)
                .max(defaults.activation_scale);
            if defaults.max_scale_limit > 0 {
                max = max.min(defaults.max_scale_limit);
            }
            defaults.max_scale = max;
        }
        defaults.validate()?;
        Ok(defaults)
    }

    /// Knative's validation of `config-autoscaler`, one error per rule, naming the key at fault.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |key: &str, message: String, hint: &str| {
            Err(Error::new(path(key), message).with_hint(hint))
        };
        if self.pod_autoscaler_class != KPA_CLASS {
            return fail(
                "pod-autoscaler-class",
                format!(
                    "`{}` is not an autoscaler kinetic has",
                    self.pod_autoscaler_class
                ),
                "kinetic only has the KPA; remove the key or set `kpa.autoscaling.knative.dev`",
            );
        }
        if self.scale_to_zero_grace_period.is_zero() {
            return fail(
                "scale-to-zero-grace-period",
                "must be positive, was 0s".to_owned(),
                "write a duration such as `30s`",
            );
        }
        if !whole_seconds(self.scale_down_delay) {
            return fail(
                "scale-down-delay",
                format!(
                    "must be whole seconds, was {}",
                    duration::format(self.scale_down_delay)
                ),
                "round it to seconds, e.g. `15s`",
            );
        }
        let tbc = self.target_burst_capacity;
        if tbc < 0.0 && tbc != -1.0 {
            return fail(
                "target-burst-capacity",
                format!("must be -1 or at least 0, was {tbc}"),
                "use -1 to keep the activator always in the request path, 0 to take it out whenever instances run",
            );
        }
        let fraction = self.container_concurrency_target_fraction;
        if fraction <= 0.0 || fraction > 1.0 {
            return fail(
                "container-concurrency-target-percentage",
                format!("must be in (0, 100], was {}", fraction * 100.0),
                "write a percentage such as 70",
            );
        }
        let target = fraction * self.container_concurrency_target_default;
        if target < TARGET_MIN {
            return fail(
                "container-concurrency-target-default",
                format!(
                    "with container-concurrency-target-percentage this yields a target concurrency of {target}, below the minimum {TARGET_MIN}"
                ),
                "raise container-concurrency-target-default (Knative's default is 100)",
            );
        }
        if self.requests_per_second_target_default < TARGET_MIN {
            return fail(
                "requests-per-second-target-default",
                format!(
                    "must be at least {TARGET_MIN}, was {}",
                    self.requests_per_second_target_default
                ),
                "Knative's default is 200",
            );
        }
        if self.activator_capacity < 1.0 {
            return fail(
                "activator-capacity",
                format!("must be at least 1, was {}", self.activator_capacity),
                "Knative's default is 100",
            );
        }
        if self.max_scale_up_rate <= 1.0 {
            return fail(
                "max-scale-up-rate",
                format!("must be greater than 1, was {}", self.max_scale_up_rate),
                "Knative's default is 1000",
            );
        }
        if self.max_scale_down_rate <= 1.0 {
            return fail(
                "max-scale-down-rate",
                format!("must be greater than 1, was {}", self.max_scale_down_rate),
                "Knative's default is 2, which at most halves the instances per decision",
            );
        }
        if self.stable_window < WINDOW_MIN || self.stable_window > WINDOW_MAX {
            return fail(
                "stable-window",
                format!(
                    "must be between 6s and 1h, was {}",
                    duration::format(self.stable_window)
                ),
                "Knative's default is `60s`",
            );
        }
        if !whole_seconds(self.stable_window) {
            return fail(
                "stable-window",
                format!(
                    "must be whole seconds, was {}",
                    duration::format(self.stable_window)
                ),
                "round it to seconds, e.g. `60s`",
            );
        }
        let (low, high) = PANIC_WINDOW_PERCENTAGE_RANGE;
        if !(low..=high).contains(&self.panic_window_percentage) {
            return fail(
                "panic-window-percentage",
                format!(
                    "must be between {low} and {high}, was {}",
                    self.panic_window_percentage
                ),
                "Knative's default is 10",
            );
        }
        let (low, high) = PANIC_THRESHOLD_PERCENTAGE_RANGE;
        if !(low..=high).contains(&self.panic_threshold_percentage) {
            return fail(
                "panic-threshold-percentage",
                format!(
                    "must be between {low} and {high}, was {}",
                    self.panic_threshold_percentage
                ),
                "Knative's default is 200",
            );
        }
        if self.initial_scale == 0 && !self.allow_zero_initial_scale {
            return fail(
                "initial-scale",
                "must be at least 1 unless allow-zero-initial-scale is true".to_owned(),
                "set `allow-zero-initial-scale: true` to let new revisions start with no instances",
            );
        }
        if self.activation_scale == 0 {
            return fail(
                "activation-scale",
                "must be at least 1".to_owned(),
                "1 scales up from zero one instance at a time",
            );
        }
        let min_max_scale = u32::from(self.max_scale_limit > 0);
        if self.max_scale < min_max_scale
            || (self.max_scale_limit > 0 && self.max_scale > self.max_scale_limit)
        {
            return fail(
                "max-scale",
                format!(
                    "must be between {min_max_scale} and max-scale-limit ({}), was {}",
                    self.max_scale_limit, self.max_scale
                ),
                "with max-scale-limit set, max-scale must be set too and not exceed it",
            );
        }
        if self.max_scale > 0 && self.min_scale > self.max_scale {
            return fail(
                "min-scale",
                format!(
                    "({}) must not exceed max-scale ({})",
                    self.min_scale, self.max_scale
                ),
                "lower min-scale or raise max-scale",
            );
        }
        if self.max_scale > 0 && self.activation_scale > self.max_scale {
            return fail(
                "activation-scale",
                format!(
                    "({}) must not exceed max-scale ({})",
                    self.activation_scale, self.max_scale
                ),
                "lower activation-scale or raise max-scale",
            );
        }
        if self.max_scale > 0 && self.initial_scale > self.max_scale {
            return fail(
                "initial-scale",
                format!(
                    "({}) must not exceed max-scale ({})",
                    self.initial_scale, self.max_scale
                ),
                "lower initial-scale or raise max-scale",
            );
        }
        Ok(())
    }
}

fn path(key: &str) -> String {
    format!("autoscaler.{key}")
}

pub(super) fn whole_seconds(duration: Duration) -> bool {
    duration.subsec_nanos() == 0
}

/// A ConfigMap value as text: strings as written, numbers and booleans as YAML printed them.
fn text<'a>(key: &str, value: &'a Value) -> Result<std::borrow::Cow<'a, str>, Error> {
    match value {
        Value::String(text) => Ok(text.as_str().into()),
        Value::Number(number) => Ok(number.to_string().into()),
        Value::Bool(flag) => Ok(flag.to_string().into()),
        Value::Null => Err(Error::new(path(key), "has no value")
            .with_hint("write a value, or remove the key to keep Knative's default")),
        Value::Array(_) | Value::Object(_) => Err(Error::new(
            path(key),
            "must be a single value, not a list or a map",
        )),
    }
}

fn float(key: &str, value: &Value) -> Result<f64, Error> {
    let text = text(key, value)?;
    parse_float(&text).ok_or_else(|| {
        Error::new(path(key), format!("`{text}` is not a number")).with_hint(example(key))
    })
}

fn count(key: &str, value: &Value) -> Result<u32, Error> {
    let text = text(key, value)?;
    match parse_int32(&text) {
        Some(n) if n >= 0 => Ok(n as u32),
        Some(n) => Err(
            Error::new(path(key), format!("must be at least 0, was {n}")).with_hint(example(key)),
        ),
        None => Err(
            Error::new(path(key), format!("`{text}` is not a whole number"))
                .with_hint(example(key)),
        ),
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool, Error> {
    let text = text(key, value)?;
    parse_bool(&text).ok_or_else(|| {
        Error::new(path(key), format!("`{text}` is not a boolean")).with_hint("write true or false")
    })
}

fn duration(key: &str, value: &Value) -> Result<Duration, Error> {
    let text = text(key, value)?;
    duration::parse(&text).map_err(|message| Error::new(path(key), message).with_hint(example(key)))
}

fn string(key: &str, value: &Value) -> Result<String, Error> {
    match value {
        Value::String(text) => Ok(text.clone()),
        _ => Err(Error::new(path(key), "must be a string").with_hint(example(key))),
    }
}

/// A hint showing the key with a valid value, Knative's default.
fn example(key: &str) -> String {
    let (value, is_duration) = match key {
        "container-concurrency-target-percentage" => ("70", false),
        "container-concurrency-target-default" => ("100", false),
        "requests-per-second-target-default" => ("200", false),
        "target-burst-capacity" => ("211", false),
        "stable-window" => ("60s", true),
        "panic-window-percentage" => ("10", false),
        "panic-threshold-percentage" => ("200", false),
        "max-scale-up-rate" => ("1000", false),
        "max-scale-down-rate" => ("2", false),
        "scale-to-zero-grace-period" => ("30s", true),
        "scale-to-zero-pod-retention-period" | "scale-down-delay" => ("0s", true),
        "pod-autoscaler-class" => (KPA_CLASS, false),
        "activator-capacity" => ("100", false),
        "max-scale-limit" | "min-scale" | "max-scale" => ("0", false),
        _ => ("1", false),
    };
    let what = if is_duration {
        "a Go duration"
    } else {
        "a value"
    };
    format!("write {what} such as `{key}: {value}`")
}

/// Parses a float as Go's `strconv.ParseFloat` does for finite decimal numbers. Infinities and NaN
/// are refused: no setting means anything with them.
pub(super) fn parse_float(text: &str) -> Option<f64> {
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Parses an `int32` as Go's `strconv.ParseInt(text, 10, 32)` does.
pub(super) fn parse_int32(text: &str) -> Option<i32> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a boolean as Go's `strconv.ParseBool` does.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// "Did you mean" for an unknown key: the known keys close to it, or all of them.
pub(super) fn known_keys_hint(key: &str, known: &[&str]) -> String {
    let near: Vec<&str> = known
        .iter()
        .copied()
        .filter(|candidate| {
            edit_distance(key, candidate) <= 3
                || (key.len() >= 4 && (candidate.contains(key) || key.contains(candidate)))
        })
        .collect();
    if near.is_empty() {
        format!("known keys: {}", known.join(", "))
    } else {
        format!("did you mean {}?", quoted(&near))
    }
}

fn quoted(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|key| format!("`{key}`")).collect();
    keys.join(" or ")
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn empty_map_gives_knatives_defaults() {
        let defaults = Defaults::from_map(&Map::new()).unwrap();
        assert_eq!(defaults, Defaults::default());
        assert_eq!(defaults.container_concurrency_target_fraction, 0.7);
        assert_eq!(defaults.stable_window, Duration::from_secs(60));
        assert_eq!(defaults.target_burst_capacity, 211.0);
        assert!(defaults.validate().is_ok());
    }

    #[test]
    fn reads_strings_numbers_and_booleans() {
        let defaults = Defaults::from_map(&map(json!({
            "container-concurrency-target-percentage": "80",
            "container-concurrency-target-default": 50,
            "requests-per-second-target-default": "150.5",
            "target-burst-capacity": -1,
            "stable-window": "1m30s",
            "panic-window-percentage": 20.0,
            "panic-threshold-percentage": "300",
            "max-scale-up-rate": 100,
            "max-scale-down-rate": "4",
            "enable-scale-to-zero": false,
            "scale-to-zero-grace-period": "45s",
            "scale-to-zero-pod-retention-period": "1m",
            "pod-autoscaler-class": "kpa.autoscaling.knative.dev",
            "activator-capacity": 200,
            "activation-scale": 2,
            "initial-scale": "0",
            "allow-zero-initial-scale": "true",
            "min-scale": 1,
            "max-scale": "10",
            "max-scale-limit": 20,
            "scale-down-delay": "15s",
            "_example": "Knative's documentation block is ignored",
        })))
        .unwrap();
        let expected = Defaults {
            container_concurrency_target_fraction: 0.8,
            container_concurrency_target_default: 50.0,
            requests_per_second_target_default: 150.5,
            target_burst_capacity: -1.0,
            stable_window: Duration::from_secs(90),
            panic_window_percentage: 20.0,
            panic_threshold_percentage: 300.0,
            max_scale_up_rate: 100.0,
            max_scale_down_rate: 4.0,
            enable_scale_to_zero: false,
            scale_to_zero_grace_period: Duration::from_secs(45),
            scale_to_zero_pod_retention_period: Duration::from_secs(60),
            pod_autoscaler_class: KPA_CLASS.to_owned(),
            activator_capacity: 200.0,
            activation_scale: 2,
            initial_scale: 0,
            allow_zero_initial_scale: true,
            min_scale: 1,
            max_scale: 10,
            max_scale_limit: 20,
            scale_down_delay: Duration::from_secs(15),
        };
        assert_eq!(defaults, expected);
    }

    #[test]
    fn target_percentage_accepts_legacy_fractions() {
        let fraction = |value: Value| {
            Defaults::from_map(&map(
                json!({ "container-concurrency-target-percentage": value }),
            ))
            .map(|d| d.container_concurrency_target_fraction)
        };
        assert_eq!(fraction(json!(0.5)), Ok(0.5));
        assert_eq!(fraction(json!(1)), Ok(1.0));
        assert_eq!(fraction(json!(100)), Ok(1.0));
        assert_eq!(fraction(json!("70")), Ok(0.7));
    }

    /// Each bad key or value: the key it is reported at and words the message and hint must carry.
    #[test]
    fn bad_settings_name_the_key_and_say_how_to_fix_it() {
        #[rustfmt::skip] // one row per case reads as a table
        let cases: &[(Value, &str, &str, &str)] = &[
            (json!({"stable-windw": "60s"}), "stable-windw", "unknown setting", "`stable-window`"),
            (json!({"enable-scale-to-zero-x": true}), "enable-scale-to-zero-x", "unknown", "enable-scale-to-zero"),
            (json!({"colour": "blue"}), "colour", "unknown setting", "known keys: container-concurrency"),
            (json!({"stable-window": "60"}), "stable-window", "has no unit", "`stable-window: 60s`"),
            (json!({"stable-window": 60}), "stable-window", "has no unit", "Go duration"),
            (json!({"stable-window": "5s"}), "stable-window", "between 6s and 1h, was 5s", "60s"),
            (json!({"stable-window": "2h"}), "stable-window", "was 2h0m0s", "60s"),
            (json!({"stable-window": "6500ms"}), "stable-window", "whole seconds", "round"),
            (json!({"panic-window-percentage": 0.5}), "panic-window-percentage", "between 1 and 100", "10"),
            (json!({"panic-window-percentage": "101"}), "panic-window-percentage", "was 101", "10"),
            (json!({"panic-threshold-percentage": 100}), "panic-threshold-percentage", "between 110 and 1000", "200"),
            (json!({"container-concurrency-target-percentage": 0}), "container-concurrency-target-percentage", "(0, 100]", "70"),
            (json!({"container-concurrency-target-percentage": 150}), "container-concurrency-target-percentage", "(0, 100]", "70"),
            (json!({"container-concurrency-target-default": 0.001}), "container-concurrency-target-default", "below the minimum", "100"),
            (json!({"requests-per-second-target-default": 0}), "requests-per-second-target-default", "at least 0.01", "200"),
            (json!({"max-scale-up-rate": 1}), "max-scale-up-rate", "greater than 1", "1000"),
            (json!({"max-scale-down-rate": "1.0"}), "max-scale-down-rate", "greater than 1", "halves"),
            (json!({"max-scale-up-rate": "fast"}), "max-scale-up-rate", "`fast` is not a number", "`max-scale-up-rate: 1000`"),
            (json!({"max-scale-up-rate": "inf"}), "max-scale-up-rate", "not a number", "1000"),
            (json!({"target-burst-capacity": -2}), "target-burst-capacity", "-1 or at least 0", "always in the request path"),
            (json!({"enable-scale-to-zero": "yes"}), "enable-scale-to-zero", "not a boolean", "true or false"),
            (json!({"scale-to-zero-grace-period": "0s"}), "scale-to-zero-grace-period", "must be positive", "30s"),
            (json!({"scale-to-zero-grace-period": "-5s"}), "scale-to-zero-grace-period", "negative", "30s"),
            (json!({"scale-to-zero-pod-retention-period": "-1m"}), "scale-to-zero-pod-retention-period", "negative", "0s"),
            (json!({"scale-down-delay": "1500ms"}), "scale-down-delay", "whole seconds", "round"),
            (json!({"pod-autoscaler-class": "hpa.autoscaling.knative.dev"}), "pod-autoscaler-class", "not an autoscaler kinetic has", "only has the KPA"),
            (json!({"pod-autoscaler-class": 3}), "pod-autoscaler-class", "must be a string", "kpa.autoscaling"),
            (json!({"activator-capacity": 0.5}), "activator-capacity", "at least 1", "100"),
            (json!({"initial-scale": 0}), "initial-scale", "unless allow-zero-initial-scale", "allow-zero-initial-scale: true"),
            (json!({"initial-scale": -1}), "initial-scale", "at least 0, was -1", "initial-scale: 1"),
            (json!({"initial-scale": 1.5}), "initial-scale", "not a whole number", "initial-scale: 1"),
            (json!({"min-scale": "3000000000"}), "min-scale", "not a whole number", "min-scale: 0"),
            (json!({"min-scale": 5, "max-scale": 3}), "min-scale", "(5) must not exceed max-scale (3)", "lower min-scale"),
            (json!({"max-scale-limit": 10}), "max-scale", "between 1 and max-scale-limit (10), was 0", "must be set too"),
            (json!({"max-scale-limit": 10, "max-scale": 11}), "max-scale", "was 11", "not exceed"),
            (json!({"activation-scale": 0}), "activation-scale", "at least 1", "one instance"),
            (json!({"activation-scale": 4, "max-scale": 3}), "activation-scale", "must not exceed max-scale", "raise max-scale"),
            (json!({"initial-scale": 4, "max-scale": 3}), "initial-scale", "must not exceed max-scale", "raise max-scale"),
            (json!({"min-scale": null}), "min-scale", "has no value", "remove the key"),
            (json!({"min-scale": [1]}), "min-scale", "single value", ""),
        ];
        for (input, key, message, hint) in cases {
            let error = Defaults::from_map(&map(input.clone()))
                .expect_err(&format!("{input} should be refused"));
            assert_eq!(error.path, format!("autoscaler.{key}"), "{input}: {error}");
            assert!(error.message.contains(message), "{input}: {error}");
            let got_hint = error.hint.clone().unwrap_or_default();
            assert!(
                got_hint.contains(hint),
                "{input}: hint `{got_hint}` lacks `{hint}`"
            );
        }
    }

    #[test]
    fn near_keys_are_suggested() {
        assert_eq!(
            known_keys_hint("stable-windw", KEYS),
            "did you mean `stable-window`?"
        );
        assert!(known_keys_hint("max-scale-up", KEYS).contains("`max-scale-up-rate`"));
        assert!(known_keys_hint("minscale", KEYS).contains("`min-scale`"));
        assert!(known_keys_hint("zzz", KEYS).starts_with("known keys: "));
    }

    #[test]
    fn go_number_syntax() {
        assert_eq!(parse_int32("+7"), Some(7));
        assert_eq!(parse_int32("-7"), Some(-7));
        assert_eq!(parse_int32("7.0"), None);
        assert_eq!(parse_int32(" 7"), None);
        assert_eq!(parse_int32("2147483648"), None);
        assert_eq!(parse_float("1e3"), Some(1000.0));
        assert_eq!(parse_float("NaN"), None);
        assert_eq!(parse_bool("T"), Some(true));
        assert_eq!(parse_bool("no"), None);
    }

    #[test]
    fn local_processes_get_a_bounded_max_scale_unless_configured() {
        let map = |pairs: &[(&str, &str)]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect()
        };
        let max = |pairs: &[(&str, &str)]| {
            Defaults::from_map_for_processes(&map(pairs))
                .unwrap()
                .max_scale
        };
        assert_eq!(Defaults::default().max_scale, 0, "Knative's own default");
        assert_eq!(max(&[]), crate::runtime::DEFAULT_MAX_SCALE);
        assert_eq!(max(&[("max-scale", "0")]), 0, "explicitly unbounded");
        assert_eq!(max(&[("max-scale", "3")]), 3);
        assert_eq!(max(&[("min-scale", "25")]), 25);
        assert_eq!(max(&[("max-scale-limit", "4"), ("max-scale", "4")]), 4);
        assert_eq!(max(&[("max-scale-limit", "4")]), 4);
    }
}
