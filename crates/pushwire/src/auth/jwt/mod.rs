//! JSON Web Tokens: verification, and the grants they carry (read by the
//! core's `grants` module from the verified claims).
//!
//! [`Verifier::verify`] checks a token in a fixed order and stops at the
//! first failure: a key exists for the caller's role; the header's `alg` is
//! the one configured algorithm; the signature verifies with one of the
//! role's keys; `exp` and `nbf` hold; `aud` fits; every grant parses. The
//! algorithm always comes from the configuration, never from the token:
//! that is what defeats unsigned (`alg: none`) tokens and HMAC tokens keyed
//! with a published RSA key. A token that fails any step grants nothing,
//! and grants are never accepted in part: skipping the entries that fail
//! to parse would silently change what the token allows.
//!
//! Two generations of tokens are read, told apart by the header's `typ`:
//!
//! - classic (draft-07 of the Mercure protocol, which every released client
//!   library mints): `typ` absent or `JWT`, grants in the `mercure` claim;
//! - access tokens of the current draft: `typ: at+jwt` (RFC 9068), `aud`
//!   must name this hub, grants in the `authorization_details` entries of
//!   type `mercure` (RFC 9396).
//!
//! A token is read as one generation only: a classic token's
//! `authorization_details` and an access token's `mercure` claim are ignored.
//!
//! A role's keys are its static keys (any number, none with an id), tried
//! for every token, and the keys of its JWK set, if it has one: only the
//! one whose `kid` the token names, or, for a token without `kid`, all of
//! them. A JWK set only ever holds keys of the configured algorithm's kind
//! (see `jwks.rs`), so the algorithm still comes from the configuration.
//!
//! Files: this one verifies (the fixed order above, the two generations);
//! `claims.rs` holds the registered claims' rules (NumericDate, audience);
//! `keys.rs` reads and checks the configured keys; `jwks.rs` fetches and
//! refreshes JWK sets; `mint.rs` signs tokens of either generation for
//! `pushwire token`.
//!
//! Static keys are read and checked once, by [`Verifier::new`] when the hub
//! starts: a key that could never verify a token of the configured
//! algorithm stops the hub with a message, instead of turning every later
//! request into an unexplained `401`. JWK sets are fetched by
//! [`Verifier::start_key_sets`]; a token whose `kid` its role's set lacks
//! makes [`Verifier::refresh_keys_for`] fetch it again (rate-limited)
//! before the token is verified.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use pushwire_core::grants::{self, shown};
pub use pushwire_core::grants::{Grants, MAX_GRANT_ENTRIES, MAX_GRANT_SELECTORS};

use claims::{invalid, names_audience, numeric_date};
use jwks::JwksSource;
pub use jwks::{
    JwksLocation, DEFAULT_LIFETIME, FETCH_TIMEOUT, MAX_DOCUMENT_BYTES, MAX_KEYS, MAX_LIFETIME,
    MIN_LIFETIME, ON_DEMAND_INTERVAL,
};
use keys::{algorithm_names, load_key, ALGORITHMS};
use pushwire_core::metrics::Metrics;

mod claims;
mod jwks;
mod keys;
pub mod mint;
#[cfg(test)]
mod tests;

/// Clock difference tolerated between the token's issuer and the hub, in
/// seconds, on `exp` and `nbf`. Enough for machines kept in time by NTP;
/// small because an expired token stays usable for this long.
pub const CLOCK_LEEWAY_SECS: u64 = 5;

/// What token verification is configured with (see `ServeConfig::jwt_settings`).
#[derive(Clone)]
pub struct JwtSettings {
    /// The one signature algorithm tokens may use: HS256, HS384, HS512,
    /// RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA (case-insensitive).
    pub algorithm: String,
    /// Verify publishers' tokens: each the shared secret itself for HS*, a
    /// PEM public key otherwise (the PEM text, or the path of a PEM file).
    pub publisher_keys: Vec<String>,
    /// Verify subscribers' tokens; like `publisher_keys`.
    pub subscriber_keys: Vec<String>,
    /// The URL of a JWK set whose keys verify publishers' tokens too.
    pub publisher_jwks: Option<String>,
    /// The URL of a JWK set for subscribers' tokens.
    pub subscriber_jwks: Option<String>,
    /// The hub's resource identifier. Access tokens must name it in `aud`;
    /// classic tokens must too when they carry an `aud`.
    pub audience: Option<String>,
    /// The hub's own URL, against which relative URL patterns in grants are
    /// resolved.
    pub base_url: String,
    /// Issuer identifiers of the authorization servers the hub trusts
    /// (`--authorization-servers`). When any is given, an access token's
    /// `iss` must be one of them.
    pub issuers: Vec<String>,
}

