//! The KPA autoscaler.
