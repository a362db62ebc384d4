//! Minting tokens this hub accepts, for `pushwire token`: tests, scripts
//! and backends that want a token without writing JWT code.
//!
//! A minted token is what [`Verifier`](super::Verifier) checks, built from
//! the same tables: the algorithm comes from the same allow-list, the key
//! is refused for the same reasons the hub would refuse its counterpart
//! (a PEM text as an HMAC secret, a key of the wrong kind), and the grants
//! are read back by the core's `grants` before the token is signed, so a
//! topic the hub would refuse (an unclosed `{`, too many selectors) fails
//! here with the reason instead of at the hub as a bare `401`.
//!
//! Every token carries `iat` and `exp`: a token that never expires cannot
//! be taken back, and current-draft access tokens must carry `exp`.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Map, Value};

use pushwire_core::grants::{self, DETAIL_TYPES};
use pushwire_core::route::Selector;

use super::keys::{algorithm_names, pem_error, KeyKind, PublicKind, ALGORITHMS};
use super::Role;

/// Where the signing key comes from. A secret given on the command line is
/// visible to every user of the machine (`ps`), so the default is the
/// environment variable the hub itself reads the role's key from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The key itself (`--secret`).
    Text(String),
    /// An environment variable holding it (`--secret-env`, or by default
    /// `PUSHWIRE_PUBLISHER_JWT_KEY` / `PUSHWIRE_SUBSCRIBER_JWT_KEY`).
    Env(String),
    /// A file holding it: a PEM private key, or an HMAC secret, whose one
    /// trailing line break (as editors and `echo` write) is not part of it.
    File(PathBuf),
}

impl KeySource {
    /// The environment variable the hub reads `role`'s key from.
    pub fn hub_env(role: Role) -> KeySource {
        KeySource::Env(
            match role {
                Role::Publisher => "PUSHWIRE_PUBLISHER_JWT_KEY",
                Role::Subscriber => "PUSHWIRE_SUBSCRIBER_JWT_KEY",
            }
            .to_owned(),
        )
    }

    fn read(&self) -> Result<String, MintError> {
        match self {
            KeySource::Text(text) => Ok(text.clone()),
            KeySource::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(value),
                Err(std::env::VarError::NotPresent) => Err(MintError::NoKey(name.clone())),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(MintError::KeyNotUnicode(name.clone()))
                }
            },
            KeySource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| MintError::KeyFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let trimmed = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                Ok(trimmed.to_owned())
            }
        }
    }
}

/// Which generation of token to mint (see the module doc of `jwt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimsForm {
    /// The classic `mercure` claim, which every released client library
    /// reads and mints.
    #[default]
    Mercure,
    /// A current-draft access token: `typ: at+jwt`, grants in
    /// `authorization_details`, `aud` required.
    AuthorizationDetails,
}

/// What to put in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Publisher tokens grant publishing to `topics`, subscriber tokens
    /// reading their private updates.
    pub role: Role,
    /// One of the hub's algorithms, named as `--jwt-alg` names it.
    pub algorithm: String,
    /// Topic selectors: exact topics, URI templates (`{`) or `*`.
    pub topics: Vec<String>,
    /// `sub`: the user whose stream a subscriber token opens.
    pub subject: Option<String>,
    /// How long from now the token is valid (`exp`).
    pub ttl: Duration,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub form: ClaimsForm,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("unsupported JWT algorithm `{0}`: use one of {list} (the hub's --jwt-alg)", list = algorithm_names())]
    UnsupportedAlgorithm(String),
    #[error("no signing key: the environment variable {0} is not set (give the key with --secret-env VAR, --key-file PATH or --secret)")]
    NoKey(String),
    #[error("the environment variable {0} is not valid UTF-8")]
    KeyNotUnicode(String),
    #[error("cannot read the key file `{path}`: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key is empty")]
    EmptyKey,
    #[error("the signing key is a PEM key, but {0} signs with a shared secret: pass --alg with the key's algorithm (RS256, ES256, EdDSA, ...)")]
    PemKeyForHmac(&'static str),
    #[error("{algorithm} signs with a PEM private key: give it with --key-file PATH (or --secret-env VAR holding the PEM text)")]
    NotPem { algorithm: &'static str },
    #[error("the signing key cannot sign {algorithm} tokens: {reason}")]
    InvalidKey {
        algorithm: &'static str,
        reason: String,
    },
    #[error("access tokens (`authorization_details`) must name the hub in `aud`: give --audience, the hub's --jwt-audience")]
    AudienceRequired,
    #[error("the token's lifetime (--ttl) must be at least one second")]
    ZeroTtl,
    #[error("the token's lifetime (--ttl) is too long")]
    TtlTooLong,
    #[error("the hub would refuse these grants: {0}")]
    Grants(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Signs a token for `request` with the key from `key`, valid from `now`
/// (seconds since 1970).
pub fn mint(request: &TokenRequest, key: &KeySource, now: u64) -> Result<String, MintError> {
    let wanted = request.algorithm.trim();
    let (name, algorithm, kind) = ALGORITHMS
        .into_iter()
        .find(|(name, ..)| name.eq_ignore_ascii_case(wanted))
        .ok_or_else(|| MintError::UnsupportedAlgorithm(request.algorithm.clone()))?;
    let claims = claims(request, now)?;
    let key = encoding_key(name, kind, &key.read()?)?;
    let mut header = Header::new(algorithm);
    header.typ = Some(
        match request.form {
            ClaimsForm::Mercure => "JWT",
            ClaimsForm::AuthorizationDetails => "at+jwt",
        }
        .to_owned(),
    );
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
        | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
        | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) => MintError::InvalidKey {
            algorithm: name,
            reason: format!("{e} (is it a key of {name}'s kind?)"),
        },
        _ => MintError::Sign(e.to_string()),
    })
}

