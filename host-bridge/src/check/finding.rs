//! What `host-bridge check` reports: one [`Finding`] per setting that can
//! lose a message or deliver it to the wrong place, printed as a block the
//! user can act on without reading the source:
//!
//! ```text
//! components/rabbitmq/pubsub.yaml: component "pubsub" (pubsub.rabbitmq): requeueInFailure is not set (default false)
//!   a message whose delivery fails (the app answered RETRY, or could not be reached) is nacked without requeue and dropped
//!   fix: requeueInFailure: "true"
//! ```
//!
//! A warning is the same block for a property of the broker rather than a
//! setting: nothing in the folder can change it, so it does not make the
//! exit code non-zero.

use super::resources::{Component, Subscription, SubscriptionSource};
use std::fmt;
use std::path::PathBuf;

/// Whether a finding counts against the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A setting that loses messages: exit code 1.
    Finding,
    /// A property of the broker: printed, not counted.
    Warning,
}

/// What a finding is about, as the user named it in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A `kind: Component`, by `metadata.name` and `spec.type`.
    Component {
        name: String,
        component_type: String,
    },
    /// A `kind: Resiliency`, by `metadata.name`.
    Resiliency { name: String },
    /// A declarative subscription, by `metadata.name`.
    Subscription {
        name: String,
        pubsubname: String,
        topic: String,
    },
    /// One of the manifest's `[[trigger.pubsub]]`, by its component.
    Trigger {
        component: String,
        pubsubname: String,
        topic: String,
    },
    /// A document daprd skips, by its place in the file (from 1).
    Document {
        kind: String,
        name: String,
        number: usize,
    },
}

impl Subject {
    pub fn of(component: &Component) -> Subject {
        Subject::Component {
            name: component.name.clone(),
            component_type: component.component_type.clone(),
        }
    }

    pub fn of_subscription(subscription: &Subscription) -> Subject {
        match &subscription.source {
            SubscriptionSource::Yaml { name, .. } => Subject::Subscription {
                name: name.clone(),
                pubsubname: subscription.pubsubname.clone(),
                topic: subscription.topic.clone(),
            },
            SubscriptionSource::Manifest { component, .. } => Subject::Trigger {
                component: component.clone(),
                pubsubname: subscription.pubsubname.clone(),
                topic: subscription.topic.clone(),
            },
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Component {
                name,
                component_type,
            } => write!(f, "component \"{name}\" ({component_type})"),
            Subject::Resiliency { name } => write!(f, "Resiliency \"{name}\""),
            Subject::Subscription {
                name,
                pubsubname,
                topic,
            } => write!(
                f,
                "Subscription \"{name}\" (pubsub \"{pubsubname}\", topic \"{topic}\")"
            ),
            Subject::Trigger {
                component,
                pubsubname,
                topic,
            } => write!(
                f,
                "[[trigger.pubsub]] of component \"{component}\" (pubsub \"{pubsubname}\", topic \"{topic}\")"
            ),
            Subject::Document { kind, name, number } => {
                write!(f, "document {number} ({kind} \"{name}\")")
            }
        }
    }
}

/// One thing `host-bridge check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The file it is in, as DIR joined with the file name.
    pub file: PathBuf,
    pub subject: Subject,
    /// The setting (or field) it is about, for tests and for sorting.
    pub key: String,
    /// What is set, or missing: the first line.
    pub problem: String,
    /// What goes wrong because of it, one line each.
    pub consequence: Vec<String>,
    /// The exact value to write; `None` for a warning.
    pub fix: Option<String>,
}

impl Finding {
    /// A setting that can lose a message.
    pub fn new(
        file: PathBuf,
        subject: Subject,
        key: impl Into<String>,
        problem: String,
        consequence: Vec<String>,
        fix: String,
    ) -> Finding {
        Finding {
            severity: Severity::Finding,
            file,
            subject,
            key: key.into(),
            problem,
            consequence,
            fix: Some(fix),
        }
    }

    /// A property of the broker that a user should know, not a setting.
    pub fn warning(
        file: PathBuf,
        subject: Subject,
        key: impl Into<String>,
        problem: String,
        consequence: Vec<String>,
    ) -> Finding {
        Finding {
            severity: Severity::Warning,
            file,
            subject,
            key: key.into(),
            problem,
            consequence,
            fix: None,
        }
    }
}

impl Finding {
    /// A warning about `component` as a whole: what its broker does that
    /// no setting of it changes.
    pub fn broker_warning(
        component: &Component,
        key: impl Into<String>,
        problem: String,
        consequence: Vec<String>,
    ) -> Finding {
        Finding::warning(
            component.file.clone(),
            Subject::of(component),
            key,
            problem,
            consequence,
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        writeln!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.subject,
            self.problem
        )?;
        for line in &self.consequence {
            writeln!(f, "  {line}")?;
        }
        if let Some(fix) = &self.fix {
            writeln!(f, "  fix: {fix}")?;
        }
        Ok(())
    }
}

/// The findings of the rules of one component, each about one of its keys.
pub struct ComponentFindings<'c> {
    component: &'c Component,
    pub findings: Vec<Finding>,
}

impl<'c> ComponentFindings<'c> {
    pub fn new(component: &'c Component) -> Self {
        ComponentFindings {
            component,
            findings: Vec::new(),
        }
    }

    /// Adds a finding about `key`.
    pub fn add(
        &mut self,
        key: &str,
        problem: String,
        consequence: Vec<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding::new(
            self.component.file.clone(),
            Subject::of(self.component),
            key,
            problem,
            consequence,
            fix.into(),
        ));
    }
}
