//! A revision's effective autoscaling settings: the `config-autoscaler` defaults overridden by the
//! revision template's `autoscaling.knative.dev/*` annotations, validated as Knative's webhook does
//! and resolved as Knative's `MakeDecider`, `MakeMetric` and `ResolveMetricTarget` do.

use std::collections::BTreeMap;
use std::time::Duration;

use kinetic_api::Error;

use super::config::{
    Defaults, HPA_CLASS, KPA_CLASS, PANIC_THRESHOLD_PERCENTAGE_RANGE,
    PANIC_WINDOW_PERCENTAGE_RANGE, RPS_TARGET_UTILIZATION, TARGET_MIN, WINDOW_MAX, WINDOW_MIN,
    known_keys_hint, parse_float, parse_int32, whole_seconds,
};
use super::duration;

/// Knative's default progress deadline (600 s) plus the 30 s buffer its KPA adds before giving up
/// on an activation.
pub const DEFAULT_ACTIVATION_TIMEOUT: Duration = Duration::from_secs(630);

const PREFIX: &str = "autoscaling.knative.dev/";

/// Every annotation kinetic reads: the current name first, then Knative's older camelCase alias.
const ANNOTATIONS: &[&[&str]] = &[
    &["class"],
    &["metric"],
    &["target"],
    &[
        "target-utilization-percentage",
        "targetUtilizationPercentage",
    ],
    &["target-burst-capacity", "targetBurstCapacity"],
    &["window"],
    &["panic-window-percentage", "panicWindowPercentage"],
    &["panic-threshold-percentage", "panicThresholdPercentage"],
    &["min-scale", "minScale"],
    &["max-scale", "maxScale"],
    &["initial-scale", "initialScale"],
    &["activation-scale"],
    &["scale-down-delay", "scaleDownDelay"],
    &[
        "scale-to-zero-pod-retention-period",
        "scaleToZeroPodRetentionPeriod",
    ],
    &["metric-aggregation-algorithm", "metricAggregationAlgorithm"],
];

/// The metric a revision scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// In-flight requests across the revision's instances (Knative's default).
    Concurrency,
    /// Requests per second across the revision's instances.
    Rps,
}

/// A revision's effective autoscaling settings, the union of Knative's `DeciderSpec`, `MetricSpec`
/// and the bounds its KPA reconciler applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub metric: Metric,
    /// The metric value per instance the autoscaler aims for (after utilization).
    pub target: f64,
    /// The metric value one instance can take at most (before utilization): the per-instance
    /// capacity used for excess burst capacity.
    pub total_value: f64,
    /// -1: the activator is always in the path; 0: only while at zero; otherwise the spare
    /// concurrency to keep before taking the activator out.
    pub target_burst_capacity: f64,
    /// Panic when the panic-window metric asks for this multiple of the ready instances.
    pub panic_threshold: f64,
    pub stable_window: Duration,
    /// Whole seconds, at least 1 s.
    pub panic_window: Duration,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub scale_down_delay: Duration,
    pub min_scale: u32,
    /// 0 is unbounded.
    pub max_scale: u32,
    pub initial_scale: u32,
    /// Instances to start when scaling up from zero; values below 2 change nothing.
    pub activation_scale: u32,
    pub enable_scale_to_zero: bool,
    pub scale_to_zero_grace_period: Duration,
    pub scale_to_zero_pod_retention_period: Duration,
    /// How long a revision may stay activating (instances asked for, not enough ready) before the
    /// KPA gives up and lets it scale to zero. Not an autoscaling annotation: the caller sets it
    /// from the revision's progress deadline.
    pub activation_timeout: Duration,
}

