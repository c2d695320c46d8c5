//! Reads a Dapr resources folder the way `daprd --resources-path DIR` does,
//! into typed values the rules can look at.
//!
//! What daprd 1.18.3 reads, and so what this reads:
//! - The files directly in DIR whose extension is `.yaml` or `.yml`, in any
//!   case; sub-folders are skipped, not entered (`pkg/internal/loader/disk/
//!   manifest.go`, `loadManifestsFromDirectory`; `kit/strings.IsYaml`).
//! - Every `---` document of a file, matched on `apiVersion` and `kind`:
//!   `dapr.io/v1alpha1` `Component`, and `Subscription` in `dapr.io/v1alpha1`
//!   or `dapr.io/v2alpha1` (`disk/subscriptions.go`). Other documents are
//!   someone else's and are skipped.
//! - A `Resiliency` is read differently at startup (`pkg/resiliency/
//!   resiliency.go`, `loadLocalResiliencyPath`): the whole file is
//!   unmarshalled as one document, which keeps only its first, and any
//!   `apiVersion` goes. So a Resiliency that is not the first document of
//!   its file is loaded by nothing; [`Resiliency::document`] says where it
//!   stood, and the rules say so.
//!
//! A metadata value is a string to the component whatever YAML type it was
//! written as: daprd turns `2000` into `"2000"` and `true` into `"true"`
//! (`pkg/apis/common/namevalue.go`, `DynamicValue.String`). A value taken
//! from a secret store (`secretKeyRef`) or the environment (`envRef`) is not
//! known here, and no rule judges it.
//!
//! A YAML syntax error, or a document whose shape daprd could not decode
//! (a `spec.metadata` that is not a list, say), is a [`LoadError`] naming
//! the file and the line.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use yaml_serde::Value;

/// Everything daprd would load from one resources folder, plus the app's
/// own subscriptions when a manifest was given.
#[derive(Debug, Default)]
pub struct Folder {
    /// The folder, as the user named it.
    pub dir: PathBuf,
    /// The YAML files read, in name order.
    pub files: Vec<PathBuf>,
    pub components: Vec<Component>,
    pub resiliencies: Vec<Resiliency>,
    /// Declarative subscriptions (YAML), then the manifest's triggers.
    pub subscriptions: Vec<Subscription>,
    /// Documents of a kind daprd loads but in a form it skips.
    pub skipped: Vec<Skipped>,
    /// The manifest whose subscriptions were added, if one was given.
    pub manifest: Option<PathBuf>,
}

/// One `kind: Component`.
#[derive(Debug, Clone)]
pub struct Component {
    pub file: PathBuf,
    /// `metadata.name`: the name subscriptions and Resiliency targets use.
    pub name: String,
    /// `spec.type`, such as `pubsub.redis`.
    pub component_type: String,
    /// `spec.metadata`, in file order.
    pub metadata: Vec<(String, Setting)>,
}

/// The value of one `spec.metadata` item.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    /// A value written in the file, as the string the component receives.
    Value(String),
    /// A value from a secret store or the environment: not known here.
    Elsewhere,
}

impl Component {
    /// The setting `key`, matched regardless of case, as components-contrib's
    /// `DecodeMetadata` does (mapstructure matches field names that way).
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.metadata
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, setting)| setting)
    }

    /// The setting `key` spelled exactly so, for the keys a component reads
    /// with a plain map lookup (`properties["redeliverInterval"]`).
    pub fn get_exact(&self, key: &str) -> Option<&Setting> {
        self.metadata
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, setting)| setting)
    }

    /// The value of `key` when it is written in the file; `None` when it is
    /// absent or comes from elsewhere.
    pub fn value(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Setting::Value(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether `key` is given by a secret or the environment, so that a rule
    /// must not assume its default.
    pub fn is_elsewhere(&self, key: &str) -> bool {
        self.get(key) == Some(&Setting::Elsewhere)
    }

    /// Whether this is a pub/sub component.
    pub fn is_pubsub(&self) -> bool {
        self.component_type.starts_with("pubsub.")
    }
}

/// One `kind: Resiliency`, as written: the rules decide what daprd makes of
/// it (resiliency.rs).
#[derive(Debug, Clone)]
pub struct Resiliency {
    pub file: PathBuf,
    pub name: String,
    /// Its place among the documents of its file, from 0. daprd loads it at
    /// startup only when this is 0.
    pub document: usize,
    /// `spec.policies.timeouts`.
    pub timeouts: BTreeMap<String, Scalar>,
    /// `spec.policies.retries`.
    pub retries: BTreeMap<String, RetrySpec>,
    /// `spec.targets.components.NAME.inbound.retry`, per component name;
    /// `None` when the component is a target without an inbound retry.
    pub inbound_retry: BTreeMap<String, Option<String>>,
}

/// One named retry policy, each field as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    #[serde(default)]
    pub policy: Option<Scalar>,
    #[serde(default)]
    pub duration: Option<Scalar>,
    #[serde(default)]
    pub max_interval: Option<Scalar>,
    #[serde(default)]
    pub max_retries: Option<Scalar>,
}

