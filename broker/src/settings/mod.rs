//! Every environment variable the broker's processes read, declared once as data: its name,
//! its type (what its parser gives), its default, what it means, and where it applies (the
//! Lambda functions, `broker-local`, or both) with what the SAM template does with it.
//! [`ALL`] lists them; the README's configuration table and the template are checked
//! against it (`tests/tests/settings.rs`).
//!
//! One reader applies one rule to all of them ([`Var::get`]):
//! - a value that is empty or only whitespace means unset, so the default applies: the SAM
//!   template passes an empty string for a parameter left empty, and `FOO= cmd` in a shell
//!   reads the same. `JWT_SECRET` alone counts only the empty string as unset
//!   ([`Blank::EmptyOnly`]);
//! - a value that is not valid Unicode means unset too;
//! - a value the variable's parser refuses is [`ConfigError::Invalid`] with the variable's
//!   name, the value as set and the reason; a clamp (`at least 1`) is part of the parser, so
//!   a value out of range is raised or lowered to the bound, as declared next to it.
//!
//! Numbers, names, addresses and lists are read with surrounding whitespace ignored; free
//! text (secrets, claims, the metrics namespace, paths) is taken as written.

use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::Algorithm;

/// Where a variable is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// By the Lambda functions only.
    Lambda(Template),
    /// By `broker-local` only.
    Local,
    /// By the Lambda functions and `broker-local`.
    Both(Template),
}

impl Place {
    /// What the SAM template does with the variable, if the Lambda functions read it.
    pub fn template(self) -> Option<Template> {
        match self {
            Self::Lambda(template) | Self::Both(template) => Some(template),
            Self::Local => None,
        }
    }

    /// The README's `where` column.
    pub fn label(self) -> &'static str {
        match self {
            Self::Lambda(_) => "Lambda",
            Self::Local => "`broker-local`",
            Self::Both(_) => "both",
        }
    }
}

/// What the SAM template does with a variable the Lambda functions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// Sets it, in `Globals: Function: Environment: Variables` or a function's own.
    Sets,
    /// Leaves it to its default, for the reason given.
    Default(&'static str),
}

/// What a variable is when unset (or blank).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// This value, written as one would set it: the variable's own parser reads it.
    Value(&'static str),
    /// No value; what its reader does then.
    None(&'static str),
    /// No value on Lambda (`lambda` says what then); `broker-local` uses `local`, written as
    /// one would set it.
    Local {
        /// What a reader on Lambda does without a value.
        lambda: &'static str,
        /// The value `broker-local` uses, as one would set it.
        local: &'static str,
    },
}

/// Which values count as unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blank {
    /// Empty or whitespace only: the rule.
    Unset,
    /// Only the empty string; whitespace is a value like any other (`JWT_SECRET`, as it has
    /// always been read).
    EmptyOnly,
}

/// A variable's declaration, whatever its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name; `{NAME}_TABLE` stands for one variable per table of the app.
    pub name: &'static str,
    /// What it means, in one line.
    pub meaning: &'static str,
    /// What it is when unset.
    pub fallback: Fallback,
    /// Where it is read.
    pub place: Place,
    /// Which values count as unset.
    pub blank: Blank,
}

impl Setting {
    /// The default as the README's configuration table states it.
    pub fn default_doc(&self) -> String {
        match self.fallback {
            Fallback::Value(value) => format!("`{value}`"),
            Fallback::None(what) => what.to_owned(),
            Fallback::Local { lambda, local } => format!("{lambda}; `broker-local`: `{local}`"),
        }
    }