impl Config {
    /// The settings of a revision without autoscaling annotations.
    pub fn from_defaults(defaults: &Defaults, container_concurrency: u32) -> Config {
        let (target, total_value) = resolve_target(
            defaults,
            Metric::Concurrency,
            container_concurrency,
            None,
            None,
        );
        Config {
            metric: Metric::Concurrency,
            target,
            total_value,
            target_burst_capacity: defaults.target_burst_capacity,
            panic_threshold: defaults.panic_threshold_percentage / 100.0,
            stable_window: defaults.stable_window,
            panic_window: panic_window(defaults.stable_window, defaults.panic_window_percentage),
            max_scale_up_rate: defaults.max_scale_up_rate,
            max_scale_down_rate: defaults.max_scale_down_rate,
            scale_down_delay: defaults.scale_down_delay,
            min_scale: defaults.min_scale,
            max_scale: defaults.max_scale,
            initial_scale: defaults.initial_scale,
            activation_scale: defaults.activation_scale,
            enable_scale_to_zero: defaults.enable_scale_to_zero,
            scale_to_zero_grace_period: defaults.scale_to_zero_grace_period,
            scale_to_zero_pod_retention_period: defaults.scale_to_zero_pod_retention_period,
            activation_timeout: DEFAULT_ACTIVATION_TIMEOUT,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_defaults(&Defaults::default(), 0)
    }
}

/// Resolves a revision's settings from the cluster defaults, the revision template's annotations
/// and its `containerConcurrency` (0 = unlimited). Errors carry the path
/// `metadata.annotations[<key>]`, relative to the revision template.
pub fn revision_config(
    defaults: &Defaults,
    annotations: &BTreeMap<String, String>,
    container_concurrency: u32,
) -> Result<Config, Error> {
    refuse_unknown(annotations)?;
    let a = Annotations(annotations);
    let mut config = Config::from_defaults(defaults, container_concurrency);

    if let Some((key, class)) = a.get("class")
        && class != KPA_CLASS
    {
        let hint = if class == HPA_CLASS {
            "kinetic scales revisions with the KPA only; remove the annotation"
        } else {
            "remove the annotation or set `kpa.autoscaling.knative.dev`"
        };
        return Err(
            invalid(key, format!("`{class}` is not an autoscaler kinetic has")).with_hint(hint),
        );
    }
    if let Some((key, metric)) = a.get("metric") {
        config.metric = match metric {
            "concurrency" => Metric::Concurrency,
            "rps" => Metric::Rps,
            "cpu" | "memory" => {
                return Err(invalid(
                    key,
                    format!("`{metric}` needs Knative's HPA class, which kinetic does not have"),
                )
                .with_hint("the KPA scales on `concurrency` or `rps`"));
            }
            _ => {
                return Err(
                    invalid(key, format!("`{metric}` is not a metric the KPA scales on"))
                        .with_hint("use `concurrency` or `rps`"),
                );
            }
        };
    }
    if let Some((key, algorithm)) = a.get("metric-aggregation-algorithm")
        && algorithm != "linear"
    {
        return Err(invalid(
            key,
            format!("`{algorithm}` averaging is not supported by kinetic"),
        )
        .with_hint("remove the annotation or set `linear`"));
    }

    let target = a.float("target")?;
    if let Some((key, value)) = target
        && value < TARGET_MIN
    {
        return Err(
            invalid(key, format!("must be at least {TARGET_MIN}, was {value}")).with_hint(
                "the target is the concurrency (or requests per second) per instance to aim for",
            ),
        );
    }
    let utilization = a.float_in("target-utilization-percentage", (1.0, 100.0), "70")?;
    (config.target, config.total_value) = resolve_target(
        defaults,
        config.metric,
        container_concurrency,
        target.map(|(_, value)| value),
        utilization.map(|percentage| percentage / 100.0),
    );

    if let Some((key, tbc)) = a.float("target-burst-capacity")? {
        if tbc < 0.0 && tbc != -1.0 {
            return Err(invalid(key, format!("must be -1 or at least 0, was {tbc}")).with_hint(
                "use -1 to keep the activator always in the request path, 0 to take it out whenever instances run",
            ));
        }
        config.target_burst_capacity = tbc;
    }
    if let Some(percentage) = a.float_in(
        "panic-threshold-percentage",
        PANIC_THRESHOLD_PERCENTAGE_RANGE,
        "200",
    )? {
        config.panic_threshold = percentage / 100.0;
    }
    if let Some((key, window)) = a.duration("window")? {
        if !(WINDOW_MIN..=WINDOW_MAX).contains(&window) {
            return Err(invalid(
                key,
                format!(
                    "must be between 6s and 1h, was {}",
                    duration::format(window)
                ),
            )
            .with_hint("write a Go duration such as `60s`"));
        }
        if !whole_seconds(window) {
            return Err(
                invalid(key, "must be whole seconds").with_hint("round it to seconds, e.g. `60s`")
            );
        }
        config.stable_window = window;
    }
    let panic_percentage = a
        .float_in(
            "panic-window-percentage",
            PANIC_WINDOW_PERCENTAGE_RANGE,
            "10",
        )?
        .unwrap_or(defaults.panic_window_percentage);
    config.panic_window = panic_window(config.stable_window, panic_percentage);
    if let Some((key, delay)) = a.duration("scale-down-delay")? {
        if delay > WINDOW_MAX {
            return Err(invalid(
                key,
                format!("must be at most 1h, was {}", duration::format(delay)),
            )
            .with_hint("write a Go duration such as `15m`"));
        }
        if !whole_seconds(delay) {
            return Err(
                invalid(key, "must be whole seconds").with_hint("round it to seconds, e.g. `15s`")
            );
        }
        config.scale_down_delay = delay;
    }
    if let Some((key, retention)) = a.duration("scale-to-zero-pod-retention-period")? {
        if retention > WINDOW_MAX {
            return Err(invalid(
                key,
                format!("must be at most 1h, was {}", duration::format(retention)),
            )
            .with_hint("write a Go duration such as `5m`"));
        }
        config.scale_to_zero_pod_retention_period = retention;
    }

    scale_bounds(defaults, &a, &mut config)?;
    Ok(config)
}

/// min-scale, max-scale, activation-scale and initial-scale, checked against each other and
/// against `max-scale-limit`.
fn scale_bounds(
    defaults: &Defaults,
    a: &Annotations<'_>,
    config: &mut Config,
) -> Result<(), Error> {
    let min = a.count("min-scale")?;
    let max = a.count("max-scale")?;
    if let Some((key, max)) = max {
        let limit = defaults.max_scale_limit;
        if limit > 0 && max == 0 {
            return Err(invalid(
                key,
                format!("0 (unbounded) is above max-scale-limit ({limit})"),
            )
            .with_hint(format!("set a value between 1 and {limit}")));
        }
        if limit > 0 && max > limit {
            return Err(
                invalid(key, format!("{max} is above max-scale-limit ({limit})"))
                    .with_hint(format!("set a value between 1 and {limit}")),
            );
        }
        config.max_scale = max;
    }
    if let Some((_, min)) = min {
        config.min_scale = min;
    }
    if config.max_scale > 0 && config.min_scale > config.max_scale {
        let (key, what) = match (max, min) {
            (Some((key, _)), _) => (key, "max-scale"),
            (None, Some((key, _))) => (key, "min-scale"),
            (None, None) => unreachable!("validated defaults have min-scale <= max-scale"),
        };
        return Err(invalid(
            key,
            format!(
                "max-scale ({}) is less than min-scale ({})",
                config.max_scale, config.min_scale
            ),
        )
        .with_hint(format!(
            "raise max-scale or lower min-scale (this {what} comes from the annotation)"
        )));
    }

    if let Some((key, text)) = a.get("activation-scale") {
        let Some(scale) = parse_int32(text) else {
            return Err(invalid(key, format!("`{text}` is not a whole number"))
                .with_hint("write a number of instances, at least 2"));
        };
        let bad = |message: String, hint: &str| Err(invalid(key, message).with_hint(hint));
        if i64::from(config.min_scale) > i64::from(scale) {
            return bad(
                format!(
                    "min-scale ({}) is greater than activation-scale ({scale})",
                    config.min_scale
                ),
                "activation-scale only matters above min-scale; raise it or remove it",
            );
        }
        if config.max_scale != 0 && i64::from(config.max_scale) < i64::from(scale) {
            return bad(
                format!(
                    "max-scale ({}) is less than activation-scale ({scale})",
                    config.max_scale
                ),
                "lower activation-scale or raise max-scale",
            );
        }
        if scale < 2 {
            return bad(
                format!("must be greater than 1, was {scale}"),
                "a revision always starts at least 1 instance; remove the annotation",
            );
        }
        config.activation_scale = scale as u32;
    }

    if let Some((key, text)) = a.get("initial-scale") {
        let scale = match parse_int32(text) {
            Some(scale) if scale >= 0 => scale as u32,
            Some(_) => {
                return Err(invalid(key, format!("must be at least 0, was {text}"))
                    .with_hint("write a number of instances"));
            }
            None => {
                return Err(invalid(key, format!("`{text}` is not a whole number"))
                    .with_hint("write a number of instances"));
            }
        };
        if scale == 0 && !defaults.allow_zero_initial_scale {
            return Err(invalid(key, "0 is not allowed by the autoscaler settings").with_hint(
                "set `allow-zero-initial-scale: true` in the autoscaler settings, or start with 1",
            ));
        }
        if config.max_scale > 0 && scale > config.max_scale {
            return Err(invalid(
                key,
                format!("{scale} is above max-scale ({})", config.max_scale),
            )
            .with_hint("lower initial-scale or raise max-scale"));
        }
        config.initial_scale = scale;
    }
    Ok(())
}

/// Knative's `ResolveMetricTarget`: (target, total). `total` is the per-instance capacity: the
/// `target` annotation, else `containerConcurrency`, else the default; for concurrency the
/// annotation is capped by `containerConcurrency`. `target` is `total` times the utilization.
fn resolve_target(
    defaults: &Defaults,
    metric: Metric,
    container_concurrency: u32,
    annotation_target: Option<f64>,
    utilization: Option<f64>,
) -> (f64, f64) {
    let (mut total, default_utilization) = match metric {
        Metric::Rps => (
            defaults.requests_per_second_target_default,
            RPS_TARGET_UTILIZATION,
        ),
        Metric::Concurrency if container_concurrency == 0 => (
            defaults.container_concurrency_target_default,
            defaults.container_concurrency_target_fraction,
        ),
        Metric::Concurrency => (
            f64::from(container_concurrency),
            defaults.container_concurrency_target_fraction,
        ),
    };
    if let Some(target) = annotation_target {
        total = match metric {
            Metric::Concurrency if container_concurrency != 0 => {
                target.min(f64::from(container_concurrency))
            }
            _ => target,
        };
    }
    let target = (total * utilization.unwrap_or(default_utilization)).max(TARGET_MIN);
    (target, total)
}

/// Knative's `MakeMetric`: the stable window times the percentage, rounded to whole seconds (half
/// away from zero, as Go's `Duration.Round`), at least one second.
fn panic_window(stable_window: Duration, percentage: f64) -> Duration {
    let nanos = (stable_window.as_nanos() as f64 * percentage / 100.0) as u64;
    let seconds = (nanos + 500_000_000) / 1_000_000_000;
    Duration::from_secs(seconds.max(1))
}

fn invalid(key: &str, message: impl Into<String>) -> Error {
    Error::new(format!("metadata.annotations[{key}]"), message)
}

fn refuse_unknown(annotations: &BTreeMap<String, String>) -> Result<(), Error> {
    for key in annotations.keys() {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if !ANNOTATIONS.iter().any(|names| names.contains(&name)) {
            let known: Vec<String> = ANNOTATIONS
                .iter()
                .map(|names| format!("{PREFIX}{}", names[0]))
                .collect();
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(
                invalid(key, format!("unknown autoscaling annotation `{key}`"))
                    .with_hint(known_keys_hint(key, &known)),
            );
        }
    }
    Ok(())
}

/// The annotations, read with Knative's key priority: the current name wins over the alias.
struct Annotations<'a>(&'a BTreeMap<String, String>);

