//! The built-in cases, declared once.
//!
//! Every fact the gateway knows about a built-in case (its name, its signal, whether it needs the
//! enterprise exporter, whether it is the root span of its run, its span name and the metric it
//! records) sits on that case's row of [`built_in_cases!`]. The enum, [`TelemetryCase::BUILT_IN`],
//! the names, the routing table's built-in rows (`routing`) and the mapping's span names and
//! instruments (`export::mapping`) are all read from the rows; none of them repeats a fact.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The two kinds of data an event can be, which decide where the gateway sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalType {
    /// Trace-shaped: becomes a span (plus companion logs and metrics) in the trace batcher.
    Trace,
    /// Metric/log only: handled by the metric handler pool.
    MetricLog,
}

impl SignalType {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalType::Trace => "trace",
            SignalType::MetricLog => "metric_log",
        }
    }
}

/// The metric a built-in case records beside `{ns}.requests.total` and `{ns}.tokens.total`
/// (instrument names are below the namespace: `{ns}.<instrument>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseMetric {
    /// The payload's duration (`duration_ms`, `elapsed_time`…) in a histogram, in seconds, with
    /// the event's status.
    Duration {
        /// Instrument name below the namespace.
        instrument: &'static str,
        /// Its description.
        description: &'static str,
    },
    /// One per event in a counter.
    Count {
        /// Instrument name below the namespace.
        instrument: &'static str,
        /// Its description.
        description: &'static str,
        /// Its unit (UCUM annotation, e.g. `{app}`).
        unit: &'static str,
    },
    /// One per event in a counter, with one payload field as an attribute.
    CountBy {
        /// Instrument name below the namespace.
        instrument: &'static str,
        /// Its description.
        description: &'static str,
        /// Its unit (UCUM annotation).
        unit: &'static str,
        /// The payload field copied to the attribute of the same name.
        field: &'static str,
        /// What the field holds.
        value: FieldValue,
    },
}

/// The kind of payload field a [`CaseMetric::CountBy`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue {
    /// A string; `default` when the field is missing or not a string.
    Text {
        /// The attribute value of a missing field.
        default: &'static str,
    },
    /// A boolean; `false` when missing.
    Flag,
}

impl CaseMetric {
    /// The instrument name below the namespace.
    pub fn instrument(&self) -> &'static str {
        match self {
            CaseMetric::Duration { instrument, .. }
            | CaseMetric::Count { instrument, .. }
            | CaseMetric::CountBy { instrument, .. } => instrument,
        }
    }
}

/// Everything the gateway knows about one built-in case: one row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseFacts {
    /// The stable snake_case name, as used in configuration and on the wire.
    pub name: &'static str,
    /// Where it goes (the routing table's default).
    pub signal: SignalType,
    /// Dropped while the enterprise exporter is off (the routing table's default).
    pub enterprise_only: bool,
    /// The root span of its run (the routing table's default).
    pub root_span: bool,
    /// Its span name below the namespace (`{ns}.<span_name>`).
    pub span_name: &'static str,
    /// The metric it records.
    pub metric: CaseMetric,
}

