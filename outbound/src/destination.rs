//! Where a Destination (`ref` to a Broker or a Service, or a `uri`) is reached: the broker
//! ingress's `{ingress}/{namespace}/{name}`, a Service's URL behind the gateway
//! ([`kinetic_api::meta::service_url`]), or the URL as written. Triggers' subscribers and
//! dead-letter sinks and sources' sinks resolve through the same [`Resolver`].

use kinetic_api::Destination;

use crate::sender::GatewayAddress;

/// Resolves destinations to URLs.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Base URL of the broker ingress, e.g. `http://127.0.0.1:8080`.
    pub ingress_url: String,
    /// The serving gateway, when this process can reach Services.
    pub gateway: Option<GatewayAddress>,
}

impl Resolver {
    pub fn resolve(&self, destination: &Destination, namespace: &str) -> Result<String, String> {
        match (&destination.reference, &destination.uri) {
            (None, Some(uri)) => Ok(uri.clone()),
            (Some(reference), uri) => {
                let namespace = reference.namespace.as_deref().unwrap_or(namespace);
                let base = match reference.kind.as_str() {
                    "Broker" => format!(
                        "{}/{namespace}/{}",
                        self.ingress_url.trim_end_matches('/'),
                        reference.name
                    ),
                    "Service" => match &self.gateway {
                        Some(gateway) => kinetic_api::meta::service_url(
                            &reference.name,
                            namespace,
                            None,
                            &gateway.domain,
                            gateway.address.port(),
                        ),
                        None => {
                            return Err(
                                "a Service destination needs the serving gateway, which runs in `kinetic up`"
                                    .to_owned(),
                            );
                        }
                    },
                    other => {
                        return Err(format!(
                            "a `{other}` destination cannot be resolved; use `uri:`, a Broker or a Service ref"
                        ));
                    }
                };
                Ok(match uri {
                    Some(path) => format!(
                        "{}/{}",
                        base.trim_end_matches('/'),
                        path.trim_start_matches('/')
                    ),
                    None => base,
                })
            }
            (None, None) => Err("the destination has neither `ref` nor `uri`".to_owned()),
        }
    }
}