impl<'a> Annotations<'a> {
    /// The key that was used (for error paths) and its value.
    fn get(&self, name: &str) -> Option<(&'a str, &'a str)> {
        let names = ANNOTATIONS.iter().find(|names| names[0] == name)?;
        names.iter().find_map(|alias| {
            self.0
                .get_key_value(&format!("{PREFIX}{alias}"))
                .map(|(key, value)| (key.as_str(), value.as_str()))
        })
    }

    fn float(&self, name: &str) -> Result<Option<(&'a str, f64)>, Error> {
        let Some((key, text)) = self.get(name) else {
            return Ok(None);
        };
        parse_float(text)
            .map(|value| Some((key, value)))
            .ok_or_else(|| {
                invalid(key, format!("`{text}` is not a number"))
                    .with_hint("write a number, quoted in YAML: \"10\"")
            })
    }

    fn float_in(
        &self,
        name: &str,
        (low, high): (f64, f64),
        example: &str,
    ) -> Result<Option<f64>, Error> {
        match self.float(name)? {
            Some((key, value)) if !(low..=high).contains(&value) => Err(invalid(
                key,
                format!("must be between {low} and {high}, was {value}"),
            )
            .with_hint(format!("Knative's default is {example}"))),
            found => Ok(found.map(|(_, value)| value)),
        }
    }