    /// The value `broker-local` uses when the variable is unset, if it has one.
    pub fn local_default(&self) -> Option<&'static str> {
        match self.fallback {
            Fallback::Value(value) | Fallback::Local { local: value, .. } => Some(value),
            Fallback::None(_) => None,
        }
    }

    /// The value of variable `name` in the environment, `None` when unset, blank (by
    /// [`Self::blank`]) or not Unicode.
    fn raw(&self, name: &str) -> Option<String> {
        let value = std::env::var(name).ok()?;
        let blank = match self.blank {
            Blank::Unset => value.trim().is_empty(),
            Blank::EmptyOnly => value.is_empty(),
        };
        (!blank).then_some(value)
    }

    /// The error for `value` of this variable, refused for `reason`: for readers that parse
    /// a variable further than its declared type (a type of their own crate).
    pub fn invalid(&self, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            name: self.name.to_owned(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// A variable of type `T`: its declaration and its parser (clamps included).
#[derive(Clone, Copy, Debug)]
pub struct Var<T: 'static> {
    /// The declaration.
    pub setting: Setting,
    /// Reads a value that is set (not blank), or the declared default.
    pub parse: fn(&str) -> Result<T, String>,
}

impl<T> std::ops::Deref for Var<T> {
    type Target = Setting;

    fn deref(&self) -> &Setting {
        &self.setting
    }
}

impl<T> Var<T> {
    /// The value set, else the declared default ([`Fallback::Value`]), else `None`.
    pub fn get(&self) -> Result<Option<T>, ConfigError> {
        match self.get_named(self.name)? {
            Some(value) => Ok(Some(value)),
            None => match self.fallback {
                Fallback::Value(value) => self.parse_named(self.name, value).map(Some),
                Fallback::None(_) | Fallback::Local { .. } => Ok(None),
            },
        }
    }

    /// The value set or the declared default; [`ConfigError::Missing`] without either.
    pub fn value(&self) -> Result<T, ConfigError> {
        self.get()?
            .ok_or_else(|| ConfigError::Missing(self.name.to_owned()))
    }

    /// As `broker-local` reads it: the value set, else its default there
    /// ([`Setting::local_default`]); [`ConfigError::Missing`] without either.
    pub fn local_value(&self) -> Result<T, ConfigError> {
        match self.get_named(self.name)? {
            Some(value) => Ok(value),
            None => match self.local_default() {
                Some(value) => self.parse_named(self.name, value),
                None => Err(ConfigError::Missing(self.name.to_owned())),
            },
        }
    }

    /// The value set in the variable `name` under this declaration's rules, without any
    /// default: for a family of variables such as `{NAME}_TABLE`.
    pub fn get_named(&self, name: &str) -> Result<Option<T>, ConfigError> {
        self.raw(name)
            .map(|value| self.parse_named(name, &value))
            .transpose()
    }

    /// The declared default, parsed: the value a struct's `Default` gives its field.
    ///
    /// # Panics
    /// When the variable declares no [`Fallback::Value`] or its parser refuses it, which
    /// the module's tests rule out.
    pub fn default_value(&self) -> T {
        match self.fallback {
            Fallback::Value(value) => (self.parse)(value)
                .unwrap_or_else(|reason| panic!("{}'s default {value:?}: {reason}", self.name)),
            _ => panic!("{} declares no default value", self.name),
        }
    }

    fn parse_named(&self, name: &str, value: &str) -> Result<T, ConfigError> {
        (self.parse)(value).map_err(|reason| ConfigError::Invalid {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        })
    }
}

/// A number (or anything [`FromStr`]), surrounding whitespace ignored.
fn parsed<T: FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A name, an address: surrounding whitespace ignored.
fn trimmed(value: &str) -> Result<String, String> {
    Ok(value.trim().to_owned())
}

/// Free text, taken as written.
fn text(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

/// A path, taken as written.
fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

/// Why a tunable of the broker is left to its default by the template.
const TUNED_IN_CODE: &str = "its default suits API Gateway's limits and the template's \
                             functions; set it on the functions to tune a deployment";

mod variables;

pub use variables::*;

/// The secret the local mode uses when `JWT_SECRET` is not set. Never use it on AWS: the SAM
/// template requires a secret of its own.
pub const DEVELOPMENT_SECRET: &str = "local-development-secret-change-me-0123456789";

/// Parses a comma-separated list of asymmetric JWS algorithms.
pub(crate) fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
    let algorithms = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let algorithm: Algorithm = name
                .parse()
                .map_err(|_| format!("{name} is not a JWS algorithm"))?;
            if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(format!("{name} is symmetric: a key set holds public keys"));
            }
            Ok(algorithm)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err("no algorithm given".into());
    }
    Ok(algorithms)
}

/// Configuration that cannot work: a variable missing or malformed, a storage an app cannot
/// use. Raised at start, before anything is served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required environment variable is not set.
    #[error("environment variable {0} is not set")]
    Missing(String),
    /// A setting has a value that cannot be used.
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        /// The environment variable (or setting) read.
        name: String,
        /// The value it had.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The app cannot keep its data in the storage the process chose
    /// ([`crate::Storage::name`]).
    #[error("this app cannot keep its data in {0}")]
    UnsupportedStorage(&'static str),
    /// A table was asked for by a name the app's [`crate::App::tables`] does not list.
    #[error("the app has no table named {0:?}")]
    UnknownTable(String),
    /// The authentication settings cannot work (a missing secret, a bad key-set URL): an
    /// `AuthError` of the auth module.
    #[error(transparent)]
    Auth(Box<dyn std::error::Error + Send + Sync>),
}
