//! The registered claims' rules (RFC 7519): NumericDate values for `exp`
//! and `nbf`, and `aud` as a string or an array of strings. A claim of the
//! wrong type is refused rather than taken as absent, so a mistyped `exp`
//! cannot make a token eternal.

use serde_json::{Map, Value};

use super::TokenError;

/// A token whose claims do not fit the rules, with the reason.
pub(super) fn invalid(reason: &str) -> TokenError {
    TokenError::InvalidClaims(reason.to_owned())
}

/// A NumericDate claim (RFC 7519 §2): seconds since 1970, possibly with a
/// fraction, which is dropped. Anything else is refused rather than taken
/// as absent, so that a mistyped `exp` cannot make a token eternal.
pub(super) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenError> {
    let refuse = || {
        TokenError::InvalidClaims(format!(
            "`{name}` must be a non-negative number of seconds since 1970"
        ))
    };
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            (None, Some(secs)) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
            _ => Err(refuse()),
        },
        Some(_) => Err(refuse()),
    }
}

/// Whether `aud` (a string, or an array of strings) contains `expected`.
pub(super) fn names_audience(aud: &Value, expected: &str) -> Result<bool, TokenError> {
    let refuse = || invalid("`aud` must be a string or an array of strings");
    match aud {
        Value::String(aud) => Ok(aud == expected),
        Value::Array(auds) => auds.iter().try_fold(false, |found, aud| match aud {
            Value::String(aud) => Ok(found || aud == expected),
            _ => Err(refuse()),
        }),
        _ => Err(refuse()),
    }
}
