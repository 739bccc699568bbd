//! Prometheus metrics of the executor.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-function series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FunctionLabels {
    pub function_namespace: String,
    pub function_name: String,
}

/// Labels of per-environment series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EnvLabels {
    pub environment_namespace: String,
    pub environment_name: String,
}

/// Labels of the specialization histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpecializationLabels {
    /// `nodejs` / `python`.
    pub runtime: String,
    /// `success` / `failure`.
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn specialization_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every series the executor exports.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// `fission_cold_starts_total`: specializations that served a request.
    pub cold_starts: Counter,
    /// `fission_function_cold_starts_total{function_namespace,function_name}`.
    pub function_cold_starts: Family<FunctionLabels, Counter>,
    /// `fission_function_specialization_failures_total{…}`.
    pub specialization_failures: Family<FunctionLabels, Counter>,
    /// `fission_specialization_duration_seconds{runtime,outcome}`: code fetch + load, as seen by
    /// the executor (from taking a generic instance to the runtime's answer).
    pub specialization_seconds: HistogramFamily<SpecializationLabels>,
    /// `fission_pool_ready_instances{environment_namespace,environment_name}`: started generic
    /// instances waiting in the pool.
    pub pool_ready: Family<EnvLabels, Gauge>,
    /// `fission_function_instances{function_namespace,function_name}`: specialized instances.
    pub function_instances: Family<FunctionLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            cold_starts: Counter::default(),
            function_cold_starts: Family::default(),
            specialization_failures: Family::default(),
            specialization_seconds: Family::new_with_constructor(
                specialization_histogram as fn() -> Histogram,
            ),
            pool_ready: Family::default(),
            function_instances: Family::default(),
        };
        registry.register(
            "fission_cold_starts",
            "Cold starts (specializations serving a request)",
            m.cold_starts.clone(),
        );
        registry.register(
            "fission_function_cold_starts",
            "Cold starts per function",
            m.function_cold_starts.clone(),
        );
        registry.register(
            "fission_function_specialization_failures",
            "Failed specializations per function",
            m.specialization_failures.clone(),
        );
        registry.register(
            "fission_specialization_duration_seconds",
            "Time from taking a generic instance to the runtime accepting the function",
            m.specialization_seconds.clone(),
        );
        registry.register(
            "fission_pool_ready_instances",
            "Generic instances ready in an environment's warm pool",
            m.pool_ready.clone(),
        );
        registry.register(
            "fission_function_instances",
            "Specialized instances per function",
            m.function_instances.clone(),
        );
        m
    }

    /// Metrics attached to a throwaway registry (tests).
    #[cfg(test)]
    pub(crate) fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }
}

pub(crate) fn function_labels(namespace: &str, name: &str) -> FunctionLabels {
    FunctionLabels {
        function_namespace: namespace.to_owned(),
        function_name: name.to_owned(),
    }
}