/// The side of the hub a token is presented to. Each role has its own key,
/// so that whoever can mint subscriber tokens (often a web application's
/// backend) cannot mint publisher tokens unless given that key too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
    }
}

/// Which configured key a message is about: "the publisher JWT key", or
/// with several "the 2nd publisher JWT key".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyName {
    pub role: Role,
    /// 1-based, when the role has more than one static key.
    pub nth: Option<usize>,
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nth {
            Some(n) => write!(f, "{} {} JWT key", ordinal(n), self.role),
            None => write!(f, "{} JWT key", self.role),
        }
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, ... `11th`, `12th`, `13th`, `21st`.
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Why a presented token was refused. The HTTP edge answers all of them
/// alike (`401`, `invalid_token`), so that a client learns nothing about why;
/// the messages are for the hub's log. Text taken from the token is
/// shortened and escaped before it appears in them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("the token's signature does not verify with the configured key")]
    BadSignature,
    #[error("the token is signed with `{found}`, but this hub accepts only {expected}")]
    WrongAlgorithm {
        expected: &'static str,
        found: String,
    },
    #[error("the token has expired (its `exp` is past)")]
    Expired,
    #[error("the token is not valid yet (its `nbf` is in the future)")]
    NotYetValid,
    #[error("the token's `typ` is `{found}`; this hub reads `JWT` (classic) and `at+jwt` (access token) tokens only")]
    WrongType { found: String },
    #[error("the token's `aud` does not name this hub's audience")]
    WrongAudience,
    #[error("the token's `iss` is not one of the authorization servers this hub trusts")]
    WrongIssuer,
    #[error("access tokens (`typ: at+jwt`) must name the hub in `aud`, and this hub has no audience configured (start it with --jwt-audience)")]
    AudienceNotConfigured,
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("no {0} JWT key is configured, so {0} tokens cannot be verified")]
    NoKey(Role),
    #[error("no key of the {role} JWK set has the token's `kid` `{kid}`")]
    UnknownKeyId { role: Role, kid: String },
    #[error(
        "the {0} JWK set has not been fetched yet, so tokens needing its keys cannot be verified"
    )]
    KeySetUnavailable(Role),
}

/// Why the token settings cannot be used. The hub refuses to start on any
/// of them: accepting a key that can never verify a token would only move
/// the failure to every request.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("unsupported JWT algorithm `{0}`: use one of {list} (unsigned `none` tokens are never accepted)", list = algorithm_names())]
    UnsupportedAlgorithm(String),
    #[error("the {0} is empty")]
    EmptyKey(KeyName),
    #[error(
        "the JWT audience is empty: set it to the hub's resource identifier, or leave it unset"
    )]
    EmptyAudience,
    #[error("the {key} is a PEM key, but {algorithm} verifies with a shared secret: set the JWT algorithm to the key's (RS256, ES256, EdDSA, ...)")]
    PemKeyForHmac {
        key: KeyName,
        algorithm: &'static str,
    },
    #[error("cannot read the {key} file `{path}` ({algorithm} needs a PEM public key, given as the PEM text or as the path of a PEM file): {source}")]
    KeyFile {
        key: KeyName,
        algorithm: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {key} cannot verify {algorithm} tokens: {reason}")]
    InvalidKey {
        key: KeyName,
        algorithm: &'static str,
        reason: String,
    },
    #[error("the {role} JWK set URL {reason}")]
    JwksUrl { role: Role, reason: String },
    #[error(transparent)]
    Outbound(#[from] crate::outbound::OutboundError),
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone)]
pub struct Claims {
    /// `sub`: who the bearer is (a user id for user streams).
    pub subject: Option<String>,
    /// `exp`, in seconds since 1970: streams opened with the token close then.
    pub expires_at: Option<u64>,
    pub grants: Grants,
}

/// What verifies one role's tokens.
#[derive(Clone, Default)]
struct RoleKeys {
    /// Tried for every token, in the configured order.
    statics: Vec<DecodingKey>,
    jwks: Option<Arc<JwksSource>>,
}

impl RoleKeys {
    fn is_empty(&self) -> bool {
        self.statics.is_empty() && self.jwks.is_none()
    }
}