/// The claims of the token, checked by the hub's own grant reader.
fn claims(request: &TokenRequest, now: u64) -> Result<Map<String, Value>, MintError> {
    if request.ttl.as_secs() == 0 {
        return Err(MintError::ZeroTtl);
    }
    let exp = now
        .checked_add(request.ttl.as_secs())
        .filter(|exp| *exp < 1 << 53)
        .ok_or(MintError::TtlTooLong)?;
    let action = match request.role {
        Role::Publisher => "publish",
        Role::Subscriber => "subscribe",
    };
    let mut claims = Map::new();
    if let Some(subject) = &request.subject {
        claims.insert("sub".to_owned(), json!(subject));
    }
    if let Some(issuer) = &request.issuer {
        claims.insert("iss".to_owned(), json!(issuer));
    }
    if let Some(audience) = &request.audience {
        claims.insert("aud".to_owned(), json!(audience));
    }
    claims.insert("iat".to_owned(), json!(now));
    claims.insert("exp".to_owned(), json!(exp));
    match request.form {
        ClaimsForm::Mercure => {
            claims.insert("mercure".to_owned(), json!({ action: request.topics }));
            grants::classic(&claims, "").map_err(|e| MintError::Grants(e.to_string()))?;
        }
        ClaimsForm::AuthorizationDetails => {
            if request.audience.is_none() {
                return Err(MintError::AudienceRequired);
            }
            // The classic reading of a selector's text (`*`, `{` a URI
            // template, else exact) chooses each matcher's type, so that
            // `--topic` means the same in both forms.
            let topics = request
                .topics
                .iter()
                .map(|text| {
                    let kind = Selector::classic(text)
                        .map_err(|e| MintError::Grants(e.to_string()))?
                        .kind();
                    Ok(json!({ "match": text, "match_type": kind.draft_name() }))
                })
                .collect::<Result<Vec<_>, MintError>>()?;
            let details = match topics.is_empty() {
                true => json!([]),
                false => json!([{
                    "type": DETAIL_TYPES[0],
                    "actions": [action],
                    "topics": topics,
                }]),
            };
            claims.insert("authorization_details".to_owned(), details);
            grants::access(&claims, "").map_err(|e| MintError::Grants(e.to_string()))?;
        }
    }
    Ok(claims)
}