/// A subscription: declarative (a `kind: Subscription` document), or one of
/// the app's `[[trigger.pubsub]]` from its manifest, which daprd receives
/// programmatically.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub source: SubscriptionSource,
    pub pubsubname: String,
    pub topic: String,
    pub dead_letter_topic: Option<String>,
    /// Fields daprd cannot decode, which make it skip the whole document:
    /// `(path, what is wrong, what to write)`.
    pub undecodable: Vec<(String, String, String)>,
}

/// Where a [`Subscription`] was declared.
#[derive(Debug, Clone)]
pub enum SubscriptionSource {
    /// A YAML document: its file and `metadata.name`.
    Yaml { file: PathBuf, name: String },
    /// A `[[trigger.pubsub]]` of the manifest at `file`, for `component`.
    Manifest { file: PathBuf, component: String },
}

impl Subscription {
    /// The file it was declared in.
    pub fn file(&self) -> &Path {
        match &self.source {
            SubscriptionSource::Yaml { file, .. } | SubscriptionSource::Manifest { file, .. } => {
                file
            }
        }
    }

    /// Whether it came from the manifest.
    pub fn is_programmatic(&self) -> bool {
        matches!(self.source, SubscriptionSource::Manifest { .. })
    }
}

/// A document daprd skips although its `kind` is one it loads.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub file: PathBuf,
    /// Its place among the documents of its file, from 0.
    pub document: usize,
    pub kind: String,
    pub name: String,
    /// Why daprd skips it.
    pub reason: String,
}

/// A YAML scalar with its YAML type, for the few fields whose type daprd
/// checks (`maxRetries` must be an integer), and the string daprd makes of
/// it everywhere else.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `null`, or an empty value.
    Null,
    /// A list or a mapping where a scalar belongs.
    Nested,
}

impl Scalar {
    fn from_value(value: &Value) -> Scalar {
        match value {
            Value::String(s) => Scalar::Str(s.clone()),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => n.as_f64().map_or(Scalar::Nested, Scalar::Float),
            },
            Value::Null => Scalar::Null,
            Value::Tagged(tagged) => Scalar::from_value(&tagged.value),
            Value::Sequence(_) | Value::Mapping(_) => Scalar::Nested,
        }
    }

    /// The string daprd hands on: YAML becomes JSON (an integral float loses
    /// its `.0`), and a JSON string is unquoted while any other value keeps
    /// its JSON text.
    pub fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Null => String::new(),
            Scalar::Nested => String::from("(a list or mapping)"),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "\"{s}\""),
            other => f.write_str(&other.text()),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|v| Scalar::from_value(&v))
    }
}

/// Why a folder (or the manifest) could not be read: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read the folder: {source}", dir.display())]
    Folder {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A YAML syntax error, or a document of a loaded kind whose shape does
    /// not decode; `message` says where (`at line L column C`).
    #[error("{}: {message}", file.display())]
    Yaml { file: PathBuf, message: String },
    #[error("{0}")]
    Manifest(#[from] crate::manifest::ManifestError),
}

/// Lists the files daprd reads in `dir`: `.yaml` and `.yml` (any case),
/// not in sub-folders, in name order.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let folder_error = |source| LoadError::Folder {
        dir: dir.into(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_error)? {
        let entry = entry.map_err(folder_error)?;
        let is_file = entry.file_type().map_err(folder_error)?.is_file()
            || std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        let yaml = Path::new(&entry.file_name())
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if is_file && yaml {
            // DIR joined with the name, so that findings show the path as the
            // user would type it (`components/kafka/pubsub.yaml`).
            files.push(dir.join(entry.file_name()));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every resource in `dir`.
pub fn load(dir: &Path) -> Result<Folder, LoadError> {
    let mut folder = Folder {
        dir: dir.into(),
        ..Folder::default()
    };
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
            file: file.clone(),
            source,
        })?;
        read_file(&mut folder, &file, &text)?;
        folder.files.push(file);
    }
    Ok(folder)
}