    fn count(&self, name: &str) -> Result<Option<(&'a str, u32)>, Error> {
        let Some((key, text)) = self.get(name) else {
            return Ok(None);
        };
        match parse_int32(text) {
            Some(value) if value >= 0 => Ok(Some((key, value as u32))),
            Some(value) => Err(invalid(key, format!("must be at least 0, was {value}"))
                .with_hint("write a number of instances")),
            None => Err(invalid(key, format!("`{text}` is not a whole number"))
                .with_hint("write a number of instances, quoted in YAML: \"3\"")),
        }
    }

    fn duration(&self, name: &str) -> Result<Option<(&'a str, Duration)>, Error> {
        let Some((key, text)) = self.get(name) else {
            return Ok(None);
        };
        duration::parse(text)
            .map(|value| Some((key, value)))
            .map_err(|message| {
                invalid(key, message).with_hint("write a Go duration such as `60s` or `1m30s`")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Annotation names (without the prefix) and values.
    type Pairs = &'static [(&'static str, &'static str)];

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (format!("{PREFIX}{key}"), (*value).to_owned()))
            .collect()
    }

    fn resolve(pairs: &[(&str, &str)], container_concurrency: u32) -> Result<Config, Error> {
        revision_config(
            &Defaults::default(),
            &annotations(pairs),
            container_concurrency,
        )
    }

    #[test]
    fn defaults_resolve_as_knative() {
        let config = resolve(&[], 0).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.metric, Metric::Concurrency);
        assert_eq!((config.target, config.total_value), (70.0, 100.0));
        assert_eq!(config.stable_window, Duration::from_secs(60));
        assert_eq!(config.panic_window, Duration::from_secs(6));
        assert_eq!(config.panic_threshold, 2.0);
        assert_eq!(config.target_burst_capacity, 211.0);
        assert_eq!(
            (config.min_scale, config.max_scale, config.initial_scale),
            (0, 0, 1)
        );
        assert_eq!(config.activation_timeout, DEFAULT_ACTIVATION_TIMEOUT);
    }

