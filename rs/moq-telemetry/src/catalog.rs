//! The metrics this crate records itself: what became of the spans and log records it exports.

use moq_metrics::{Label, Metric, Unit};

const SIGNAL: Label = Label::known("signal", &["traces", "logs"]);

pub const DROPPED: Metric = Metric::counter(
    "moq_telemetry_dropped_total",
    Unit::Count("records"),
    "Spans and log records not delivered to the OTLP collector, by signal (traces|logs) and reason (export_failed).",
)
.labels(&[SIGNAL, Label::known("reason", &["export_failed"])]);

pub const EXPORTED: Metric = Metric::counter(
    "moq_telemetry_exported_total",
    Unit::Count("records"),
    "Spans and log records delivered to the OTLP collector, by signal (traces|logs).",
)
.labels(&[SIGNAL]);

/// Full names: no prefix.
pub const CATALOG: &[Metric] = &[DROPPED, EXPORTED];

/// This crate's catalog, for installers to describe and zero alongside their own.
pub fn catalog() -> moq_metrics::Catalog<'static> {
    moq_metrics::Catalog::new("", CATALOG)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_catalog_is_well_formed() {
        assert_eq!(moq_metrics::lint(&[super::catalog()]), Vec::<String>::new());
    }
}