/// Declares the built-in cases from one table: the enum's variants, [`TelemetryCase::BUILT_IN`],
/// each row's [`CaseFacts`] and the index of each variant.
macro_rules! built_in_cases {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal {
            signal: $signal:ident,
            enterprise_only: $enterprise_only:literal,
            root_span: $root_span:literal,
            span: $span:literal,
            metric: $metric:expr $(,)?
        }
    )*) => {
        /// Which telemetry case an event is.
        ///
        /// The 14 built-in cases come from the AI-app platform this design descends from. A host
        /// adds its own cases by name in the `[cases.<name>]` section of the configuration; an
        /// event whose case is neither built in nor configured is refused with
        /// [`EnvelopeError::UnknownCase`](super::EnvelopeError::UnknownCase).
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub enum TelemetryCase {
            $( $(#[doc = $doc])* $variant, )*
            /// A case the host declared in configuration.
            Custom(Arc<str>),
        }

        /// The position of each built-in case in the table.
        #[derive(Clone, Copy)]
        enum Row {
            $( $variant, )*
        }

        /// The table's rows, in the order of [`TelemetryCase::BUILT_IN`].
        static FACTS: [CaseFacts; [$($name),*].len()] = [$(
            CaseFacts {
                name: $name,
                signal: SignalType::$signal,
                enterprise_only: $enterprise_only,
                root_span: $root_span,
                span_name: $span,
                metric: $metric,
            },
        )*];

        impl TelemetryCase {
            /// The 14 built-in cases, in the order of the routing table documentation.
            pub const BUILT_IN: [TelemetryCase; [$($name),*].len()] =
                [$(TelemetryCase::$variant),*];

            /// The position of a built-in case in [`TelemetryCase::BUILT_IN`] (none for a custom
            /// case).
            pub fn built_in_index(&self) -> Option<usize> {
                let row = match self {
                    $( TelemetryCase::$variant => Row::$variant, )*
                    TelemetryCase::Custom(_) => return None,
                };
                Some(row as usize)
            }
        }
    };
}

const fn duration(instrument: &'static str, description: &'static str) -> CaseMetric {
    CaseMetric::Duration {
        instrument,
        description,
    }
}

const fn count(
    instrument: &'static str,
    description: &'static str,
    unit: &'static str,
) -> CaseMetric {
    CaseMetric::Count {
        instrument,
        description,
        unit,
    }
}

built_in_cases! {
    /// A whole workflow run (trace; community edition).
    WorkflowRun = "workflow_run" {
        signal: Trace, enterprise_only: false, root_span: true, span: "workflow.run",
        metric: duration("workflow.duration", "Workflow run duration"),
    }
    /// One node of a workflow run (trace; enterprise only).
    NodeExecution = "node_execution" {
        signal: Trace, enterprise_only: true, root_span: false, span: "node.execution",
        metric: duration("node.duration", "Node execution duration"),
    }
    /// A node executed from the editor's draft (trace; enterprise only).
    DraftNodeExecution = "draft_node_execution" {
        signal: Trace, enterprise_only: true, root_span: false, span: "node.execution.draft",
        metric: duration("node.duration", "Node execution duration"),
    }
    /// A chat message run (trace; community edition).
    MessageRun = "message_run" {
        signal: Trace, enterprise_only: false, root_span: true, span: "message.run",
        metric: duration("message.duration", "Message run duration"),
    }
    /// A tool call (metric/log; enterprise only).
    ToolExecution = "tool_execution" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "tool_execution",
        metric: duration("tool.duration", "Tool execution duration"),
    }
    /// A moderation check (metric/log; enterprise only).
    ModerationCheck = "moderation_check" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "moderation_check",
        metric: CaseMetric::CountBy {
            instrument: "moderation.checks.total",
            description: "Moderation checks, by flagged",
            unit: "{check}",
            field: "flagged",
            value: FieldValue::Flag,
        },
    }
    /// Suggested follow-up questions (metric/log; enterprise only).
    SuggestedQuestion = "suggested_question" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "suggested_question",
        metric: count(
            "suggested_questions.total",
            "Suggested question generations",
            "{generation}",
        ),
    }
    /// A dataset retrieval (metric/log; enterprise only).
    DatasetRetrieval = "dataset_retrieval" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "dataset_retrieval",
        metric: count("dataset.retrievals.total", "Dataset retrievals", "{retrieval}"),
    }
    /// A conversation name generation (metric/log; enterprise only).
    GenerateName = "generate_name" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "generate_name",
        metric: count("names_generated.total", "Conversation names generated", "{generation}"),
    }
    /// A prompt generation (trace; enterprise only).
    PromptGeneration = "prompt_generation" {
        signal: Trace, enterprise_only: true, root_span: false, span: "prompt.generation",
        metric: duration("prompt_generation.duration", "Prompt generation duration"),
    }
    /// An app was created (metric/log; enterprise only).
    AppCreated = "app_created" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "app_created",
        metric: count("app.created.total", "Apps created", "{app}"),
    }
    /// An app was updated (metric/log; enterprise only).
    AppUpdated = "app_updated" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "app_updated",
        metric: count("app.updated.total", "Apps updated", "{app}"),
    }
    /// An app was deleted (metric/log; enterprise only).
    AppDeleted = "app_deleted" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "app_deleted",
        metric: count("app.deleted.total", "Apps deleted", "{app}"),
    }
    /// End-user feedback was created (metric/log; enterprise only).
    FeedbackCreated = "feedback_created" {
        signal: MetricLog, enterprise_only: true, root_span: false, span: "feedback_created",
        metric: CaseMetric::CountBy {
            instrument: "feedback.total",
            description: "Feedback created, by rating",
            unit: "{feedback}",
            field: "rating",
            value: FieldValue::Text { default: "unknown" },
        },
    }
}

impl TelemetryCase {
    /// The facts of a built-in case (none for a custom case).
    pub fn facts(&self) -> Option<&'static CaseFacts> {
        self.built_in_index().map(|i| &FACTS[i])
    }

    /// The case's stable snake_case name, as used in configuration and on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            TelemetryCase::Custom(name) => name,
            built_in => built_in.static_name().unwrap_or_default(),
        }
    }

    /// The name of a built-in case as a `'static` string (none for a custom case).
    pub fn static_name(&self) -> Option<&'static str> {
        self.facts().map(|f| f.name)
    }

    /// Parses a case name: a built-in name gives the built-in case, anything else a
    /// [`TelemetryCase::Custom`] (which the routing table must know for the event to be accepted).
    pub fn from_name(name: &str) -> TelemetryCase {
        FACTS
            .iter()
            .position(|f| f.name == name)
            .map(|i| TelemetryCase::BUILT_IN[i].clone())
            .unwrap_or_else(|| TelemetryCase::Custom(Arc::from(name)))
    }

    /// A host-declared case by name.
    pub fn custom(name: &str) -> TelemetryCase {
        TelemetryCase::from_name(name)
    }
}

impl fmt::Debug for TelemetryCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TelemetryCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TelemetryCase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TelemetryCase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(TelemetryCase::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_variants_agree() {
        for (i, case) in TelemetryCase::BUILT_IN.iter().enumerate() {
            assert_eq!(case.built_in_index(), Some(i));
            let facts = case.facts().expect("a built-in case has facts");
            assert_eq!(TelemetryCase::from_name(facts.name), *case);
            assert_eq!(case.as_str(), facts.name);
        }
        let names: std::collections::BTreeSet<_> = FACTS.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FACTS.len(), "names are unique");
        assert_eq!(TelemetryCase::custom("billing").facts(), None);
    }
}