/// The key that signs `algorithm`'s tokens, refused for the reasons the
/// hub refuses its counterpart (see `keys.rs`).
fn encoding_key(
    algorithm: &'static str,
    kind: KeyKind,
    text: &str,
) -> Result<EncodingKey, MintError> {
    if text.trim().is_empty() {
        return Err(MintError::EmptyKey);
    }
    let kind = match kind {
        KeyKind::Secret if text.contains("-----BEGIN") => {
            return Err(MintError::PemKeyForHmac(algorithm))
        }
        KeyKind::Secret => return Ok(EncodingKey::from_secret(text.as_bytes())),
        KeyKind::Public(kind) => kind,
    };
    if !text.contains("-----BEGIN") {
        return Err(MintError::NotPem { algorithm });
    }
    // As the hub reads its keys: a PEM on one line has its line breaks
    // written `\n` (environment variables, `.env` files).
    let pem = match text.contains('\n') {
        true => text.to_owned(),
        false => text.replace("\\n", "\n"),
    };
    let invalid = |reason: String| MintError::InvalidKey { algorithm, reason };
    let block = pem::parse(&pem).map_err(|e| invalid(pem_error(e)))?;
    match block.tag() {
        "PRIVATE KEY" | "RSA PRIVATE KEY" => {}
        "EC PRIVATE KEY" => {
            return Err(invalid(
                "it is an EC key in SEC1 form; convert it to PKCS#8 \
                 (`openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.p8.pem`)"
                    .to_owned(),
            ))
        }
        label if label.contains("PUBLIC KEY") || label == "CERTIFICATE" => {
            return Err(invalid(
                "it is the public half, which the hub verifies with; tokens are signed with the private key".to_owned(),
            ))
        }
        label => return Err(invalid(format!("a `{label}` PEM block is not a private key"))),
    }
    let pem = pem.as_bytes();
    match kind {
        PublicKind::Rsa => EncodingKey::from_rsa_pem(pem),
        PublicKind::EcP256 | PublicKind::EcP384 => EncodingKey::from_ec_pem(pem),
        PublicKind::Ed25519 => EncodingKey::from_ed_pem(pem),
    }
    .map_err(|e| invalid(format!("the key does not parse as {algorithm}'s kind: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::{JwtSettings, TokenError, Verifier};
    use super::*;

    const SECRET: &str = "a test secret of at least thirty-two bytes";
    const AUDIENCE: &str = "https://hub.example.com/.well-known/mercure";

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn verifier(algorithm: &str, key: &str, audience: Option<&str>) -> Verifier {
        Verifier::new(&JwtSettings {
            algorithm: algorithm.to_owned(),
            publisher_keys: vec![key.to_owned()],
            subscriber_keys: vec![key.to_owned()],
            publisher_jwks: None,
            subscriber_jwks: None,
            audience: audience.map(str::to_owned),
            base_url: "https://hub.example.com/".to_owned(),
            issuers: vec!["https://issuer.example.com".to_owned()],
        })
        .unwrap()
    }

    fn request(role: Role, topics: &[&str]) -> TokenRequest {
        TokenRequest {
            role,
            algorithm: "HS256".to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            subject: None,
            ttl: Duration::from_secs(60),
            audience: None,
            issuer: None,
            form: ClaimsForm::Mercure,
        }
    }

    fn now() -> u64 {
        pushwire_core::log::now_ms() / 1000
    }

    fn secret() -> KeySource {
        KeySource::Text(SECRET.to_owned())
    }

    #[test]
    fn a_minted_subscriber_token_grants_its_topics_and_names_its_user() {
        let mut wanted = request(Role::Subscriber, &["news", "orders/{id}"]);
        wanted.subject = Some("alice".to_owned());
        // One reading of the clock: a second boundary between minting and
        // checking must not move the expected expiry.
        let minted_at = now();
        let token = mint(&wanted, &secret(), minted_at).unwrap();
        let claims = verifier("HS256", SECRET, None)
            .verify(Role::Subscriber, &token)
            .unwrap();
        assert_eq!(claims.subject.as_deref(), Some("alice"));
        assert!(claims.grants.may_subscribe("news"));
        assert!(claims.grants.may_subscribe("orders/42"));
        assert!(!claims.grants.may_subscribe("other"));
        assert!(!claims.grants.may_publish("news"));
        assert_eq!(claims.expires_at, Some(minted_at + 60));
    }

    #[test]
    fn a_minted_publisher_token_for_everything_publishes_everywhere() {
        let token = mint(&request(Role::Publisher, &["*"]), &secret(), now()).unwrap();
        let claims = verifier("HS256", SECRET, None)
            .verify(Role::Publisher, &token)
            .unwrap();
        assert!(claims.grants.publish_all());
        assert!(!claims.grants.may_subscribe("news"));
    }

    #[test]
    fn access_tokens_carry_authorization_details_and_need_an_audience() {
        let mut wanted = request(Role::Subscriber, &["news", "orders/{id}", "*"]);
        wanted.form = ClaimsForm::AuthorizationDetails;
        assert!(matches!(
            mint(&wanted, &secret(), now()),
            Err(MintError::AudienceRequired)
        ));
        wanted.audience = Some(AUDIENCE.to_owned());
        wanted.issuer = Some("https://issuer.example.com".to_owned());
        let token = mint(&wanted, &secret(), now()).unwrap();
        let claims = verifier("HS256", SECRET, Some(AUDIENCE))
            .verify(Role::Subscriber, &token)
            .unwrap();
        assert!(claims.grants.is_current_draft());
        assert!(claims.grants.may_subscribe("orders/7"));
        // Another hub's audience, or an untrusted issuer, is refused.
        let elsewhere = verifier("HS256", SECRET, Some("https://other.example.com/"));
        assert!(matches!(
            elsewhere.verify(Role::Subscriber, &token),
            Err(TokenError::WrongAudience)
        ));
        wanted.issuer = Some("https://stranger.example.com".to_owned());
        let token = mint(&wanted, &secret(), now()).unwrap();
        assert!(matches!(
            verifier("HS256", SECRET, Some(AUDIENCE)).verify(Role::Subscriber, &token),
            Err(TokenError::WrongIssuer)
        ));
    }

    #[test]
    fn a_token_past_its_ttl_is_refused() {
        let token = mint(&request(Role::Publisher, &["*"]), &secret(), now() - 3600).unwrap();
        assert!(matches!(
            verifier("HS256", SECRET, None).verify(Role::Publisher, &token),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn pem_private_keys_sign_what_their_public_keys_verify() {
        for (algorithm, private, public) in [
            ("RS256", "rsa.pem", "rsa.pub.pem"),
            ("PS256", "rsa.pem", "rsa.pub.pem"),
            ("ES256", "ec.pem", "ec.pub.pem"),
            ("EdDSA", "ed25519.pem", "ed25519.pub.pem"),
        ] {
            let mut wanted = request(Role::Subscriber, &["news"]);
            wanted.algorithm = algorithm.to_owned();
            let key = KeySource::File(fixture(private).into());
            let token = mint(&wanted, &key, now()).unwrap();
            let claims = verifier(algorithm, &fixture(public), None)
                .verify(Role::Subscriber, &token)
                .unwrap();
            assert!(claims.grants.may_subscribe("news"), "{algorithm}");
            // The PEM text on one line, as an environment variable holds it.
            let text = std::fs::read_to_string(fixture(private)).unwrap();
            let one_line = KeySource::Text(text.trim_end().replace('\n', "\\n"));
            assert!(mint(&wanted, &one_line, now()).is_ok(), "{algorithm}");
        }
    }

    #[test]
    fn keys_that_cannot_sign_are_refused_with_a_reason() {
        let with = |algorithm: &str, key: KeySource| {
            let mut wanted = request(Role::Publisher, &["*"]);
            wanted.algorithm = algorithm.to_owned();
            mint(&wanted, &key, now()).unwrap_err()
        };
        let file = |name: &str| KeySource::File(fixture(name).into());
        assert!(matches!(
            with("HS256", file("rsa.pem")),
            MintError::PemKeyForHmac("HS256")
        ));
        assert!(matches!(
            with("RS256", secret()),
            MintError::NotPem { algorithm: "RS256" }
        ));
        let public = with("RS256", file("rsa.pub.pem")).to_string();
        assert!(public.contains("public half"), "{public}");
        assert!(matches!(
            with("ES256", file("rsa.pem")),
            MintError::InvalidKey { .. }
        ));
        assert!(matches!(
            with("none", secret()),
            MintError::UnsupportedAlgorithm(_)
        ));
        assert!(matches!(
            with("HS256", KeySource::Text(" ".into())),
            MintError::EmptyKey
        ));
        let missing = with("HS256", KeySource::Env("PUSHWIRE_TEST_UNSET_KEY".into()));
        assert!(missing.to_string().contains("PUSHWIRE_TEST_UNSET_KEY"));
    }

    #[test]
    fn a_secret_file_loses_its_trailing_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let token = mint(
            &request(Role::Publisher, &["*"]),
            &KeySource::File(path),
            now(),
        )
        .unwrap();
        assert!(verifier("HS256", SECRET, None)
            .verify(Role::Publisher, &token)
            .is_ok());
    }

    #[test]
    fn grants_the_hub_would_refuse_are_refused_before_signing() {
        let bad = mint(
            &request(Role::Subscriber, &["orders/{id"]),
            &secret(),
            now(),
        );
        assert!(matches!(bad, Err(MintError::Grants(_))), "{bad:?}");
        let mut zero = request(Role::Subscriber, &["news"]);
        zero.ttl = Duration::ZERO;
        assert!(matches!(
            mint(&zero, &secret(), now()),
            Err(MintError::ZeroTtl)
        ));
    }
}