    /// (annotations, containerConcurrency, target, total): Knative's `ResolveMetricTarget`.
    #[test]
    fn targets_resolve_as_knative() {
        #[rustfmt::skip] // one row per case reads as a table
        let cases: &[(Pairs, u32, f64, f64)] = &[
            (&[], 0, 70.0, 100.0),
            (&[], 10, 7.0, 10.0),
            (&[("target", "50")], 0, 35.0, 50.0),
            // The annotation cannot ask for more than the container accepts.
            (&[("target", "50")], 10, 7.0, 10.0),
            (&[("target", "5")], 10, 3.5, 5.0),
            (&[("target-utilization-percentage", "80")], 0, 80.0, 100.0),
            (&[("targetUtilizationPercentage", "50"), ("target", "10")], 0, 5.0, 10.0),
            (&[("metric", "rps")], 0, 140.0, 200.0),
            // containerConcurrency does not cap an rps target.
            (&[("metric", "rps"), ("target", "300")], 10, 210.0, 300.0),
            (&[("metric", "rps"), ("target-utilization-percentage", "100")], 0, 200.0, 200.0),
            (&[("target", "0.01"), ("target-utilization-percentage", "1")], 0, TARGET_MIN, 0.01),
        ];
        for (pairs, cc, target, total) in cases {
            let config = resolve(pairs, *cc).unwrap();
            assert_eq!(
                (config.target, config.total_value),
                (*target, *total),
                "{pairs:?} cc={cc}"
            );
        }
    }