/// Adds the `[[trigger.pubsub]]` of the manifest at `path` to the folder's
/// subscriptions: daprd gets them from the app (`GET /dapr/subscribe`).
pub fn add_manifest(folder: &mut Folder, path: &Path) -> Result<(), LoadError> {
    let manifest = crate::manifest::Manifest::load(path)?;
    folder.manifest = Some(path.into());
    for trigger in &manifest.pubsub_triggers {
        folder.subscriptions.push(Subscription {
            source: SubscriptionSource::Manifest {
                file: path.into(),
                component: trigger.component.clone(),
            },
            pubsubname: trigger.pubsubname.clone(),
            topic: trigger.topic.clone(),
            dead_letter_topic: trigger.dead_letter_topic.clone(),
            undecodable: Vec::new(),
        });
    }
    Ok(())
}

const COMPONENT_API: &str = "dapr.io/v1alpha1";
const SUBSCRIPTION_APIS: [&str; 2] = ["dapr.io/v1alpha1", "dapr.io/v2alpha1"];

/// Reads the documents of one file into `folder`.
///
/// Two passes over the text: the first learns each document's `kind`, the
/// second decodes each document of a loaded kind into its typed shape
/// straight from the text, so that a shape error keeps its line.
pub fn read_file(folder: &mut Folder, file: &Path, text: &str) -> Result<(), LoadError> {
    let yaml_error = |e: yaml_serde::Error| LoadError::Yaml {
        file: file.into(),
        message: e.to_string(),
    };
    let mut heads = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        // A syntax error repeats for every later document: stop at the first.
        let value = Value::deserialize(document).map_err(yaml_error)?;
        heads.push(Head::of(&value));
    }
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let Some(Some(head)) = heads.get(index) else {
            continue;
        };
        // Its place among the file's documents; empty ones (a leading
        // `---`) are not documents to daprd.
        let ordinal = heads[..index].iter().filter(|h| h.is_some()).count();
        match head.kind.as_str() {
            "Component" => {
                let doc = ComponentDoc::deserialize(document).map_err(yaml_error)?;
                if head.api_version != COMPONENT_API {
                    folder.skipped.push(head.skipped(
                        file,
                        ordinal,
                        &doc.metadata.name,
                        format!(
                            "daprd loads a Component only with apiVersion {COMPONENT_API}, and this one has {:?}",
                            head.api_version
                        ),
                    ));
                    continue;
                }
                folder.components.push(doc.into_component(file));
            }
            "Subscription" => {
                let doc = SubscriptionDoc::deserialize(document).map_err(yaml_error)?;
                if !SUBSCRIPTION_APIS.contains(&head.api_version.as_str()) {
                    folder.skipped.push(head.skipped(
                        file,
                        ordinal,
                        &doc.metadata.name,
                        format!(
                            "daprd loads a Subscription only with apiVersion {} or {}, and this one has {:?}",
                            SUBSCRIPTION_APIS[0], SUBSCRIPTION_APIS[1], head.api_version
                        ),
                    ));
                    continue;
                }
                folder.subscriptions.push(doc.into_subscription(file));
            }
            "Resiliency" => {
                // Kept whatever its place: resiliency.rs says why one that
                // is not first does nothing.
                let doc = ResiliencyDoc::deserialize(document).map_err(yaml_error)?;
                folder.resiliencies.push(doc.into_resiliency(file, ordinal));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A document's `apiVersion` and `kind`; `None` for an empty document.
#[derive(Debug)]
struct Head {
    api_version: String,
    kind: String,
}

impl Head {
    fn of(value: &Value) -> Option<Head> {
        let text = |key: &str| {
            value
                .get(key)
                .map(|v| Scalar::from_value(v).text())
                .unwrap_or_default()
        };
        match value {
            Value::Null => None,
            _ => Some(Head {
                api_version: text("apiVersion"),
                kind: text("kind"),
            }),
        }
    }

    fn skipped(&self, file: &Path, document: usize, name: &str, reason: String) -> Skipped {
        Skipped {
            file: file.into(),
            document,
            kind: self.kind.clone(),
            name: name.into(),
            reason,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ObjectMeta {
    #[serde(default, deserialize_with = "text")]
    name: String,
}

#[derive(Debug, Deserialize)]
struct ComponentDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: ComponentSpec,
}

#[derive(Debug, Deserialize)]
struct ComponentSpec {
    #[serde(rename = "type", deserialize_with = "text")]
    component_type: String,
    #[serde(default, deserialize_with = "list_or_null")]
    metadata: Vec<MetadataItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataItem {
    #[serde(deserialize_with = "text")]
    name: String,
    #[serde(default)]
    value: Option<Scalar>,
    #[serde(default)]
    secret_key_ref: Option<Value>,
    #[serde(default)]
    env_ref: Option<Value>,
}

impl ComponentDoc {
    fn into_component(self, file: &Path) -> Component {
        let metadata = self
            .spec
            .metadata
            .into_iter()
            .map(|item| {
                let from_elsewhere = item.secret_key_ref.as_ref().is_some_and(|v| !v.is_null())
                    || item.env_ref.as_ref().is_some_and(|v| !v.is_null());
                let setting = match item.value {
                    Some(value) if value != Scalar::Null => Setting::Value(value.text()),
                    _ if from_elsewhere => Setting::Elsewhere,
                    _ => Setting::Value(String::new()),
                };
                (item.name, setting)
            })
            .collect();
        Component {
            file: file.into(),
            name: self.metadata.name,
            component_type: self.spec.component_type,
            metadata,
        }
    }
}

#[derive(Debug, Deserialize)]
struct SubscriptionDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: SubscriptionSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionSpec {
    #[serde(default, deserialize_with = "text")]
    pubsubname: String,
    #[serde(default, deserialize_with = "text")]
    topic: String,
    #[serde(default, deserialize_with = "text")]
    dead_letter_topic: String,
    #[serde(default)]
    bulk_subscribe: Option<BTreeMap<String, Scalar>>,
}

impl SubscriptionDoc {
    fn into_subscription(self, file: &Path) -> Subscription {
        // daprd decodes `bulkSubscribe` into `{enabled bool, maxMessagesCount
        // int32, maxAwaitDurationMs int32}` (pkg/apis/subscriptions/
        // v2alpha1/types.go): a quoted value fails the whole document.
        let mut undecodable = Vec::new();
        for (key, value) in self.spec.bulk_subscribe.iter().flatten() {
            let (ok, want) = match key.as_str() {
                "enabled" => (matches!(value, Scalar::Bool(_) | Scalar::Null), "a bool"),
                "maxMessagesCount" | "maxAwaitDurationMs" => (
                    matches!(value, Scalar::Int(_) | Scalar::Null)
                        || matches!(value, Scalar::Float(f) if f.fract() == 0.0),
                    "an integer",
                ),
                _ => (true, ""),
            };
            if !ok {
                undecodable.push((
                    format!("spec.bulkSubscribe.{key}"),
                    format!("is {value}, not {want}"),
                    format!("{key}: {}", value.text()),
                ));
            }
        }
        Subscription {
            source: SubscriptionSource::Yaml {
                file: file.into(),
                name: self.metadata.name,
            },
            pubsubname: self.spec.pubsubname,
            topic: self.spec.topic,
            dead_letter_topic: Some(self.spec.dead_letter_topic).filter(|t| !t.is_empty()),
            undecodable,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ResiliencyDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: ResiliencySpec,
}

#[derive(Debug, Default, Deserialize)]
struct ResiliencySpec {
    #[serde(default)]
    policies: Policies,
    #[serde(default)]
    targets: Targets,
}

#[derive(Debug, Default, Deserialize)]
struct Policies {
    #[serde(default, deserialize_with = "map_or_null")]
    timeouts: BTreeMap<String, Scalar>,
    #[serde(default, deserialize_with = "map_or_null")]
    retries: BTreeMap<String, RetrySpec>,
}

#[derive(Debug, Default, Deserialize)]
struct Targets {
    #[serde(default, deserialize_with = "map_or_null")]
    components: BTreeMap<String, ComponentTargets>,
}

#[derive(Debug, Default, Deserialize)]
struct ComponentTargets {
    #[serde(default)]
    inbound: Option<PolicyNames>,
}

#[derive(Debug, Default, Deserialize)]
struct PolicyNames {
    #[serde(default, deserialize_with = "text")]
    retry: String,
}

impl ResiliencyDoc {
    fn into_resiliency(self, file: &Path, document: usize) -> Resiliency {
        let inbound_retry = self
            .spec
            .targets
            .components
            .into_iter()
            .map(|(name, targets)| {
                let retry = targets.inbound.map(|p| p.retry).filter(|r| !r.is_empty());
                (name, retry)
            })
            .collect();
        Resiliency {
            file: file.into(),
            name: self.metadata.name,
            document,
            timeouts: self.spec.policies.timeouts,
            retries: self.spec.policies.retries,
            inbound_retry,
        }
    }
}

/// A string field that daprd would also accept written as a number or a
/// bool (sigs.k8s.io/yaml converts a scalar for a string field).
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Scalar::deserialize(deserializer)? {
        Scalar::Nested => Err(serde::de::Error::custom(
            "expected a string, found a list or a mapping",
        )),
        scalar => Ok(scalar.text()),
    }
}

fn list_or_null<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

fn map_or_null<'de, D, T>(deserializer: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<BTreeMap<String, T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A component of `component_type` named `pubsub` in `c/pubsub.yaml`,
/// with `settings` written in the file: for the rules' tests.
#[cfg(test)]
pub fn test_component(component_type: &str, settings: &[(&str, &str)]) -> Component {
    Component {
        file: PathBuf::from("c/pubsub.yaml"),
        name: String::from("pubsub"),
        component_type: String::from(component_type),
        metadata: settings
            .iter()
            .map(|(k, v)| (k.to_string(), Setting::Value(v.to_string())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_of(text: &str) -> Result<Folder, LoadError> {
        let mut folder = Folder::default();
        read_file(&mut folder, Path::new("dir/a.yaml"), text)?;
        Ok(folder)
    }

    #[test]
    fn values_become_the_strings_daprd_hands_on_and_secrets_are_unknown() {
        let folder = folder_of(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\n\
             spec:\n  type: pubsub.redis\n  metadata:\n\
             \x20   - name: redeliverInterval\n      value: 2000\n\
             \x20   - name: enableTLS\n      value: true\n\
             \x20   - name: ratio\n      value: 1.0\n\
             \x20   - name: redisPassword\n      secretKeyRef:\n        name: s\n        key: k\n\
             \x20   - name: empty\n",
        )
        .unwrap();
        let c = &folder.components[0];
        assert_eq!(c.name, "pubsub");
        assert_eq!(c.component_type, "pubsub.redis");
        assert_eq!(c.value("redeliverinterval"), Some("2000"));
        assert_eq!(c.get_exact("redeliverinterval"), None);
        assert_eq!(c.value("enableTLS"), Some("true"));
        assert_eq!(c.value("ratio"), Some("1"));
        assert!(c.is_elsewhere("redisPassword"));
        assert_eq!(c.value("empty"), Some(""));
    }

    #[test]
    fn documents_are_matched_on_api_version_and_kind() {
        let folder = folder_of(
            "# leading comment\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\n\
             metadata: {name: a}\nspec: {type: pubsub.kafka}\n---\n\
             apiVersion: dapr.io/v2alpha1\nkind: Component\nmetadata: {name: b}\n\
             spec: {type: pubsub.kafka}\n---\n\
             apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\n\
             spec: {pubsubname: a, topic: orders, deadLetterTopic: dlq}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n",
        )
        .unwrap();
        assert_eq!(folder.components.len(), 1);
        assert_eq!(folder.components[0].name, "a");
        assert_eq!(folder.skipped.len(), 1);
        assert!(folder.skipped[0].reason.contains("dapr.io/v2alpha1"));
        let s = &folder.subscriptions[0];
        assert_eq!((s.pubsubname.as_str(), s.topic.as_str()), ("a", "orders"));
        assert_eq!(s.dead_letter_topic.as_deref(), Some("dlq"));
    }

    #[test]
    fn a_resiliency_counts_only_as_the_first_document_of_its_file() {
        let resiliency = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\n\
                          spec:\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: p\n";
        let first = folder_of(&format!("---\n{resiliency}")).unwrap();
        assert_eq!(first.resiliencies[0].document, 0);
        assert_eq!(
            first.resiliencies[0].inbound_retry["pubsub"].as_deref(),
            Some("p")
        );
        let second = folder_of(&format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: a}}\n\
             spec: {{type: state.redis}}\n---\n{resiliency}"
        ))
        .unwrap();
        assert_eq!(second.resiliencies[0].document, 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = folder_of("apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: [1,\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dir/a.yaml: "), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let err = folder_of(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a}\n\
             spec:\n  type: pubsub.redis\n  metadata:\n    - value: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing field `name`"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn quoted_bulk_subscribe_fields_are_noted() {
        let folder = folder_of(
            "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\n\
             spec:\n  pubsubname: p\n  topic: t\n  bulkSubscribe:\n    enabled: \"true\"\n    maxMessagesCount: 10\n",
        )
        .unwrap();
        let s = &folder.subscriptions[0];
        assert_eq!(s.undecodable.len(), 1);
        assert_eq!(s.undecodable[0].0, "spec.bulkSubscribe.enabled");
    }
}