/// Verifies tokens for both roles. Built once at start; cheap to share.
#[derive(Clone)]
pub struct Verifier {
    /// The configured algorithm's name, compared with each token's `alg`.
    algorithm: &'static str,
    publisher: RoleKeys,
    subscriber: RoleKeys,
    /// jsonwebtoken's checks reduced to `alg` and the signature: time and
    /// audience are checked here, where leeway, error kinds and the two
    /// token generations are under our control.
    validation: Validation,
    audience: Option<String>,
    base_url: String,
    issuers: Vec<String>,
}

impl fmt::Debug for Verifier {
    // Keys stay out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("publisher_keys", &self.publisher.statics.len())
            .field(
                "publisher_jwks",
                &self.publisher.jwks.as_ref().map(|s| &s.shown),
            )
            .field("subscriber_keys", &self.subscriber.statics.len())
            .field(
                "subscriber_jwks",
                &self.subscriber.jwks.as_ref().map(|s| &s.shown),
            )
            .field("audience", &self.audience)
            .field("base_url", &self.base_url)
            .field("issuers", &self.issuers)
            .finish()
    }
}

impl Verifier {
    /// Checks the algorithm, reads and checks the static keys and the JWK
    /// set URLs (nothing is fetched here: see [`Verifier::start_key_sets`]).
    /// With no key for a role, that role's tokens are refused
    /// ([`TokenError::NoKey`]).
    pub fn new(settings: &JwtSettings) -> Result<Verifier, JwtConfigError> {
        let wanted = settings.algorithm.trim();
        let (name, algorithm, kind) = ALGORITHMS
            .into_iter()
            .find(|(name, ..)| name.eq_ignore_ascii_case(wanted))
            .ok_or_else(|| JwtConfigError::UnsupportedAlgorithm(settings.algorithm.clone()))?;
        if settings
            .audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            return Err(JwtConfigError::EmptyAudience);
        }
        let load = |role, keys: &[String]| {
            keys.iter()
                .enumerate()
                .map(|(n, text)| {
                    let key = KeyName {
                        role,
                        nth: (keys.len() > 1).then_some(n + 1),
                    };
                    load_key(key, name, kind, text)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        fn location(
            role: Role,
            url: Option<&str>,
        ) -> Result<Option<(JwksLocation, &str)>, JwtConfigError> {
            url.map(|text| {
                JwksLocation::parse(text)
                    .map(|location| (location, text))
                    .map_err(|reason| JwtConfigError::JwksUrl { role, reason })
            })
            .transpose()
        }
        let publisher_jwks = location(Role::Publisher, settings.publisher_jwks.as_deref())?;
        let subscriber_jwks = location(Role::Subscriber, settings.subscriber_jwks.as_deref())?;
        let client = match [&publisher_jwks, &subscriber_jwks]
            .iter()
            .any(|l| matches!(l, Some((JwksLocation::Http(_), _))))
        {
            true => Some(crate::outbound::client(jwks::FETCH_TIMEOUT)?),
            false => None,
        };
        let source = |found: Option<(JwksLocation, &str)>| {
            found.map(|(location, text)| {
                let client = matches!(location, JwksLocation::Http(_))
                    .then(|| client.clone())
                    .flatten();
                Arc::new(JwksSource::new(location, text, client, name, kind))
            })
        };
        // One URL for both roles is one set, fetched once.
        let same =
            publisher_jwks.as_ref().map(|(l, _)| l) == subscriber_jwks.as_ref().map(|(l, _)| l);
        let publisher_source = source(publisher_jwks);
        let subscriber_source = match same {
            true => publisher_source.clone(),
            false => source(subscriber_jwks),
        };
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Verifier {
            algorithm: name,
            publisher: RoleKeys {
                statics: load(Role::Publisher, &settings.publisher_keys)?,
                jwks: publisher_source,
            },
            subscriber: RoleKeys {
                statics: load(Role::Subscriber, &settings.subscriber_keys)?,
                jwks: subscriber_source,
            },
            validation,
            audience: settings.audience.clone(),
            base_url: settings.base_url.clone(),
            issuers: settings.issuers.clone(),
        })
    }

    /// Whether any key (static or JWK set) verifies `role`'s tokens.
    pub fn has_keys(&self, role: Role) -> bool {
        !self.keys(role).is_empty()
    }

    fn keys(&self, role: Role) -> &RoleKeys {
        match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        }
    }

