//! Signing per the Standard Webhooks specification: the secret is
//! `whsec_` and the base64 of the key; each request carries `webhook-id`,
//! `webhook-timestamp` (Unix seconds of the attempt) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;

/// The shortest key accepted, in bytes (the specification recommends
/// between 24 and 64).
pub const MIN_KEY_BYTES: usize = 24;
/// The longest.
pub const MAX_KEY_BYTES: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("webhook-secret must start with `whsec_`")]
    Prefix,
    #[error("webhook-secret: the part after `whsec_` is not base64")]
    Base64,
    #[error("webhook-secret: the key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {0}")]
    Length(usize),
}

/// The signing key.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SecretError::Base64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The `webhook-signature` header value of one attempt.
    pub fn signature(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn signs_id_timestamp_and_body_joined_by_dots() {
        let key = b"0123456789abcdef0123456789abcdef";
        let secret = Secret::parse(&format!("whsec_{}", STANDARD.encode(key))).unwrap();
        let signed = secret.signature("msg_1", 1_700_000_000, "{\"a\":1}");
        // The same HMAC computed independently over the joined string.
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key),
            b"msg_1.1700000000.{\"a\":1}",
        );
        assert_eq!(signed, format!("v1,{}", STANDARD.encode(expected.as_ref())));
        assert_ne!(
            signed,
            secret.signature("msg_1", 1_700_000_001, "{\"a\":1}")
        );
    }

    #[test]
    fn refuses_secrets_that_are_not_whsec_base64_of_a_good_length() {
        assert_eq!(Secret::parse("abc").unwrap_err(), SecretError::Prefix);
        assert_eq!(Secret::parse("whsec_!!!").unwrap_err(), SecretError::Base64);
        let short = format!("whsec_{}", STANDARD.encode([1u8; 8]));
        assert_eq!(Secret::parse(&short).unwrap_err(), SecretError::Length(8));
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        assert_eq!(Secret::parse(&long).unwrap_err(), SecretError::Length(65));
    }
}
