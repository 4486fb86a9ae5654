//! Trigger filters with Knative's semantics: the legacy `filter.attributes` and the subscriptions API
//! dialects of `filters` (exact, prefix, suffix, all, any, not, cesql). A trigger's filter is compiled
//! once ([`Filter::compile`]) and evaluated per event ([`Filter::matches`]) with no I/O.

use std::borrow::Cow;

use cloudevents::{AttributesReader, Event};
use kinetic_api::Trigger;
use kinetic_api::eventing::SubscriptionsApiFilter;

use kinetic_cesql::Expression;

/// A compiled filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// No filter: every event matches.
    Everything,
    /// `filter.attributes`: every attribute present; equal to the value unless the value is empty.
    Attributes(Vec<(String, String)>),
    Exact(Vec<(String, String)>),
    Prefix(Vec<(String, String)>),
    Suffix(Vec<(String, String)>),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Cesql(Box<Expression>),
}

/// A CESQL expression of a trigger that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FilterError {
    /// Field path, e.g. `spec.filters[0].cesql`.
    pub path: String,
    pub message: String,
}

impl Filter {
    /// Compiles a trigger's filter. `filters`, when non-empty, overrides `filter` (as in Knative).
    pub fn compile(trigger: &Trigger) -> Result<Filter, FilterError> {
        if !trigger.spec.filters.is_empty() {
            return Self::compile_all(&trigger.spec.filters, "spec.filters");
        }
        match &trigger.spec.filter {
            Some(filter) if !filter.attributes.is_empty() => Ok(Filter::Attributes(
                filter
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
            _ => Ok(Filter::Everything),
        }
    }

    /// Compiles a list of subscriptions API filters (a Trigger's or an EventPolicy's `filters`),
    /// all of which must match; an empty list matches everything. `path` names the list in errors.
    pub fn compile_all(
        filters: &[SubscriptionsApiFilter],
        path: &str,
    ) -> Result<Filter, FilterError> {
        let mut filters = filters
            .iter()
            .enumerate()
            .map(|(index, filter)| compile_one(filter, &format!("{path}[{index}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match filters.len() {
            0 => Filter::Everything,
            1 => filters.remove(0),
            _ => Filter::All(filters),
        })
    }

    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Filter::Everything => true,
            Filter::Attributes(pairs) => pairs.iter().all(|(name, want)| {
                attribute(event, name)
                    .is_some_and(|value| want.is_empty() || value == want.as_str())
            }),
            Filter::Exact(pairs) => pairs.iter().all(|(name, want)| {
                attribute(event, name).is_some_and(|value| value == want.as_str())
            }),
            Filter::Prefix(pairs) => pairs.iter().all(|(name, want)| {
                attribute(event, name).is_some_and(|value| value.starts_with(want.as_str()))
            }),
            Filter::Suffix(pairs) => pairs.iter().all(|(name, want)| {
                attribute(event, name).is_some_and(|value| value.ends_with(want.as_str()))
            }),
            Filter::All(filters) => filters.iter().all(|f| f.matches(event)),
            Filter::Any(filters) => filters.is_empty() || filters.iter().any(|f| f.matches(event)),
            Filter::Not(filter) => !filter.matches(event),
            Filter::Cesql(expression) => expression.matches(event),
        }
    }
}

impl Filter {
    /// Why `event` does not match, for people (`None` when it matches): the first part of the
    /// filter that fails, and for CESQL the expression and what it gave.
    pub fn explain(&self, event: &Event) -> Option<String> {
        if self.matches(event) {
            return None;
        }
        let pairs = |kind: &str, pairs: &[(String, String)], ok: &dyn Fn(&str, &str) -> bool| {
            pairs
                .iter()
                .find_map(|(name, want)| match attribute(event, name) {
                    None => Some(format!("{kind}: the event has no `{name}`")),
                    Some(value) if !ok(&value, want) => Some(format!(
                        "{kind}: `{name}` is `{value}`, the filter wants `{want}`"
                    )),
                    Some(_) => None,
                })
        };
        Some(match self {
            Filter::Everything => "matches everything".to_owned(),
            Filter::Attributes(list) => pairs("filter.attributes", list, &|value, want| {
                want.is_empty() || value == want
            })
            .unwrap_or_default(),
            Filter::Exact(list) => {
                pairs("exact", list, &|value, want| value == want).unwrap_or_default()
            }
            Filter::Prefix(list) => {
                pairs("prefix", list, &|value, want| value.starts_with(want)).unwrap_or_default()
            }
            Filter::Suffix(list) => {
                pairs("suffix", list, &|value, want| value.ends_with(want)).unwrap_or_default()
            }
            Filter::All(filters) => filters
                .iter()
                .find_map(|f| f.explain(event))
                .map(|why| format!("all: {why}"))
                .unwrap_or_default(),
            Filter::Any(filters) => format!(
                "any: none matches ({})",
                filters
                    .iter()
                    .filter_map(|f| f.explain(event))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Filter::Not(_) => "not: the inner filter matches".to_owned(),
            Filter::Cesql(expression) => {
                let evaluation = expression.evaluate(event);
                match evaluation.error {
                    Some(error) => format!("CESQL `{expression}` raised {error}"),
                    None => format!("CESQL `{expression}` is {}", evaluation.value),
                }
            }
        })
    }
}

fn compile_one(filter: &SubscriptionsApiFilter, path: &str) -> Result<Filter, FilterError> {
    let pairs = |map: &std::collections::BTreeMap<String, String>| -> Vec<(String, String)> {
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    if let Some(map) = &filter.exact {
        return Ok(Filter::Exact(pairs(map)));
    }
    if let Some(map) = &filter.prefix {
        return Ok(Filter::Prefix(pairs(map)));
    }
    if let Some(map) = &filter.suffix {
        return Ok(Filter::Suffix(pairs(map)));
    }
    if let Some(list) = &filter.all {
        return list
            .iter()
            .enumerate()
            .map(|(i, f)| compile_one(f, &format!("{path}.all[{i}]")))
            .collect::<Result<_, _>>()
            .map(Filter::All);
    }
    if let Some(list) = &filter.any {
        return list
            .iter()
            .enumerate()
            .map(|(i, f)| compile_one(f, &format!("{path}.any[{i}]")))
            .collect::<Result<_, _>>()
            .map(Filter::Any);
    }
    if let Some(inner) = &filter.not {
        return Ok(Filter::Not(Box::new(compile_one(
            inner,
            &format!("{path}.not"),
        )?)));
    }
    if let Some(text) = &filter.cesql {
        return Expression::parse(text)
            .map(|expression| Filter::Cesql(Box::new(expression)))
            .map_err(|error| FilterError {
                path: format!("{path}.cesql"),
                message: format!("is not valid CESQL: {error}"),
            });
    }
    // Validation refuses empty filters before they get here; treat one as matching nothing new.
    Ok(Filter::Everything)
}

/// An attribute's value as text, or `None` when the event does not have it. Context attributes are
/// read by name; anything else is an extension.
pub fn attribute<'a>(event: &'a Event, name: &str) -> Option<Cow<'a, str>> {
    match name {
        "specversion" => Some(Cow::Borrowed(kinetic_api::cloudevent::spec_version(event))),
        "id" => Some(Cow::Borrowed(event.id())),
        "source" => Some(Cow::Borrowed(event.source().as_str())),
        "type" => Some(Cow::Borrowed(event.ty())),
        "subject" => event.subject().map(Cow::Borrowed),
        "datacontenttype" => event.datacontenttype().map(Cow::Borrowed),
        "dataschema" | "schemaurl" => event.dataschema().map(|url| Cow::Borrowed(url.as_str())),
        "time" => event
            .time()
            .map(|time| Cow::Owned(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
        _ => event.extension(name).map(|value| match value {
            cloudevents::event::ExtensionValue::String(text) => Cow::Borrowed(text.as_str()),
            other => Cow::Owned(other.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event() -> Event {
        EventBuilderV10::new()
            .id("1")
            .source("/shop/orders")
            .ty("com.example.order.created")
            .subject("uploads/cat.png")
            .extension("region", "eu-west")
            .extension("priority", 5i64)
            .build()
            .unwrap()
    }

    fn trigger(spec: &str) -> Trigger {
        let yaml = format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: b\n  subscriber: {{uri: 'http://127.0.0.1:1/'}}\n{spec}"
        );
        match kinetic_api::parse_documents("t.yaml", &yaml)
            .unwrap()
            .remove(0)
        {
            kinetic_api::Resource::Trigger(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_filter_says_why_an_event_does_not_match() {
        let explain = |spec: &str| Filter::compile(&trigger(spec)).unwrap().explain(&event());
        assert_eq!(
            explain("  filter: {attributes: {type: com.example.order.created}}\n"),
            None
        );
        assert_eq!(
            explain("  filters: [{exact: {type: com.example.other}}]\n").unwrap(),
            "exact: `type` is `com.example.order.created`, the filter wants `com.example.other`"
        );
        assert_eq!(
            explain("  filters: [{prefix: {color: r}}]\n").unwrap(),
            "prefix: the event has no `color`"
        );
        assert_eq!(
            explain("  filters: [{cesql: \"priority > 7\"}]\n").unwrap(),
            "CESQL `priority > 7` is false"
        );
        let error = explain("  filters: [{cesql: \"priority / 0 = 1\"}]\n").unwrap();
        assert!(
            error.starts_with("CESQL `priority / 0 = 1` raised "),
            "{error}"
        );
        assert!(
            explain("  filters: [{all: [{exact: {region: eu-west}}, {suffix: {source: /x}}]}]\n")
                .unwrap()
                .starts_with("all: suffix: `source` is `/shop/orders`")
        );
    }

    fn check(spec: &str, want: bool) {
        let filter = Filter::compile(&trigger(spec)).unwrap();
        assert_eq!(filter.matches(&event()), want, "{spec}");
    }

    #[test]
    fn legacy_attributes() {
        check("", true);
        check(
            "  filter: {attributes: {type: com.example.order.created}}\n",
            true,
        );
        check(
            "  filter: {attributes: {type: com.example.order.created, source: /other}}\n",
            false,
        );
        check("  filter: {attributes: {region: ''}}\n", true);
        check("  filter: {attributes: {missing: ''}}\n", false);
        check("  filter: {attributes: {dataschema: ''}}\n", false);
        check("  filter: {attributes: {priority: '5'}}\n", true);
    }

    #[test]
    fn subscriptions_api_dialects() {
        check(
            "  filters: [{exact: {type: com.example.order.created}}]\n",
            true,
        );
        check("  filters: [{exact: {type: com.example.order}}]\n", false);
        check("  filters: [{exact: {missing: x}}]\n", false);
        check("  filters: [{prefix: {type: com.example.}}]\n", true);
        check("  filters: [{prefix: {missing: x}}]\n", false);
        check("  filters: [{suffix: {subject: .png}}]\n", true);
        check("  filters: [{suffix: {subject: .jpg}}]\n", false);
        check(
            "  filters: [{prefix: {type: com.}}, {suffix: {subject: .jpg}}]\n",
            false,
        );
        check(
            "  filters: [{any: [{suffix: {subject: .jpg}}, {suffix: {subject: .png}}]}]\n",
            true,
        );
        check(
            "  filters: [{all: [{suffix: {subject: .png}}, {exact: {region: eu-west}}]}]\n",
            true,
        );
        check("  filters: [{not: {exact: {region: eu-west}}}]\n", false);
        check("  filters: [{not: {exact: {region: us}}}]\n", true);
        check(
            "  filters: [{cesql: \"subject LIKE 'uploads/%.png' AND priority > 3\"}]\n",
            true,
        );
        check("  filters: [{cesql: \"priority > 9\"}]\n", false);
        // An evaluation error is no match.
        check("  filters: [{cesql: \"missingattr = 'x'\"}]\n", false);
        // `filters` overrides `filter`.
        check(
            "  filter: {attributes: {type: nope}}\n  filters: [{exact: {region: eu-west}}]\n",
            true,
        );
    }

    #[test]
    fn bad_cesql_names_the_path() {
        let error =
            Filter::compile(&trigger("  filters: [{all: [{cesql: \"type = \"}]}]\n")).unwrap_err();
        assert_eq!(error.path, "spec.filters[0].all[0].cesql");
    }
}