    /// Fetches every configured JWK set once (waiting at most
    /// [`FETCH_TIMEOUT`] for each), then keeps them fresh in the
    /// background. A set that cannot be fetched is logged and tried again
    /// later; the hub starts all the same. Needs a Tokio runtime.
    pub async fn start_key_sets(&self, metrics: Arc<Metrics>) {
        let publisher = self.publisher.jwks.clone();
        let subscriber = self
            .subscriber
            .jwks
            .clone()
            .filter(|s| !publisher.as_ref().is_some_and(|p| Arc::ptr_eq(p, s)));
        let start = |source: Option<Arc<JwksSource>>| {
            let metrics = metrics.clone();
            async move {
                if let Some(source) = source {
                    source.start(metrics).await;
                }
            }
        };
        futures_util::future::join(start(publisher), start(subscriber)).await;
    }

    /// For callers that can wait: when `token` names a `kid` its role's JWK
    /// set lacks (or the set has not been fetched yet), fetches the set
    /// again first, at most once per [`ON_DEMAND_INTERVAL`], so a key
    /// rotated in a moment ago verifies at once. Does nothing otherwise.
    pub async fn refresh_keys_for(&self, role: Role, token: &str) {
        if let Some(source) = self.stale_key_set(role, token) {
            source.refresh_on_demand().await;
        }
    }

    /// The role's JWK set, when a fetch could help this token.
    fn stale_key_set(&self, role: Role, token: &str) -> Option<&Arc<JwksSource>> {
        let source = self.keys(role).jwks.as_ref()?;
        let header = read_header(token).ok()?;
        let kid = header.get("kid").and_then(Value::as_str);
        source.lacks(kid).then_some(source)
    }

    /// Verifies a token presented in `role` and reads its grants. A token
    /// refused for want of its key starts a refresh of the role's JWK set
    /// in the background (rate-limited); [`Verifier::refresh_keys_for`]
    /// waits for it instead.
    pub fn verify(&self, role: Role, token: &str) -> Result<Claims, TokenError> {
        let result = self.verify_at(role, token, pushwire_core::log::now_ms() / 1000);
        if result.is_err() {
            if let Some(source) = self.stale_key_set(role, token) {
                source.refresh_soon();
            }
        }
        result
    }

    /// [`Verifier::verify`] at `now` (seconds since 1970), so tests can
    /// check the time rules at their edges.
    fn verify_at(&self, role: Role, token: &str, now: u64) -> Result<Claims, TokenError> {
        let keys = self.keys(role);
        if keys.is_empty() {
            return Err(TokenError::NoKey(role));
        }

        let header = read_header(token)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed("the header has no `alg`"))?;
        if alg != self.algorithm {
            return Err(TokenError::WrongAlgorithm {
                expected: self.algorithm,
                found: shown(alg),
            });
        }
        // RFC 7515 §4.1.11: extensions marked critical must be understood,
        // and this hub understands none.
        if header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "the header lists critical extensions (`crit`), which this hub does not support",
            ));
        }
        let generation = Generation::of(header.get("typ"))?;
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Malformed("the header's `kid` is not a string")),
        };

        let claims = self.decode(role, keys, token, kid)?;

        let expires_at = numeric_date(&claims, "exp")?;
        // RFC 9068 requires `exp` of access tokens, and the current draft
        // has the hub refuse one without ("Token Validation"): a token that
        // never expires cannot be bounded. Classic tokens may omit it.
        if generation == Generation::Access && expires_at.is_none() {
            return Err(invalid("access tokens (`typ: at+jwt`) must carry `exp`"));
        }
        if expires_at.is_some_and(|exp| now >= exp.saturating_add(CLOCK_LEEWAY_SECS)) {
            return Err(TokenError::Expired);
        }
        if numeric_date(&claims, "nbf")?
            .is_some_and(|nbf| now.saturating_add(CLOCK_LEEWAY_SECS) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        self.check_audience(&claims, generation)?;
        self.check_issuer(&claims, generation)?;

        let subject = match claims.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(sub)) => Some(sub.clone()),
            Some(_) => return Err(invalid("`sub` must be a string")),
        };
        let grants = match generation {
            Generation::Classic => grants::classic(&claims, &self.base_url),
            Generation::Access => grants::access(&claims, &self.base_url),
        }
        .map_err(|e| TokenError::InvalidClaims(e.to_string()))?;
        Ok(Claims {
            subject,
            expires_at,
            grants,
        })
    }

    /// The claims, once one of the role's keys verifies the signature: the
    /// static keys, then the JWK set's keys for `kid`. Errors other than a
    /// signature that does not verify are the token's, whichever key reads
    /// it, and end the search.
    fn decode(
        &self,
        role: Role,
        keys: &RoleKeys,
        token: &str,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, TokenError> {
        let set = keys.jwks.as_ref().map(|source| source.current());
        let from_set = set.iter().flatten().flat_map(|set| set.candidates(kid));
        let mut tried = false;
        for key in keys.statics.iter().chain(from_set) {
            tried = true;
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => match decode_error(error) {
                    TokenError::BadSignature => continue,
                    other => return Err(other),
                },
            }
        }
        Err(match (set, kid) {
            // The set would have been the only hope: say why it was none.
            (Some(None), _) if keys.statics.is_empty() => TokenError::KeySetUnavailable(role),
            (Some(Some(_)), Some(kid)) if !tried => TokenError::UnknownKeyId {
                role,
                kid: shown(kid),
            },
            _ => TokenError::BadSignature,
        })
    }

    /// Access tokens must name this hub in `aud` (RFC 9068), which keeps a
    /// token minted for another hub sharing the key from working here.
    /// Classic tokens predate that rule: their `aud` is checked only when
    /// both the token has one and the hub is configured with one.
    fn check_audience(
        &self,
        claims: &Map<String, Value>,
        generation: Generation,
    ) -> Result<(), TokenError> {
        let aud = claims.get("aud").filter(|v| !v.is_null());
        match (generation, self.audience.as_deref(), aud) {
            (Generation::Access, None, _) => Err(TokenError::AudienceNotConfigured),
            (Generation::Access, Some(_), None) => Err(TokenError::WrongAudience),
            (_, Some(expected), Some(aud)) => {
                if names_audience(aud, expected)? {
                    Ok(())
                } else {
                    Err(TokenError::WrongAudience)
                }
            }
            (Generation::Classic, _, _) => Ok(()),
        }
    }
}

