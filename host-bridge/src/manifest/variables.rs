//! Spin's application variables: `[variables]`, `[component.NAME.variables]`
//! and their `{{ name }}` templates.
//!
//! An application declares variables with a default or as `required`; a
//! component's variables are templates over them. A guest reads only its
//! own component's variables (through `spin:variables` or
//! `fermyon:spin/variables`), never the application's directly, as in Spin.
//! `SPIN_VARIABLE_<NAME>` in the host's environment overrides an
//! application variable.
//!
//! Parsing checks the shape (names, templates, references to declared
//! variables); [`resolve`] gives every template its value once, at
//! startup, so a required variable with no value stops `up` before
//! anything runs, naming it.

use std::collections::BTreeMap;
use std::fmt;

/// The environment variable prefix that overrides an application variable.
pub const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// One `[variables]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub default: Option<String>,
    pub required: bool,
    /// Spin's `secret`: the value is never logged.
    pub secret: bool,
}

/// A `[component.NAME.variables]` value: literal text and `{{ name }}`
/// references to application variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(String),
}

impl Template {
    /// Parses `text`. `{{` opens a reference, `}}` closes it, and the name
    /// between, trimmed, must be a valid variable name.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{text:?} opens `{{{{` without closing it with `}}}}`"))?;
            let name = after[..close].trim();
            check_name(name).map_err(|e| format!("{text:?}: {e}"))?;
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// The application variables the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Variable(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    fn render(&self, values: &BTreeMap<String, String>) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(text) => text.as_str(),
                Part::Variable(name) => values.get(name).map_or("", String::as_str),
            })
            .collect()
    }
}

/// Spin's rule for variable names: lowercase ASCII letters, digits and
/// underscores, starting with a letter.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a variable name (lowercase letters, digits and '_', starting with a letter)"
        ))
    }
}

/// A required variable that has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unset {
    pub variable: String,
}

impl fmt::Display for Unset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[variables] {}: required, but has no value; set {}{}",
            self.variable,
            ENV_PREFIX,
            self.variable.to_ascii_uppercase()
        )
    }
}

/// Every component's variables, rendered. `lookup` reads the host's
/// environment (`SPIN_VARIABLE_<NAME>` for `name`), which wins over a
/// default. Fails with every required variable that has no value.
pub fn resolve<'a>(
    variables: &BTreeMap<String, Variable>,
    components: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, Template>)>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, Vec<Unset>> {
    let mut values = BTreeMap::new();
    let mut unset = Vec::new();
    for (name, variable) in variables {
        let from_env = lookup(&format!("{ENV_PREFIX}{}", name.to_ascii_uppercase()));
        match from_env.or_else(|| variable.default.clone()) {
            Some(value) => {
                values.insert(name.clone(), value);
            }
            None if variable.required => unset.push(Unset {
                variable: name.clone(),
            }),
            None => {}
        }
    }
    if !unset.is_empty() {
        return Err(unset);
    }
    Ok(components
        .into_iter()
        .map(|(id, templates)| {
            let rendered = templates
                .iter()
                .map(|(name, t)| (name.clone(), t.render(&values)))
                .collect();
            (id.to_owned(), rendered)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(entries: &[(&str, Option<&str>, bool)]) -> BTreeMap<String, Variable> {
        entries
            .iter()
            .map(|(name, default, required)| {
                (
                    (*name).to_owned(),
                    Variable {
                        default: default.map(str::to_owned),
                        required: *required,
                        secret: false,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn templates_parse_text_and_references() {
        let t = Template::parse("Hello, {{ who }}! ({{stage}})").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["who", "stage"]);
        assert!(
            Template::parse("no references")
                .unwrap()
                .references()
                .next()
                .is_none()
        );
    }

    #[test]
    fn bad_templates_say_why() {
        let unclosed = Template::parse("{{ who").unwrap_err();
        assert!(unclosed.contains("without closing"), "{unclosed}");
        let bad_name = Template::parse("{{ Who }}").unwrap_err();
        assert!(
            bad_name.contains("\"Who\" is not a variable name"),
            "{bad_name}"
        );
    }

    #[test]
    fn the_environment_overrides_a_default() {
        let variables = vars(&[("who", Some("world"), false), ("stage", Some("dev"), false)]);
        let templates: BTreeMap<String, Template> = [(
            "greeting".to_owned(),
            Template::parse("Hello, {{ who }} ({{ stage }})").unwrap(),
        )]
        .into();
        let env = |name: &str| (name == "SPIN_VARIABLE_STAGE").then(|| "prod".to_owned());
        let resolved = resolve(&variables, [("app", &templates)], env).unwrap();
        assert_eq!(resolved["app"]["greeting"], "Hello, world (prod)");
    }

    #[test]
    fn a_required_variable_without_a_value_is_named() {
        let variables = vars(&[("api_key", None, true), ("who", Some("x"), false)]);
        let unset = resolve(&variables, [], |_| None).unwrap_err();
        assert_eq!(unset.len(), 1);
        assert_eq!(
            unset[0].to_string(),
            "[variables] api_key: required, but has no value; set SPIN_VARIABLE_API_KEY"
        );
        // Set in the environment, it resolves.
        let env = |name: &str| (name == "SPIN_VARIABLE_API_KEY").then(|| "k".to_owned());
        assert!(resolve(&variables, [], env).is_ok());
    }
}