    #[test]
    fn panic_window_is_a_rounded_share_of_the_stable_window() {
        #[rustfmt::skip] // one row per case reads as a table
        let cases: &[(&[(&str, &str)], u64)] = &[
            (&[("window", "30s")], 3),
            (&[("window", "6s")], 1),
            (&[("panic-window-percentage", "15")], 9),
            (&[("window", "10s"), ("panic-window-percentage", "15")], 2),
            (&[("window", "10s"), ("panicWindowPercentage", "14")], 1),
            (&[("window", "1h"), ("panic-window-percentage", "100")], 3600),
        ];
        for (pairs, seconds) in cases {
            let config = resolve(pairs, 0).unwrap();
            assert_eq!(
                config.panic_window,
                Duration::from_secs(*seconds),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn annotations_override_defaults() {
        let config = resolve(
            &[
                ("class", KPA_CLASS),
                ("min-scale", "2"),
                ("max-scale", "10"),
                ("initial-scale", "3"),
                ("activation-scale", "4"),
                ("target-burst-capacity", "-1"),
                ("panic-threshold-percentage", "150"),
                ("scale-down-delay", "5m"),
                ("scale-to-zero-pod-retention-period", "1m30s"),
                ("metric-aggregation-algorithm", "linear"),
            ],
            0,
        )
        .unwrap();
        assert_eq!((config.min_scale, config.max_scale), (2, 10));
        assert_eq!((config.initial_scale, config.activation_scale), (3, 4));
        assert_eq!(config.target_burst_capacity, -1.0);
        assert_eq!(config.panic_threshold, 1.5);
        assert_eq!(config.scale_down_delay, Duration::from_secs(300));
        assert_eq!(
            config.scale_to_zero_pod_retention_period,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn old_aliases_work_and_current_names_win() {
        let config = resolve(&[("minScale", "1"), ("maxScale", "5")], 0).unwrap();
        assert_eq!((config.min_scale, config.max_scale), (1, 5));
        let config = resolve(&[("minScale", "1"), ("min-scale", "3")], 0).unwrap();
        assert_eq!(config.min_scale, 3);
        // Other prefixes are not the autoscaler's business.
        let mut other = annotations(&[]);
        other.insert("serving.knative.dev/creator".into(), "someone".into());
        other.insert("autoscaling.internal.knative.dev/x".into(), "y".into());
        assert!(revision_config(&Defaults::default(), &other, 0).is_ok());
    }

    #[test]
    fn defaults_bound_annotations() {
        let defaults = Defaults {
            max_scale: 5,
            max_scale_limit: 10,
            allow_zero_initial_scale: true,
            ..Defaults::default()
        };
        let resolve = |pairs: &[(&str, &str)]| revision_config(&defaults, &annotations(pairs), 0);
        assert_eq!(resolve(&[]).unwrap().max_scale, 5);
        assert_eq!(resolve(&[("max-scale", "10")]).unwrap().max_scale, 10);
        assert_eq!(resolve(&[("initial-scale", "0")]).unwrap().initial_scale, 0);
        let error = resolve(&[("max-scale", "11")]).unwrap_err();
        assert_eq!(
            error.path,
            "metadata.annotations[autoscaling.knative.dev/max-scale]"
        );
        assert!(
            error.message.contains("above max-scale-limit (10)"),
            "{error}"
        );
        let error = resolve(&[("maxScale", "0")]).unwrap_err();
        assert_eq!(
            error.path,
            "metadata.annotations[autoscaling.knative.dev/maxScale]"
        );
        assert!(error.message.contains("0 (unbounded)"), "{error}");
        // min-scale above the default max-scale.
        let error = resolve(&[("min-scale", "6")]).unwrap_err();
        assert_eq!(
            error.path,
            "metadata.annotations[autoscaling.knative.dev/min-scale]"
        );
        assert!(
            error
                .message
                .contains("max-scale (5) is less than min-scale (6)"),
            "{error}"
        );
    }

    /// Each bad annotation: the key it is reported at and words the message and hint must carry.
    #[test]
    fn bad_annotations_name_the_key_and_say_how_to_fix_it() {
        #[rustfmt::skip] // one row per case reads as a table
        let cases: &[(Pairs, &str, &str, &str)] = &[
            (&[("minscale", "1")], "minscale", "unknown autoscaling annotation", "min-scale"),
            (&[("windoww", "60s")], "windoww", "unknown", "autoscaling.knative.dev/window"),
            (&[("colour", "1")], "colour", "unknown", "known keys"),
            (&[("class", HPA_CLASS)], "class", "not an autoscaler kinetic has", "KPA only"),
            (&[("class", "custom")], "class", "`custom`", "kpa.autoscaling.knative.dev"),
            (&[("metric", "cpu")], "metric", "HPA class", "`concurrency` or `rps`"),
            (&[("metric", "qps")], "metric", "not a metric", "`concurrency` or `rps`"),
            (&[("metric-aggregation-algorithm", "weighted-exponential")], "metric-aggregation-algorithm", "not supported", "linear"),
            (&[("target", "0")], "target", "at least 0.01", "per instance"),
            (&[("target", "ten")], "target", "`ten` is not a number", "write a number"),
            (&[("target", "NaN")], "target", "not a number", "write a number"),
            (&[("target-utilization-percentage", "0")], "target-utilization-percentage", "between 1 and 100", "70"),
            (&[("targetUtilizationPercentage", "101")], "targetUtilizationPercentage", "was 101", "70"),
            (&[("target-burst-capacity", "-2")], "target-burst-capacity", "-1 or at least 0", "always in the request path"),
            (&[("window", "5s")], "window", "between 6s and 1h, was 5s", "60s"),
            (&[("window", "2h")], "window", "was 2h0m0s", "60s"),
            (&[("window", "6500ms")], "window", "whole seconds", "round"),
            (&[("window", "60")], "window", "has no unit", "Go duration"),
            (&[("panic-window-percentage", "0.5")], "panic-window-percentage", "between 1 and 100", "10"),
            (&[("panic-threshold-percentage", "100")], "panic-threshold-percentage", "between 110 and 1000", "200"),
            (&[("panicThresholdPercentage", "1001")], "panicThresholdPercentage", "was 1001", "200"),
            (&[("min-scale", "-1")], "min-scale", "at least 0, was -1", "number of instances"),
            (&[("max-scale", "many")], "max-scale", "not a whole number", "quoted"),
            (&[("min-scale", "5"), ("max-scale", "3")], "max-scale", "max-scale (3) is less than min-scale (5)", "raise max-scale"),
            (&[("activation-scale", "1")], "activation-scale", "greater than 1", "remove the annotation"),
            (&[("activation-scale", "x")], "activation-scale", "not a whole number", "at least 2"),
            (&[("activation-scale", "5"), ("max-scale", "3")], "activation-scale", "max-scale (3) is less than activation-scale (5)", "lower"),
            (&[("activation-scale", "2"), ("min-scale", "3")], "activation-scale", "min-scale (3) is greater than activation-scale (2)", "raise it"),
            (&[("initial-scale", "0")], "initial-scale", "not allowed", "allow-zero-initial-scale: true"),
            (&[("initialScale", "-1")], "initialScale", "at least 0", "number of instances"),
            (&[("initial-scale", "4"), ("max-scale", "3")], "initial-scale", "above max-scale (3)", "lower initial-scale"),
            (&[("scale-down-delay", "2h")], "scale-down-delay", "at most 1h", "15m"),
            (&[("scaleDownDelay", "1500ms")], "scaleDownDelay", "whole seconds", "15s"),
            (&[("scale-down-delay", "-1s")], "scale-down-delay", "negative", "Go duration"),
            (&[("scale-to-zero-pod-retention-period", "2h")], "scale-to-zero-pod-retention-period", "at most 1h", "5m"),
            (&[("scaleToZeroPodRetentionPeriod", "soon")], "scaleToZeroPodRetentionPeriod", "not a duration", "Go duration"),
        ];
        for (pairs, key, message, hint) in cases {
            let error = resolve(pairs, 0).expect_err(&format!("{pairs:?} should be refused"));
            assert_eq!(
                error.path,
                format!("metadata.annotations[{PREFIX}{key}]"),
                "{pairs:?}: {error}"
            );
            assert!(error.message.contains(message), "{pairs:?}: {error}");
            let got_hint = error.hint.clone().unwrap_or_default();
            assert!(
                got_hint.contains(hint),
                "{pairs:?}: hint `{got_hint}` lacks `{hint}`"
            );
        }
    }
}