impl Verifier {
    /// When the hub trusts authorization servers, an access token must have
    /// been issued by one of them (RFC 9068; the current draft's "Token
    /// Validation"). Classic tokens predate issuers and are not checked.
    fn check_issuer(
        &self,
        claims: &Map<String, Value>,
        generation: Generation,
    ) -> Result<(), TokenError> {
        if generation == Generation::Classic || self.issuers.is_empty() {
            return Ok(());
        }
        match claims.get("iss") {
            Some(Value::String(iss)) if self.issuers.iter().any(|trusted| trusted == iss) => Ok(()),
            None | Some(Value::Null) | Some(Value::String(_)) => Err(TokenError::WrongIssuer),
            Some(_) => Err(invalid("`iss` must be a string")),
        }
    }
}

/// The two token formats, told apart by the header's `typ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    /// `typ` absent or `JWT`: grants in the `mercure` claim.
    Classic,
    /// `typ: at+jwt`: grants in `authorization_details`.
    Access,
}

impl Generation {
    /// Other types (`dpop+jwt`, `logout+jwt`, ...) are refused: a token
    /// issued for another purpose must not pass for one of ours (RFC 8725
    /// §3.11).
    fn of(typ: Option<&Value>) -> Result<Generation, TokenError> {
        let typ = match typ {
            None | Some(Value::Null) => return Ok(Generation::Classic),
            Some(Value::String(typ)) => typ,
            Some(_) => return Err(TokenError::Malformed("the header's `typ` is not a string")),
        };
        // A media type: compared case-insensitively, and the `application/`
        // prefix may be left out (RFC 7515 §4.1.9).
        let short = match typ.split_at_checked("application/".len()) {
            Some((prefix, rest)) if prefix.eq_ignore_ascii_case("application/") => rest,
            _ => typ,
        };
        if short.eq_ignore_ascii_case("jwt") {
            Ok(Generation::Classic)
        } else if short.eq_ignore_ascii_case("at+jwt") {
            Ok(Generation::Access)
        } else {
            Err(TokenError::WrongType { found: shown(typ) })
        }
    }
}

/// The JOSE header, read before any verification so that `alg` and `typ`
/// can be checked first. It decides nothing by itself: the signature is
/// still checked with the configured algorithm only.
fn read_header(token: &str) -> Result<Map<String, Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("a JWT has three dot-separated parts"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| TokenError::Malformed("the header is not a JSON object"))
}

fn decode_error(error: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidToken => TokenError::Malformed("a JWT has three dot-separated parts"),
        ErrorKind::Base64(_) => TokenError::Malformed("a part is not base64url"),
        ErrorKind::Json(_) => {
            TokenError::Malformed("the header or the claims are not a valid JSON object")
        }
        ErrorKind::Utf8(_) => TokenError::Malformed("a part is not UTF-8"),
        // Only the configured algorithm reaches jsonwebtoken, with a key of
        // its family checked at start: what remains are signatures that
        // could not be checked, which is a signature that does not verify.
        _ => TokenError::BadSignature,
    }
}
