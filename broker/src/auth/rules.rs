//! The rules every token meets, whoever verifies its signature (RFC 8725): one algorithm
//! per key, `exp` required, no `crit` header, registered claims of their registered types,
//! no key given twice, and a `sub` that is a printable id.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use super::{AuthError, Identity, MAX_SUBJECT_BYTES};
use crate::domain::UserId;

/// A [`Validation`] for one algorithm, with an optional required issuer and audience, and
/// `leeway_secs` of clock skew tolerated for `exp` and `nbf`.
pub fn validation(
    algorithm: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
    leeway_secs: u64,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    // A configured `iss` or `aud` must also be present: jsonwebtoken only compares the
    // claims a token carries unless they are required.
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Verifies `token` with `key` under `validation`, then applies the rules jsonwebtoken leaves
/// to its caller (RFC 8725): no `crit`, registered claims of their registered types, a
/// printable bounded `sub`. The identity's authority ends when jsonwebtoken starts refusing
/// the token (it accepts it through the second `exp` plus the leeway), so a socket closes
/// when a request with the same token would be refused.
pub fn verify_jwt(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Identity, AuthError> {
    check_unambiguous(token)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError::invalid(format!("header: {e}")))?;
    check_header(&header)?;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::invalid(e.to_string()),
        })?
        .claims;
    let identity = check_claims(&claims)?;
    Ok(Identity {
        expires_at: identity.expires_at.saturating_add(validation.leeway + 1),
        ..identity
    })
}

/// Header rules that hold whatever the key: an unknown critical extension must be refused
/// (RFC 7515 §4.1.11), and the broker understands none.
pub fn check_header(header: &Header) -> Result<(), AuthError> {
    if header.crit.is_some() {
        return Err(AuthError::invalid("crit header present"));
    }
    Ok(())
}

/// Claim rules that hold whatever the key, run after the signature and `exp`/`nbf`/`iss`/
/// `aud` were checked by jsonwebtoken (which reads an ill-typed claim as an absent one).
pub fn check_claims(claims: &Map<String, Value>) -> Result<Identity, AuthError> {
    let numeric = |name: &str| -> Result<Option<u64>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| AuthError::invalid(format!("{name} is not a NumericDate"))),
        }
    };
    let expires_at = numeric("exp")?.ok_or_else(|| AuthError::invalid("exp is missing"))?;
    numeric("nbf")?;
    numeric("iat")?;
    if let Some(iss) = claims.get("iss")
        && !iss.is_string()
    {
        return Err(AuthError::invalid("iss is not a string"));
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(AuthError::invalid("aud is not a string or list of strings")),
    }
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) => sub,
        Some(_) => return Err(AuthError::invalid("sub is not a string")),
        None => return Err(AuthError::invalid("sub is missing")),
    };
    if let Some(problem) = user_id_problem(sub) {
        return Err(AuthError::invalid(format!("sub {problem}")));
    }
    // The roles the issuer grants (`"roles": ["backend"]`); a claim of another shape makes
    // the token invalid rather than role-less.
    let roles = match claims.get("roles") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AuthError::invalid("roles is not a list of strings"))?,
        Some(_) => return Err(AuthError::invalid("roles is not a list of strings")),
    };
    Ok(Identity {
        user: UserId::new(sub.clone()),
        roles,
        expires_at,
    })
}

/// What makes `id` unfit to be a user id, if anything: the rules a token's `sub` must
/// satisfy ([`check_claims`]): at least one visible character, at most
/// [`MAX_SUBJECT_BYTES`], no control character, no line or paragraph separator nor format
/// character (two ids that print alike must not be two users). Audiences of published
/// events are checked against them too ([`crate::publish::check_audience`]).
pub fn user_id_problem(id: &str) -> Option<String> {
    if !id.chars().any(is_visible) {
        return Some("has no visible character".to_owned());
    }
    if id.len() > MAX_SUBJECT_BYTES {
        return Some(format!(
            "has {} bytes, more than {MAX_SUBJECT_BYTES}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Some("contains a control character".to_owned());
    }
    // Invisible, or breaking a line of a log or a header where the id is written.
    if id.chars().any(is_separator_or_format) {
        return Some("contains a line or paragraph separator or a format character".to_owned());
    }
    None
}

/// Whether `c` shows: a letter, mark, number, punctuation or symbol, not a space, separator,
/// control, format, private-use or unassigned code point.
fn is_visible(c: char) -> bool {
    !matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Separator | GeneralCategoryGroup::Other
    )
}

/// Unicode's line and paragraph separators (U+2028, U+2029) and its format characters
/// (zero-width spaces and joiners, bidirectional controls, the byte order mark, ...).
fn is_separator_or_format(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Format
    )
}

/// Refuses a token whose header or claims give one key twice, at any depth: JSON leaves
/// such an object's meaning to the reader (jsonwebtoken takes the last), so a token that
/// says `"roles"` or `"alg"` twice may mean one thing to its issuer and another here.
pub fn check_unambiguous(token: &str) -> Result<(), AuthError> {
    use base64::Engine as _;
    let mut segments = token.split('.');
    for part in ["header", "claims"] {
        let Some(segment) = segments.next() else {
            return Err(AuthError::invalid(format!("no {part} segment")));
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|e| AuthError::invalid(format!("{part}: {e}")))?;
        let mut reader = serde_json::Deserializer::from_slice(&json);
        serde::Deserialize::deserialize(&mut reader)
            .map(|UniqueKeys| ())
            .map_err(|e| AuthError::invalid(format!("{part}: {e}")))?;
    }
    Ok(())
}

/// Any JSON value whose objects, at every depth, name each key once.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key {key:?} given twice")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}
