//! JSON Web Tokens: verification and the grants they carry.
//!
//! [`Verifier::verify`] checks a token in a fixed order and stops at the
//! first failure: a key exists for the caller's role; the header's `alg` is
//! the one configured algorithm; the signature verifies; `exp` and `nbf`
//! hold; `aud` fits; every grant parses. The algorithm always comes from the
//! configuration, never from the token: that is what defeats unsigned
//! (`alg: none`) tokens and HMAC tokens keyed with a published RSA key. A
//! token that fails any step grants nothing, and grants are never accepted
//! in part: skipping the entries that fail to parse would silently change
//! what the token allows.
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
//! Keys are read and checked once, by [`Verifier::new`] when the hub starts:
//! a key that could never verify a token of the configured algorithm stops
//! the hub with a message, instead of turning every later request into an
//! unexplained `401`.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use simple_asn1::{oid, ASN1Block};

use pushwire_core::route::{MatchKind, Selector};

/// Clock difference tolerated between the token's issuer and the hub, in
/// seconds, on `exp` and `nbf`. Enough for machines kept in time by NTP;
/// small because an expired token stays usable for this long.
pub const CLOCK_LEEWAY_SECS: u64 = 5;

/// Most `authorization_details` entries (of any type) one token may carry.
pub const MAX_GRANT_ENTRIES: usize = 100;

/// Most topic selectors one token may grant, publish and subscribe grants
/// together (an entry granting both actions on a topic counts it twice).
/// Every selector is compiled each time the token is verified and tried
/// against topics afterwards, so this bounds the work one token can cause.
pub const MAX_GRANT_SELECTORS: usize = 1_000;

/// What token verification is configured with (see `ServeConfig::jwt_settings`).
#[derive(Clone)]
pub struct JwtSettings {
    /// The one signature algorithm tokens may use: HS256, HS384, HS512,
    /// RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA (case-insensitive).
    pub algorithm: String,
    /// Verifies publishers' tokens: the shared secret itself for HS*, a PEM
    /// public key otherwise (the PEM text, or the path of a PEM file).
    pub publisher_key: Option<String>,
    /// Verifies subscribers' tokens; like `publisher_key`.
    pub subscriber_key: Option<String>,
    /// The hub's resource identifier. Access tokens must name it in `aud`;
    /// classic tokens must too when they carry an `aud`.
    pub audience: Option<String>,
    /// The hub's own URL, against which relative URL patterns in grants are
    /// resolved.
    pub base_url: String,
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
    #[error("access tokens (`typ: at+jwt`) must name the hub in `aud`, and this hub has no audience configured (start it with --jwt-audience)")]
    AudienceNotConfigured,
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("no {0} JWT key is configured, so {0} tokens cannot be verified")]
    NoKey(Role),
}

/// Why the token settings cannot be used. The hub refuses to start on any
/// of them: accepting a key that can never verify a token would only move
/// the failure to every request.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("unsupported JWT algorithm `{0}`: use one of {list} (unsigned `none` tokens are never accepted)", list = algorithm_names())]
    UnsupportedAlgorithm(String),
    #[error("the {0} JWT key is empty")]
    EmptyKey(Role),
    #[error(
        "the JWT audience is empty: set it to the hub's resource identifier, or leave it unset"
    )]
    EmptyAudience,
    #[error("the {role} JWT key is a PEM key, but {algorithm} verifies with a shared secret: set the JWT algorithm to the key's (RS256, ES256, EdDSA, ...)")]
    PemKeyForHmac { role: Role, algorithm: &'static str },
    #[error("cannot read the {role} JWT key file `{path}` ({algorithm} needs a PEM public key, given as the PEM text or as the path of a PEM file): {source}")]
    KeyFile {
        role: Role,
        algorithm: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {role} JWT key cannot verify {algorithm} tokens: {reason}")]
    InvalidKey {
        role: Role,
        algorithm: &'static str,
        reason: String,
    },
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

/// The topics a token may publish to and read private updates of, in the
/// order the token lists them (the order decides which payload a
/// subscription gets). The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    publish: Vec<Selector>,
    subscribe: Vec<Selector>,
    /// The payload of the grant of `subscribe[i]`, if it carries one; always
    /// as long as `subscribe`.
    subscribe_payloads: Vec<Option<Arc<Value>>>,
    /// The classic `mercure.payload`: the payload of subscriptions no grant
    /// gives one.
    payload: Option<Value>,
}

impl Grants {
    /// Whether a publish grant selects `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|s| s.matches(topic))
    }

    /// Whether a subscribe grant selects `topic` (its private updates may
    /// be read).
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|s| s.matches(topic))
    }

    /// Whether a publish grant is the wildcard `*`: the token may publish to
    /// every topic, which calls not scoped to a topic require.
    pub fn publish_all(&self) -> bool {
        self.publish.iter().any(Selector::is_any)
    }

    /// The subscribe grants, in token order.
    pub fn subscribe_selectors(&self) -> &[Selector] {
        &self.subscribe
    }

    /// The payload shown with a subscription (subscriptions API and events).
    ///
    /// The first subscribe grant that covers the subscription decides: the
    /// wildcard `*`, a grant of the same kind and text, or a grant that
    /// matches the subscription's text read as a topic. Its payload wins;
    /// when it has none, or no grant covers the subscription, the classic
    /// top-level `mercure.payload` applies. First match, not best match, as
    /// the protocol says: a broad grant listed first masks the payloads of
    /// the specific grants after it.
    pub fn payload_for(&self, subscription: &Selector) -> Option<&Value> {
        let covers = |grant: &Selector| {
            grant.is_any() || grant == subscription || grant.matches(subscription.as_str())
        };
        let first = self
            .subscribe
            .iter()
            .zip(&self.subscribe_payloads)
            .find(|(grant, _)| covers(grant));
        match first {
            Some((_, Some(payload))) => Some(payload),
            _ => self.payload.as_ref(),
        }
    }

    fn add_subscribe(&mut self, selector: Selector, payload: Option<Arc<Value>>) {
        self.subscribe.push(selector);
        self.subscribe_payloads.push(payload);
    }

    /// Refuses a token whose grants would exceed [`MAX_GRANT_SELECTORS`],
    /// before the `more` selectors are compiled.
    fn reserve(&self, more: usize) -> Result<(), String> {
        let total = (self.publish.len() + self.subscribe.len()).saturating_add(more);
        if total > MAX_GRANT_SELECTORS {
            Err(format!(
                "the grants name more than {MAX_GRANT_SELECTORS} topic selectors"
            ))
        } else {
            Ok(())
        }
    }
}

/// The kind of key an algorithm verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// HMAC: the configured text is the shared secret.
    Secret,
    Public(PublicKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublicKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// The allow-list, by the names tokens carry in `alg`. Algorithms
/// jsonwebtoken knows beyond these (PS384, PS512) are left out until someone
/// needs them; `none` is not an algorithm here at all.
const ALGORITHMS: [(&str, Algorithm, KeyKind); 10] = [
    ("HS256", Algorithm::HS256, KeyKind::Secret),
    ("HS384", Algorithm::HS384, KeyKind::Secret),
    ("HS512", Algorithm::HS512, KeyKind::Secret),
    ("RS256", Algorithm::RS256, KeyKind::Public(PublicKind::Rsa)),
    ("RS384", Algorithm::RS384, KeyKind::Public(PublicKind::Rsa)),
    ("RS512", Algorithm::RS512, KeyKind::Public(PublicKind::Rsa)),
    ("PS256", Algorithm::PS256, KeyKind::Public(PublicKind::Rsa)),
    (
        "ES256",
        Algorithm::ES256,
        KeyKind::Public(PublicKind::EcP256),
    ),
    (
        "ES384",
        Algorithm::ES384,
        KeyKind::Public(PublicKind::EcP384),
    ),
    (
        "EdDSA",
        Algorithm::EdDSA,
        KeyKind::Public(PublicKind::Ed25519),
    ),
];

fn algorithm_names() -> String {
    ALGORITHMS.map(|(name, ..)| name).join(", ")
}

/// Verifies tokens for both roles. Built once at start; cheap to share.
#[derive(Clone)]
pub struct Verifier {
    /// The configured algorithm's name, compared with each token's `alg`.
    algorithm: &'static str,
    publisher: Option<DecodingKey>,
    subscriber: Option<DecodingKey>,
    /// jsonwebtoken's checks reduced to `alg` and the signature: time and
    /// audience are checked here, where leeway, error kinds and the two
    /// token generations are under our control.
    validation: Validation,
    audience: Option<String>,
    base_url: String,
}

impl fmt::Debug for Verifier {
    // Keys stay out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("publisher_key", &self.publisher.is_some())
            .field("subscriber_key", &self.subscriber.is_some())
            .field("audience", &self.audience)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Verifier {
    /// Checks the algorithm and reads and checks the keys. With no key for
    /// a role, that role's tokens are refused ([`TokenError::NoKey`]).
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
        let load = |role, key: &Option<String>| {
            key.as_deref()
                .map(|text| load_key(role, name, kind, text))
                .transpose()
        };
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Verifier {
            algorithm: name,
            publisher: load(Role::Publisher, &settings.publisher_key)?,
            subscriber: load(Role::Subscriber, &settings.subscriber_key)?,
            validation,
            audience: settings.audience.clone(),
            base_url: settings.base_url.clone(),
        })
    }

    /// Verifies a token presented in `role` and reads its grants.
    pub fn verify(&self, role: Role, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(role, token, pushwire_core::log::now_ms() / 1000)
    }

    /// [`Verifier::verify`] at `now` (seconds since 1970), so tests can
    /// check the time rules at their edges.
    fn verify_at(&self, role: Role, token: &str, now: u64) -> Result<Claims, TokenError> {
        let key = match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
        .ok_or(TokenError::NoKey(role))?;

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

        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(decode_error)?
            .claims;

        let expires_at = numeric_date(&claims, "exp")?;
        if expires_at.is_some_and(|exp| now >= exp.saturating_add(CLOCK_LEEWAY_SECS)) {
            return Err(TokenError::Expired);
        }
        if numeric_date(&claims, "nbf")?
            .is_some_and(|nbf| now.saturating_add(CLOCK_LEEWAY_SECS) < nbf)
        {
            return Err(TokenError::NotYetValid);
        }
        self.check_audience(&claims, generation)?;

        let subject = match claims.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(sub)) => Some(sub.clone()),
            Some(_) => return Err(invalid("`sub` must be a string")),
        };
        let grants = match generation {
            Generation::Classic => classic_grants(&claims, &self.base_url),
            Generation::Access => access_grants(&claims, &self.base_url),
        }
        .map_err(TokenError::InvalidClaims)?;
        Ok(Claims {
            subject,
            expires_at,
            grants,
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

fn invalid(reason: &str) -> TokenError {
    TokenError::InvalidClaims(reason.to_owned())
}

/// A NumericDate claim (RFC 7519 §2): seconds since 1970, possibly with a
/// fraction, which is dropped. Anything else is refused rather than taken
/// as absent, so that a mistyped `exp` cannot make a token eternal.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
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
fn names_audience(aud: &Value, expected: &str) -> Result<bool, TokenError> {
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

/// A member that is present and not `null`.
fn present<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|v| !v.is_null())
}

/// Grants of a classic token:
/// `"mercure": {"publish": [..], "subscribe": [..], "payload": any}`.
///
/// List entries are strings, read as the classic protocol reads selectors
/// (`*`, a URI template when the text has a `{`, else an exact topic), or
/// objects `{"match", "matchType", "payload"}` with the match type named
/// case-insensitively (`Exact` when absent). A list holding anything else,
/// or an entry that does not parse, makes the token invalid.
fn classic_grants(claims: &Map<String, Value>, base: &str) -> Result<Grants, String> {
    let mut grants = Grants::default();
    let Some(mercure) = present(claims, "mercure") else {
        return Ok(grants);
    };
    let mercure = mercure.as_object().ok_or("`mercure` must be an object")?;
    let publish = classic_list(mercure, "publish")?;
    let subscribe = classic_list(mercure, "subscribe")?;
    grants.reserve(publish.len().saturating_add(subscribe.len()))?;
    for (i, entry) in publish.iter().enumerate() {
        let (selector, _) =
            classic_entry(entry, base).map_err(|e| format!("mercure.publish[{i}]: {e}"))?;
        grants.publish.push(selector);
    }
    for (i, entry) in subscribe.iter().enumerate() {
        let (selector, payload) =
            classic_entry(entry, base).map_err(|e| format!("mercure.subscribe[{i}]: {e}"))?;
        grants.add_subscribe(selector, payload);
    }
    grants.payload = present(mercure, "payload").cloned();
    Ok(grants)
}

fn classic_list<'a>(mercure: &'a Map<String, Value>, name: &str) -> Result<&'a [Value], String> {
    match present(mercure, name) {
        None => Ok(&[]),
        Some(Value::Array(entries)) => Ok(entries),
        Some(_) => Err(format!("`mercure.{name}` must be an array")),
    }
}

fn classic_entry(entry: &Value, base: &str) -> Result<(Selector, Option<Arc<Value>>), String> {
    match entry {
        Value::String(text) => Selector::classic(text)
            .map(|selector| (selector, None))
            .map_err(|e| e.to_string()),
        Value::Object(fields) => {
            let text = fields
                .get("match")
                .and_then(Value::as_str)
                .ok_or("an object entry needs a string `match`")?;
            let kind = match present(fields, "matchType") {
                None => MatchKind::Exact,
                Some(Value::String(name)) => [
                    MatchKind::Exact,
                    MatchKind::UriTemplate,
                    MatchKind::UrlPattern,
                ]
                .into_iter()
                .find(|kind| kind.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("unknown `matchType` `{}`", shown(name)))?,
                Some(_) => return Err("`matchType` must be a string".to_owned()),
            };
            let selector = Selector::parse(kind, text, base).map_err(|e| e.to_string())?;
            let payload = present(fields, "payload").cloned().map(Arc::new);
            Ok((selector, payload))
        }
        _ => Err("an entry must be a string or an object".to_owned()),
    }
}

/// Grants of an access token: the `authorization_details` entries of type
/// `mercure`. Entries of other types belong to other resource servers and
/// are skipped; a `mercure` entry that does not parse makes the whole token
/// invalid (the protocol forbids acting on the remaining entries).
fn access_grants(claims: &Map<String, Value>, base: &str) -> Result<Grants, String> {
    let mut grants = Grants::default();
    let details = match present(claims, "authorization_details") {
        None => return Ok(grants),
        Some(Value::Array(details)) => details,
        Some(_) => return Err("`authorization_details` must be an array".to_owned()),
    };
    if details.len() > MAX_GRANT_ENTRIES {
        return Err(format!(
            "more than {MAX_GRANT_ENTRIES} `authorization_details` entries"
        ));
    }
    for (i, detail) in details.iter().enumerate() {
        let at = |reason: String| format!("authorization_details[{i}]: {reason}");
        let detail = detail
            .as_object()
            .ok_or_else(|| at("must be an object".to_owned()))?;
        match detail.get("type") {
            Some(Value::String(kind)) if kind == "mercure" => {
                add_mercure_detail(&mut grants, detail, base).map_err(at)?;
            }
            Some(Value::String(_)) => {}
            _ => return Err(at("needs a string `type` (RFC 9396)".to_owned())),
        }
    }
    Ok(grants)
}

/// One `{"type": "mercure", "actions": [..], "topics": [..], "payload": {..}}`
/// entry: non-empty `actions` among `publish` and `subscribe`, non-empty
/// `topics` of `{"match", "matchType"}` objects with `matchType` `Exact`
/// (the default) or `URLPattern`, spelled exactly.
fn add_mercure_detail(
    grants: &mut Grants,
    detail: &Map<String, Value>,
    base: &str,
) -> Result<(), String> {
    let actions = detail
        .get("actions")
        .and_then(Value::as_array)
        .filter(|actions| !actions.is_empty())
        .ok_or("`actions` must be a non-empty array")?;
    let (mut publish, mut subscribe) = (false, false);
    for action in actions {
        match action.as_str() {
            Some("publish") => publish = true,
            Some("subscribe") => subscribe = true,
            Some(other) => return Err(format!("unknown action `{}`", shown(other))),
            None => return Err("`actions` must hold strings".to_owned()),
        }
    }
    let topics = detail
        .get("topics")
        .and_then(Value::as_array)
        .filter(|topics| !topics.is_empty())
        .ok_or("`topics` must be a non-empty array")?;
    let payload = match detail.get("payload") {
        None | Some(Value::Null) => None,
        Some(payload @ Value::Object(_)) => Some(Arc::new(payload.clone())),
        Some(_) => return Err("`payload` must be a JSON object".to_owned()),
    };
    grants.reserve(
        topics
            .len()
            .saturating_mul(usize::from(publish) + usize::from(subscribe)),
    )?;
    for (j, topic) in topics.iter().enumerate() {
        let topic = topic
            .as_object()
            .ok_or_else(|| format!("topics[{j}] must be an object"))?;
        let text = topic
            .get("match")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("topics[{j}] needs a string `match`"))?;
        let kind = match topic.get("matchType") {
            None => MatchKind::Exact,
            Some(Value::String(name)) if name == "Exact" => MatchKind::Exact,
            Some(Value::String(name)) if name == "URLPattern" => MatchKind::UrlPattern,
            Some(other) => {
                let name = other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned);
                return Err(format!(
                    "topics[{j}]: unknown `matchType` `{}` (`Exact` or `URLPattern`)",
                    shown(&name)
                ));
            }
        };
        let selector =
            Selector::parse(kind, text, base).map_err(|e| format!("topics[{j}]: {e}"))?;
        if publish {
            grants.publish.push(selector.clone());
        }
        if subscribe {
            grants.add_subscribe(selector, payload.clone());
        }
    }
    Ok(())
}

/// Token-supplied text made fit for a log line: at most 40 characters,
/// control characters escaped.
fn shown(text: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

// Keys.
//
// Public keys are inspected here (PEM label, key type, curve, RSA size) only
// to explain a wrong key in words at start, with the `pem` and `simple_asn1`
// crates jsonwebtoken itself reads keys with; the key jsonwebtoken verifies
// with is parsed by jsonwebtoken from the same PEM text.

/// Turns a configured key into the key that verifies `algorithm`'s tokens.
fn load_key(
    role: Role,
    algorithm: &'static str,
    kind: KeyKind,
    text: &str,
) -> Result<DecodingKey, JwtConfigError> {
    if text.trim().is_empty() {
        return Err(JwtConfigError::EmptyKey(role));
    }
    let kind = match kind {
        // A PEM text as an HMAC secret is the setup of the algorithm
        // confusion attack (the public key, known to all, signs tokens):
        // refuse it rather than guess.
        KeyKind::Secret if text.contains("-----BEGIN") => {
            return Err(JwtConfigError::PemKeyForHmac { role, algorithm })
        }
        KeyKind::Secret => return Ok(DecodingKey::from_secret(text.as_bytes())),
        KeyKind::Public(kind) => kind,
    };
    let pem = if text.contains("-----BEGIN") {
        // Environment variables and `.env` files often carry a PEM on one
        // line, with its line breaks written `\n`.
        if text.contains('\n') {
            text.to_owned()
        } else {
            text.replace("\\n", "\n")
        }
    } else {
        let path = text.trim();
        std::fs::read_to_string(path).map_err(|source| JwtConfigError::KeyFile {
            role,
            algorithm,
            path: path.to_owned(),
            source,
        })?
    };
    let invalid = |reason: String| JwtConfigError::InvalidKey {
        role,
        algorithm,
        reason,
    };
    let block = pem::parse(&pem).map_err(|e| invalid(pem_error(e)))?;
    kind.check(&block).map_err(invalid)?;
    // jsonwebtoken reads the same first block of the text.
    let pem = pem.as_bytes();
    match kind {
        PublicKind::Rsa => DecodingKey::from_rsa_pem(pem),
        PublicKind::EcP256 | PublicKind::EcP384 => DecodingKey::from_ec_pem(pem),
        PublicKind::Ed25519 => DecodingKey::from_ed_pem(pem),
    }
    .map_err(|e| invalid(format!("the key does not parse: {e}")))
}

impl PublicKind {
    fn describe(self) -> &'static str {
        match self {
            PublicKind::Rsa => "an RSA key",
            PublicKind::EcP256 => "an EC P-256 key",
            PublicKind::EcP384 => "an EC P-384 key",
            PublicKind::Ed25519 => "an Ed25519 key",
        }
    }

    /// Whether the PEM block is a public key of this kind. ring, under
    /// jsonwebtoken, verifies RSA signatures with 2048- to 8192-bit keys
    /// only, and ECDSA with the curve the algorithm names.
    fn check(self, block: &pem::Pem) -> Result<(), String> {
        let found = match block.tag() {
            "PUBLIC KEY" => PublicKeyInfo::from_spki(block.contents())?,
            "RSA PUBLIC KEY" => PublicKeyInfo::Rsa {
                bits: rsa_modulus_bits(block.contents())
                    .ok_or("the RSA public key does not parse")?,
            },
            label if label.contains("PRIVATE KEY") => {
                return Err("it is a private key; the hub needs only the public key \
                     (`openssl pkey -in key.pem -pubout`)"
                    .to_owned())
            }
            "CERTIFICATE" => {
                return Err("it is a certificate; give the hub its public key \
                     (`openssl x509 -in cert.pem -pubkey -noout`)"
                    .to_owned())
            }
            label => return Err(format!("a `{label}` PEM block is not a public key")),
        };
        match (self, found) {
            (PublicKind::Rsa, PublicKeyInfo::Rsa { bits }) if (2048..=8192).contains(&bits) => {
                Ok(())
            }
            (PublicKind::Rsa, PublicKeyInfo::Rsa { bits }) => Err(format!(
                "the RSA key has {bits} bits; RSA signatures are verified with keys of 2048 to 8192 bits"
            )),
            (PublicKind::EcP256 | PublicKind::EcP384, PublicKeyInfo::Ec(Some(curve)))
                if curve == self =>
            {
                Ok(())
            }
            (PublicKind::Ed25519, PublicKeyInfo::Ed25519) => Ok(()),
            (_, found) => Err(format!("it is {found}, not {}", self.describe())),
        }
    }
}

/// What a public key is, as far as choosing an algorithm goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublicKeyInfo {
    Rsa {
        bits: usize,
    },
    /// An EC key; `None` when on a curve no allowed algorithm uses.
    Ec(Option<PublicKind>),
    Ed25519,
    Other,
}

impl fmt::Display for PublicKeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublicKeyInfo::Rsa { .. } => "an RSA key",
            PublicKeyInfo::Ec(Some(curve)) => curve.describe(),
            PublicKeyInfo::Ec(None) => "an EC key on a curve other than P-256 and P-384",
            PublicKeyInfo::Ed25519 => "an Ed25519 key",
            PublicKeyInfo::Other => "a key of a type no allowed algorithm uses",
        })
    }
}

impl PublicKeyInfo {
    /// Reads a SubjectPublicKeyInfo (RFC 5280 §4.1): `SEQUENCE { SEQUENCE {
    /// algorithm OID, parameters }, BIT STRING key }`.
    fn from_spki(der: &[u8]) -> Result<PublicKeyInfo, String> {
        let malformed = || "the public key does not parse".to_owned();
        let blocks = simple_asn1::from_der(der)
            .map_err(|e| format!("the public key does not parse: {e}"))?;
        let Some(ASN1Block::Sequence(_, spki)) = blocks.first() else {
            return Err(malformed());
        };
        let (Some(ASN1Block::Sequence(_, algorithm)), Some(ASN1Block::BitString(_, bits, key))) =
            (spki.first(), spki.get(1))
        else {
            return Err(malformed());
        };
        let Some(ASN1Block::ObjectIdentifier(_, oid)) = algorithm.first() else {
            return Err(malformed());
        };
        // A key is a whole number of bytes.
        if *bits != key.len() * 8 {
            return Err(malformed());
        }
        Ok(if *oid == oid!(1, 2, 840, 113549, 1, 1, 1) {
            // rsaEncryption
            PublicKeyInfo::Rsa {
                bits: rsa_modulus_bits(key).ok_or_else(malformed)?,
            }
        } else if *oid == oid!(1, 2, 840, 10045, 2, 1) {
            // id-ecPublicKey, with the curve as its parameter.
            PublicKeyInfo::Ec(match algorithm.get(1) {
                Some(ASN1Block::ObjectIdentifier(_, curve))
                    if *curve == oid!(1, 2, 840, 10045, 3, 1, 7) =>
                {
                    Some(PublicKind::EcP256)
                }
                Some(ASN1Block::ObjectIdentifier(_, curve)) if *curve == oid!(1, 3, 132, 0, 34) => {
                    Some(PublicKind::EcP384)
                }
                _ => None,
            })
        } else if *oid == oid!(1, 3, 101, 112) {
            // id-Ed25519
            PublicKeyInfo::Ed25519
        } else {
            PublicKeyInfo::Other
        })
    }
}

/// The size of an RSA key from its PKCS#1 form, `SEQUENCE { INTEGER n,
/// INTEGER e }`.
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let blocks = simple_asn1::from_der(pkcs1).ok()?;
    let Some(ASN1Block::Sequence(_, fields)) = blocks.first() else {
        return None;
    };
    let Some(ASN1Block::Integer(_, modulus)) = fields.first() else {
        return None;
    };
    // `None` for a negative modulus.
    let bits = modulus.to_biguint()?.bits();
    usize::try_from(bits).ok().filter(|&bits| bits > 0)
}

/// Why the configured key text is not one PEM block, in words.
fn pem_error(error: pem::PemError) -> String {
    match error {
        pem::PemError::MalformedFraming => {
            "it is not PEM: no `-----BEGIN ...-----` line followed by its `-----END ...-----` line"
                .to_owned()
        }
        pem::PemError::MismatchedTags(begin, end) => {
            format!("the `-----BEGIN {begin}-----` line is closed by `-----END {end}-----`")
        }
        pem::PemError::InvalidData(_) => "the PEM body is not base64".to_owned(),
        other => format!("the PEM block does not parse: {other}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a test secret of at least thirty-two bytes";
    const OTHER_SECRET: &str = "another test secret, for the other role";
    const AUDIENCE: &str = "https://hub.example.com/.well-known/mercure";

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn settings(algorithm: &str, key: &str) -> JwtSettings {
        JwtSettings {
            algorithm: algorithm.to_owned(),
            publisher_key: Some(key.to_owned()),
            subscriber_key: Some(key.to_owned()),
            audience: None,
            base_url: "https://hub.example.com/".to_owned(),
        }
    }

    fn hs256() -> Verifier {
        Verifier::new(&settings("HS256", SECRET)).unwrap()
    }

    fn hs256_with_audience() -> Verifier {
        Verifier::new(&JwtSettings {
            audience: Some(AUDIENCE.to_owned()),
            ..settings("HS256", SECRET)
        })
        .unwrap()
    }

    fn now() -> u64 {
        pushwire_core::log::now_ms() / 1000
    }

    fn mint_with(alg: Algorithm, key: &EncodingKey, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// A classic HS256 token.
    fn classic(claims: Value) -> String {
        mint_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Some("JWT"),
            &claims,
        )
    }

    /// A current-draft HS256 access token.
    fn access(claims: Value) -> String {
        mint_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Some("at+jwt"),
            &claims,
        )
    }

    fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with a hand-written header, signed with `alg` and `key`.
    fn crafted(header: &str, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
        let message = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    }

    fn hs_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET.as_bytes())
    }

    fn exact(topic: &str) -> Selector {
        Selector::exact(topic).unwrap()
    }

    // Classic tokens.

    #[test]
    fn classic_grants_allow_exactly_the_listed_topics() {
        let token = classic(json!({
            "sub": "alice",
            "exp": now() + 600,
            "mercure": {
                "publish": ["https://example.com/books/1"],
                "subscribe": ["https://example.com/books/1", "https://example.com/users/alice"],
            },
        }));
        let claims = hs256().verify(Role::Publisher, &token).unwrap();
        assert_eq!(claims.subject.as_deref(), Some("alice"));
        let grants = &claims.grants;
        assert!(grants.may_publish("https://example.com/books/1"));
        assert!(!grants.may_publish("https://example.com/books/2"));
        assert!(!grants.may_publish("https://example.com/users/alice"));
        assert!(!grants.publish_all());
        assert!(grants.may_subscribe("https://example.com/users/alice"));
        assert!(!grants.may_subscribe("https://example.com/users/bob"));
        assert_eq!(
            grants.subscribe_selectors(),
            &[
                exact("https://example.com/books/1"),
                exact("https://example.com/users/alice")
            ]
        );
    }

    #[test]
    fn wildcard_publish_grant_allows_every_topic() {
        let token = classic(json!({"mercure": {"publish": ["*"]}}));
        let grants = hs256().verify(Role::Publisher, &token).unwrap().grants;
        assert!(grants.publish_all());
        assert!(grants.may_publish("anything at all"));
        assert!(!grants.may_subscribe("anything at all"));
    }

    #[test]
    fn token_without_mercure_claim_is_valid_and_grants_nothing() {
        let claims = hs256()
            .verify(Role::Subscriber, &classic(json!({})))
            .unwrap();
        assert!(!claims.grants.may_subscribe("https://example.com/a"));
        assert!(!claims.grants.may_publish("https://example.com/a"));
        assert!(claims.grants.subscribe_selectors().is_empty());
        assert_eq!(claims.subject, None);
        assert_eq!(claims.expires_at, None);
    }

    #[test]
    fn token_without_typ_is_read_as_classic() {
        let token = mint_with(
            Algorithm::HS256,
            &hs_key(),
            None,
            &json!({"mercure": {"publish": ["a"]}}),
        );
        assert!(hs256()
            .verify(Role::Publisher, &token)
            .unwrap()
            .grants
            .may_publish("a"));
    }

    #[test]
    fn classic_object_entries_default_to_exact_and_name_their_kind_in_any_case() {
        let token = classic(json!({"mercure": {"subscribe": [
            {"match": "https://example.com/a"},
            {"match": "https://example.com/b", "matchType": "exact"},
            {"match": "*", "matchType": "URLPATTERN"},
        ]}}));
        let grants = hs256().verify(Role::Subscriber, &token).unwrap().grants;
        assert_eq!(
            &grants.subscribe_selectors()[..2],
            &[
                exact("https://example.com/a"),
                exact("https://example.com/b")
            ]
        );
        assert!(grants.subscribe_selectors()[2].is_any());
    }

    #[test]
    fn malformed_classic_grants_make_the_token_invalid() {
        for mercure in [
            json!("publish everything"),
            json!({"publish": "*"}),
            json!({"publish": [42]}),
            json!({"publish": ["ok", ""]}),
            json!({"subscribe": [{"matchType": "Exact"}]}),
            json!({"subscribe": [{"match": "a", "matchType": "regex"}]}),
            json!({"subscribe": [{"match": "a", "matchType": 1}]}),
        ] {
            let token = classic(json!({ "mercure": mercure }));
            assert!(
                matches!(
                    hs256().verify(Role::Publisher, &token),
                    Err(TokenError::InvalidClaims(_))
                ),
                "{mercure} was accepted"
            );
        }
    }

    #[test]
    fn sub_must_be_a_string() {
        let token = classic(json!({"sub": 42}));
        assert!(matches!(
            hs256().verify(Role::Subscriber, &token),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    // Signatures, algorithms and keys.

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let token = mint_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(OTHER_SECRET.as_bytes()),
            Some("JWT"),
            &json!({"mercure": {"publish": ["*"]}}),
        );
        assert_eq!(
            hs256().verify(Role::Publisher, &token).unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn tampered_claims_are_refused() {
        let token = classic(json!({"mercure": {"publish": ["a"]}}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(
            json!({"mercure": {"publish": ["*"]}})
                .to_string()
                .as_bytes(),
        );
        parts[1] = &forged;
        assert_eq!(
            hs256()
                .verify(Role::Publisher, &parts.join("."))
                .unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn unsigned_alg_none_token_is_refused() {
        let claims = json!({"mercure": {"publish": ["*"]}});
        let payload = b64url(claims.to_string().as_bytes());
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
        ] {
            let token = format!("{}.{payload}.", b64url(header.as_bytes()));
            assert!(
                matches!(
                    hs256().verify(Role::Publisher, &token),
                    Err(TokenError::WrongAlgorithm { .. })
                ),
                "{header} was not refused as a wrong algorithm"
            );
        }
        // The same with a signature part that is not empty.
        let token = format!("{}.{payload}.c2lnbmF0dXJl", b64url(br#"{"alg":"none"}"#));
        assert!(matches!(
            hs256().verify(Role::Publisher, &token),
            Err(TokenError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn algorithm_is_never_taken_from_the_token() {
        // HS384 is a fine algorithm, but not the configured one.
        let token = mint_with(Algorithm::HS384, &hs_key(), Some("JWT"), &json!({}));
        assert_eq!(
            hs256().verify(Role::Publisher, &token).unwrap_err(),
            TokenError::WrongAlgorithm {
                expected: "HS256",
                found: "HS384".to_owned()
            }
        );
        // Names are compared exactly.
        let token = crafted(
            r#"{"alg":"hs256"}"#,
            &json!({}),
            Algorithm::HS256,
            &hs_key(),
        );
        assert!(matches!(
            hs256().verify(Role::Publisher, &token),
            Err(TokenError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn hmac_token_keyed_with_the_rsa_public_key_is_refused() {
        let public_pem = std::fs::read(fixture("rsa.pub.pem")).unwrap();
        let verifier = Verifier::new(&settings("RS256", &fixture("rsa.pub.pem"))).unwrap();
        let confused = EncodingKey::from_secret(&public_pem);
        let claims = json!({"mercure": {"publish": ["*"]}});

        let token = mint_with(Algorithm::HS256, &confused, Some("JWT"), &claims);
        assert!(matches!(
            verifier.verify(Role::Publisher, &token),
            Err(TokenError::WrongAlgorithm { .. })
        ));

        // The header claims RS256, but the signature is an HMAC.
        let token = crafted(
            r#"{"alg":"RS256","typ":"JWT"}"#,
            &claims,
            Algorithm::HS256,
            &confused,
        );
        assert_eq!(
            verifier.verify(Role::Publisher, &token).unwrap_err(),
            TokenError::BadSignature
        );
    }

    fn verifies_with_public_key(
        algorithm: &str,
        alg: Algorithm,
        private: &EncodingKey,
        public: &str,
    ) {
        let claims = json!({"sub": "s", "mercure": {"subscribe": ["https://example.com/a"]}});
        let token = mint_with(alg, private, Some("JWT"), &claims);
        let by_path = Verifier::new(&settings(algorithm, &fixture(public))).unwrap();
        let grants = by_path.verify(Role::Subscriber, &token).unwrap().grants;
        assert!(grants.may_subscribe("https://example.com/a"));
        let pem = std::fs::read_to_string(fixture(public)).unwrap();
        let by_text = Verifier::new(&settings(algorithm, &pem)).unwrap();
        assert!(by_text.verify(Role::Subscriber, &token).is_ok());
        // The same token with the HMAC secret verifier: wrong algorithm.
        assert!(matches!(
            hs256().verify(Role::Subscriber, &token),
            Err(TokenError::WrongAlgorithm { .. })
        ));
    }

    #[test]
    fn rsa_tokens_verify_with_the_rsa_public_key() {
        let private =
            EncodingKey::from_rsa_pem(include_bytes!("../../tests/fixtures/jwt/rsa.pem")).unwrap();
        verifies_with_public_key("RS256", Algorithm::RS256, &private, "rsa.pub.pem");
        verifies_with_public_key("PS256", Algorithm::PS256, &private, "rsa.pub.pem");
        verifies_with_public_key("RS512", Algorithm::RS512, &private, "rsa.pkcs1.pub.pem");
    }

    #[test]
    fn es256_tokens_verify_with_the_p256_public_key() {
        let private =
            EncodingKey::from_ec_pem(include_bytes!("../../tests/fixtures/jwt/ec.pem")).unwrap();
        verifies_with_public_key("ES256", Algorithm::ES256, &private, "ec.pub.pem");
    }

    #[test]
    fn eddsa_tokens_verify_with_the_ed25519_public_key() {
        let private =
            EncodingKey::from_ed_pem(include_bytes!("../../tests/fixtures/jwt/ed25519.pem"))
                .unwrap();
        verifies_with_public_key("EdDSA", Algorithm::EdDSA, &private, "ed25519.pub.pem");
    }

    #[test]
    fn pem_on_one_line_with_escaped_newlines_is_read() {
        let pem = std::fs::read_to_string(fixture("ed25519.pub.pem")).unwrap();
        let one_line = pem.trim_end().replace('\n', "\\n");
        assert!(Verifier::new(&settings("EdDSA", &one_line)).is_ok());
    }

    #[test]
    fn each_role_is_verified_with_its_own_key() {
        let verifier = Verifier::new(&JwtSettings {
            subscriber_key: Some(OTHER_SECRET.to_owned()),
            ..settings("HS256", SECRET)
        })
        .unwrap();
        let publisher_token = classic(json!({"mercure": {"subscribe": ["*"]}}));
        assert!(verifier.verify(Role::Publisher, &publisher_token).is_ok());
        assert_eq!(
            verifier
                .verify(Role::Subscriber, &publisher_token)
                .unwrap_err(),
            TokenError::BadSignature
        );
        let subscriber_token = mint_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(OTHER_SECRET.as_bytes()),
            Some("JWT"),
            &json!({"mercure": {"publish": ["*"]}}),
        );
        assert!(verifier.verify(Role::Subscriber, &subscriber_token).is_ok());
        assert_eq!(
            verifier
                .verify(Role::Publisher, &subscriber_token)
                .unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn role_without_key_refuses_every_token() {
        let verifier = Verifier::new(&JwtSettings {
            subscriber_key: None,
            ..settings("HS256", SECRET)
        })
        .unwrap();
        let token = classic(json!({}));
        assert!(verifier.verify(Role::Publisher, &token).is_ok());
        assert_eq!(
            verifier.verify(Role::Subscriber, &token).unwrap_err(),
            TokenError::NoKey(Role::Subscriber)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_as_malformed() {
        let valid = classic(json!({}));
        let (_, rest) = valid.split_once('.').unwrap();
        for token in [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{valid}.extra"),
            format!("!!!.{rest}"),
            format!("{}.{rest}", b64url(b"not json")),
            format!("{}.{rest}", b64url(b"[1, 2]")),
            format!("{}.{rest}", b64url(br#"{"typ":"JWT"}"#)),
        ] {
            assert!(
                matches!(
                    hs256().verify(Role::Publisher, &token),
                    Err(TokenError::Malformed(_))
                ),
                "{token:?} was not refused as malformed"
            );
        }
        // Claims that are not a JSON object, correctly signed.
        let token = crafted(
            r#"{"alg":"HS256"}"#,
            &json!([1, 2]),
            Algorithm::HS256,
            &hs_key(),
        );
        assert!(matches!(
            hs256().verify(Role::Publisher, &token),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let token = crafted(
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            &json!({}),
            Algorithm::HS256,
            &hs_key(),
        );
        assert!(matches!(
            hs256().verify(Role::Publisher, &token),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn tokens_of_other_types_are_refused() {
        for typ in ["dpop+jwt", "logout+jwt", "JOSE"] {
            let token = mint_with(Algorithm::HS256, &hs_key(), Some(typ), &json!({}));
            assert_eq!(
                hs256().verify(Role::Publisher, &token).unwrap_err(),
                TokenError::WrongType {
                    found: typ.to_owned()
                }
            );
        }
        let token = mint_with(
            Algorithm::HS256,
            &hs_key(),
            Some("application/JWT"),
            &json!({}),
        );
        assert!(hs256().verify(Role::Publisher, &token).is_ok());
    }

    #[test]
    fn token_text_in_messages_is_short_and_escaped() {
        let typ = format!("evil\nline{}", "x".repeat(100));
        let token = mint_with(Algorithm::HS256, &hs_key(), Some(&typ), &json!({}));
        let message = hs256()
            .verify(Role::Publisher, &token)
            .unwrap_err()
            .to_string();
        assert!(!message.contains('\n'));
        assert!(message.contains("evil\\nline"));
        assert!(message.len() < 200);
    }

    // Time.

    #[test]
    fn expired_token_is_refused() {
        let token = classic(json!({"exp": now() - 60}));
        assert_eq!(
            hs256().verify(Role::Subscriber, &token).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn token_from_the_future_is_refused() {
        let token = classic(json!({"nbf": now() + 60, "exp": now() + 600}));
        assert_eq!(
            hs256().verify(Role::Subscriber, &token).unwrap_err(),
            TokenError::NotYetValid
        );
    }

    #[test]
    fn time_claims_tolerate_a_few_seconds_of_clock_skew() {
        let (exp, nbf) = (1_000_000u64, 900_000u64);
        let token = classic(json!({"exp": exp, "nbf": nbf}));
        let verifier = hs256();
        let at = |now| verifier.verify_at(Role::Subscriber, &token, now);
        assert_eq!(
            at(exp + CLOCK_LEEWAY_SECS - 1).unwrap().expires_at,
            Some(exp)
        );
        assert_eq!(
            at(exp + CLOCK_LEEWAY_SECS).unwrap_err(),
            TokenError::Expired
        );
        assert!(at(nbf - CLOCK_LEEWAY_SECS).is_ok());
        assert_eq!(
            at(nbf - CLOCK_LEEWAY_SECS - 1).unwrap_err(),
            TokenError::NotYetValid
        );
    }

    #[test]
    fn exp_is_optional_and_reported_when_present() {
        assert_eq!(
            hs256()
                .verify(Role::Subscriber, &classic(json!({})))
                .unwrap()
                .expires_at,
            None
        );
        let exp = now() + 600;
        let token = classic(json!({ "exp": exp }));
        let claims = hs256().verify(Role::Subscriber, &token).unwrap();
        assert_eq!(claims.expires_at, Some(exp));
        // A fraction of a second is allowed, and dropped.
        let token = classic(json!({ "exp": exp as f64 + 0.5 }));
        let claims = hs256().verify(Role::Subscriber, &token).unwrap();
        assert_eq!(claims.expires_at, Some(exp));
    }

    #[test]
    fn mistyped_time_claims_do_not_make_a_token_eternal() {
        for claims in [
            json!({"exp": "tomorrow"}),
            json!({"exp": -1}),
            json!({"nbf": [1]}),
        ] {
            // Refused as invalid claims, or as malformed when jsonwebtoken's
            // own reading of `exp`/`nbf` trips over the value first.
            let result = hs256().verify(Role::Subscriber, &classic(claims.clone()));
            assert!(
                matches!(
                    result,
                    Err(TokenError::InvalidClaims(_) | TokenError::Malformed(_))
                ),
                "{claims}: {result:?}"
            );
        }
    }

    // Audience.

    #[test]
    fn classic_aud_is_checked_only_when_both_sides_have_one() {
        let named = classic(json!({ "aud": AUDIENCE }));
        let other = classic(json!({"aud": ["https://other.example.com/"]}));
        let none = classic(json!({}));
        assert!(hs256_with_audience()
            .verify(Role::Publisher, &named)
            .is_ok());
        assert_eq!(
            hs256_with_audience()
                .verify(Role::Publisher, &other)
                .unwrap_err(),
            TokenError::WrongAudience
        );
        assert!(hs256_with_audience().verify(Role::Publisher, &none).is_ok());
        assert!(hs256().verify(Role::Publisher, &other).is_ok());
    }

    // Access tokens (current draft).

    fn mercure_detail(actions: &[&str], topics: Value) -> Value {
        json!({"type": "mercure", "actions": actions, "topics": topics})
    }

    #[test]
    fn access_token_naming_the_hub_is_accepted() {
        for aud in [
            json!(AUDIENCE),
            json!(["https://other.example.com/", AUDIENCE]),
        ] {
            let token = access(json!({
                "aud": aud,
                "sub": "alice",
                "exp": now() + 600,
                "authorization_details": [
                    mercure_detail(&["publish", "subscribe"], json!([{"match": "https://example.com/a"}])),
                    mercure_detail(&["subscribe"], json!([{"match": "https://example.com/b", "matchType": "Exact"}])),
                ],
            }));
            let claims = hs256_with_audience()
                .verify(Role::Publisher, &token)
                .unwrap();
            assert_eq!(claims.subject.as_deref(), Some("alice"));
            assert!(claims.grants.may_publish("https://example.com/a"));
            assert!(!claims.grants.may_publish("https://example.com/b"));
            assert!(claims.grants.may_subscribe("https://example.com/a"));
            assert!(claims.grants.may_subscribe("https://example.com/b"));
            assert!(!claims.grants.may_subscribe("https://example.com/c"));
        }
    }

    #[test]
    fn access_token_typ_is_read_case_insensitively() {
        for typ in ["AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
            let token = mint_with(
                Algorithm::HS256,
                &hs_key(),
                Some(typ),
                &json!({"aud": AUDIENCE, "authorization_details": [
                    mercure_detail(&["publish"], json!([{"match": "*"}]))
                ]}),
            );
            let claims = hs256_with_audience()
                .verify(Role::Publisher, &token)
                .unwrap();
            assert!(claims.grants.publish_all(), "{typ}");
        }
    }

    #[test]
    fn access_token_for_another_hub_or_no_hub_is_refused() {
        for claims in [
            json!({"aud": "https://other.example.com/.well-known/mercure"}),
            json!({"aud": ["https://other.example.com/"]}),
            json!({"aud": []}),
            json!({}),
        ] {
            let token = access(claims.clone());
            assert_eq!(
                hs256_with_audience()
                    .verify(Role::Subscriber, &token)
                    .unwrap_err(),
                TokenError::WrongAudience,
                "{claims}"
            );
        }
        let token = access(json!({"aud": [AUDIENCE, 1]}));
        assert!(matches!(
            hs256_with_audience().verify(Role::Subscriber, &token),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    #[test]
    fn access_tokens_need_a_configured_audience() {
        let token = access(json!({ "aud": AUDIENCE }));
        assert_eq!(
            hs256().verify(Role::Subscriber, &token).unwrap_err(),
            TokenError::AudienceNotConfigured
        );
    }

    #[test]
    fn access_token_reads_only_authorization_details() {
        let token = access(json!({
            "aud": AUDIENCE,
            "mercure": {"publish": ["*"], "subscribe": ["*"]},
        }));
        let grants = hs256_with_audience()
            .verify(Role::Publisher, &token)
            .unwrap()
            .grants;
        assert!(!grants.publish_all());
        assert!(!grants.may_subscribe("https://example.com/a"));
    }

    #[test]
    fn classic_token_ignores_authorization_details() {
        let token = classic(json!({"authorization_details": [
            mercure_detail(&["publish"], json!([{"match": "*"}]))
        ]}));
        assert!(!hs256()
            .verify(Role::Publisher, &token)
            .unwrap()
            .grants
            .publish_all());
    }

    #[test]
    fn authorization_details_of_other_types_are_ignored() {
        let token = access(json!({
            "aud": AUDIENCE,
            "authorization_details": [
                {"type": "payment_initiation", "actions": ["pay"], "amount": 12},
                {"type": "https://example.com/other", "topics": "whatever"},
                mercure_detail(&["subscribe"], json!([{"match": "https://example.com/a"}])),
            ],
        }));
        let grants = hs256_with_audience()
            .verify(Role::Subscriber, &token)
            .unwrap()
            .grants;
        assert!(grants.may_subscribe("https://example.com/a"));
        assert_eq!(grants.subscribe_selectors().len(), 1);
    }

    #[test]
    fn one_malformed_mercure_entry_rejects_the_whole_token() {
        let good = mercure_detail(&["publish"], json!([{"match": "https://example.com/a"}]));
        for bad in [
            json!("mercure"),
            json!({"actions": ["publish"], "topics": [{"match": "a"}]}),
            mercure_detail(&[], json!([{"match": "a"}])),
            mercure_detail(&["publish", "delete"], json!([{"match": "a"}])),
            mercure_detail(&["Publish"], json!([{"match": "a"}])),
            json!({"type": "mercure", "actions": "publish", "topics": [{"match": "a"}]}),
            json!({"type": "mercure", "actions": ["publish"]}),
            mercure_detail(&["publish"], json!([])),
            mercure_detail(&["publish"], json!("a")),
            mercure_detail(&["publish"], json!(["a"])),
            mercure_detail(&["publish"], json!([{"matchType": "Exact"}])),
            mercure_detail(&["publish"], json!([{"match": "a", "matchType": "exact"}])),
            mercure_detail(
                &["publish"],
                json!([{"match": "a", "matchType": "urlpattern"}]),
            ),
            mercure_detail(
                &["publish"],
                json!([{"match": "a", "matchType": "URITemplate"}]),
            ),
            mercure_detail(&["publish"], json!([{"match": "a", "matchType": null}])),
            mercure_detail(&["publish"], json!([{"match": ""}])),
            mercure_detail(&["publish"], json!([{"match": "a\u{7}b"}])),
            json!({"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "a"}], "payload": "text"}),
        ] {
            let token = access(json!({"aud": AUDIENCE, "authorization_details": [good, bad]}));
            assert!(
                matches!(
                    hs256_with_audience().verify(Role::Publisher, &token),
                    Err(TokenError::InvalidClaims(_))
                ),
                "{bad} did not reject the token"
            );
        }
        let token = access(json!({"aud": AUDIENCE, "authorization_details": {"type": "mercure"}}));
        assert!(matches!(
            hs256_with_audience().verify(Role::Publisher, &token),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    #[test]
    fn grant_limits_are_enforced() {
        let topic = |i: usize| json!({ "match": format!("https://example.com/{i}") });
        let entries = |n: usize| {
            (0..n)
                .map(|i| mercure_detail(&["publish"], json!([topic(i)])))
                .collect::<Vec<_>>()
        };
        let verify = |details: Vec<Value>| {
            hs256_with_audience().verify(
                Role::Publisher,
                &access(json!({"aud": AUDIENCE, "authorization_details": details})),
            )
        };
        assert!(verify(entries(MAX_GRANT_ENTRIES)).is_ok());
        assert!(matches!(
            verify(entries(MAX_GRANT_ENTRIES + 1)),
            Err(TokenError::InvalidClaims(_))
        ));

        let topics: Vec<Value> = (0..MAX_GRANT_SELECTORS / 2).map(topic).collect();
        let both = mercure_detail(&["publish", "subscribe"], json!(topics));
        assert!(verify(vec![both.clone()]).is_ok());
        assert!(matches!(
            verify(vec![both, mercure_detail(&["publish"], json!([topic(0)]))]),
            Err(TokenError::InvalidClaims(_))
        ));

        let list: Vec<String> = (0..=MAX_GRANT_SELECTORS).map(|i| format!("t{i}")).collect();
        let token = classic(json!({"mercure": {"publish": list}}));
        assert!(matches!(
            hs256().verify(Role::Publisher, &token),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    // Payloads.

    #[test]
    fn first_covering_subscribe_grant_gives_the_payload() {
        let token = access(json!({"aud": AUDIENCE, "authorization_details": [
            mercure_detail(&["publish"], json!([{"match": "*"}])),
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/foo"}], "payload": {"n": 1}},
            mercure_detail(&["subscribe"], json!([{"match": "https://example.com/bare"}])),
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "*"}], "payload": {"n": 3}},
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/late"}], "payload": {"n": 4}},
        ]}));
        let grants = hs256_with_audience()
            .verify(Role::Subscriber, &token)
            .unwrap()
            .grants;
        let payload = |topic: &str| grants.payload_for(&exact(topic)).cloned();
        assert_eq!(payload("https://example.com/foo"), Some(json!({"n": 1})));
        // The first covering grant has no payload, and access tokens have no
        // top-level one.
        assert_eq!(payload("https://example.com/bare"), None);
        assert_eq!(payload("https://example.com/other"), Some(json!({"n": 3})));
        // Masked by the wildcard listed before it.
        assert_eq!(payload("https://example.com/late"), Some(json!({"n": 3})));
        // A wildcard subscription is covered by the wildcard grant only.
        let any = Selector::exact("*").unwrap();
        assert_eq!(grants.payload_for(&any), Some(&json!({"n": 3})));
    }

    #[test]
    fn classic_payload_is_the_fallback() {
        let token = classic(json!({"mercure": {
            "subscribe": ["https://example.com/a", {"match": "https://example.com/b", "payload": {"b": true}}],
            "payload": {"user": "alice"},
        }}));
        let grants = hs256().verify(Role::Subscriber, &token).unwrap().grants;
        let payload = |topic: &str| grants.payload_for(&exact(topic)).cloned();
        assert_eq!(
            payload("https://example.com/a"),
            Some(json!({"user": "alice"}))
        );
        assert_eq!(payload("https://example.com/b"), Some(json!({"b": true})));
        assert_eq!(
            payload("https://example.com/c"),
            Some(json!({"user": "alice"}))
        );
    }

    #[test]
    fn no_grants_no_payload() {
        assert_eq!(Grants::default().payload_for(&exact("a")), None);
        assert!(!Grants::default().may_subscribe("a"));
        assert!(!Grants::default().publish_all());
    }

    // URI templates and URL patterns: the only tests here that depend on
    // `route::selector` compiling templates and patterns.

    #[test]
    fn classic_template_grant_matches_expanded_topics() {
        let token = classic(json!({"mercure": {"publish": ["https://example.com/books/{id}"]}}));
        let grants = hs256().verify(Role::Publisher, &token).unwrap().grants;
        assert!(grants.may_publish("https://example.com/books/1"));
        assert!(!grants.may_publish("https://example.com/users/1"));
        assert!(!grants.publish_all());
    }

    #[test]
    fn url_pattern_grant_matches_topics_and_gives_its_payload() {
        let pattern = "https://example.com/books/:id";
        let token = access(json!({"aud": AUDIENCE, "authorization_details": [
            {"type": "mercure", "actions": ["subscribe"],
             "topics": [{"match": pattern, "matchType": "URLPattern"}], "payload": {"p": 1}},
        ]}));
        let grants = hs256_with_audience()
            .verify(Role::Subscriber, &token)
            .unwrap()
            .grants;
        assert!(grants.may_subscribe("https://example.com/books/7"));
        assert!(!grants.may_subscribe("https://example.com/users/7"));
        // Same kind and text as the grant.
        let same =
            Selector::parse(MatchKind::UrlPattern, pattern, "https://hub.example.com/").unwrap();
        assert_eq!(grants.payload_for(&same), Some(&json!({"p": 1})));
        // An exact subscription the pattern matches as a topic.
        assert_eq!(
            grants.payload_for(&exact("https://example.com/books/7")),
            Some(&json!({"p": 1}))
        );
        assert_eq!(
            grants.payload_for(&exact("https://example.com/users/7")),
            None
        );
    }

    // Configuration.

    fn config_error(settings: &JwtSettings) -> JwtConfigError {
        Verifier::new(settings).unwrap_err()
    }

    #[test]
    fn only_allowed_algorithms_are_configurable() {
        for name in ["none", "None", "", "HS1", "PS512", "ES512"] {
            assert!(matches!(
                config_error(&settings(name, SECRET)),
                JwtConfigError::UnsupportedAlgorithm(_)
            ));
        }
        let message = config_error(&settings("none", SECRET)).to_string();
        assert!(message.contains("HS256, HS384"), "{message}");
        // Configuration names are read case-insensitively; tokens must use
        // the canonical name.
        let verifier = Verifier::new(&settings("hs256", SECRET)).unwrap();
        assert!(verifier
            .verify(Role::Publisher, &classic(json!({})))
            .is_ok());
    }

    #[test]
    fn no_keys_is_a_valid_configuration() {
        let verifier = Verifier::new(&JwtSettings {
            publisher_key: None,
            subscriber_key: None,
            ..settings("RS256", "")
        })
        .unwrap();
        assert_eq!(
            verifier.verify(Role::Publisher, "a.b.c").unwrap_err(),
            TokenError::NoKey(Role::Publisher)
        );
    }

    #[test]
    fn empty_key_or_audience_is_refused() {
        assert!(matches!(
            config_error(&settings("HS256", "")),
            JwtConfigError::EmptyKey(Role::Publisher)
        ));
        assert!(matches!(
            config_error(&JwtSettings {
                audience: Some(" ".to_owned()),
                ..settings("HS256", SECRET)
            }),
            JwtConfigError::EmptyAudience
        ));
    }

    #[test]
    fn pem_key_as_hmac_secret_is_refused() {
        let pem = std::fs::read_to_string(fixture("rsa.pub.pem")).unwrap();
        assert!(matches!(
            config_error(&settings("HS256", &pem)),
            JwtConfigError::PemKeyForHmac { .. }
        ));
    }

    #[test]
    fn unreadable_key_file_is_refused_with_its_path() {
        let error = config_error(&settings("ES256", "/nonexistent/key.pem"));
        assert!(matches!(error, JwtConfigError::KeyFile { .. }));
        assert!(error.to_string().contains("/nonexistent/key.pem"));
    }

    #[test]
    fn keys_that_cannot_verify_the_algorithm_are_refused_with_a_reason() {
        for (algorithm, file, expected) in [
            ("ES256", "ec384.pub.pem", "P-384"),
            ("ES384", "ec.pub.pem", "P-256"),
            ("RS256", "rsa1024.pub.pem", "1024 bits"),
            ("RS256", "ec.pub.pem", "EC P-256"),
            ("EdDSA", "rsa.pub.pem", "RSA"),
            ("ES256", "ed25519.pub.pem", "Ed25519"),
            ("RS256", "rsa.pem", "private key"),
            ("EdDSA", "ed25519.pem", "private key"),
            ("RS256", "README.txt", "BEGIN"),
        ] {
            let error = config_error(&settings(algorithm, &fixture(file)));
            let message = error.to_string();
            assert!(
                matches!(error, JwtConfigError::InvalidKey { .. }) && message.contains(expected),
                "{algorithm} with {file}: {message}"
            );
        }
        let garbage = "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            config_error(&settings("RS256", garbage)),
            JwtConfigError::InvalidKey { .. }
        ));
        let truncated = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            config_error(&settings("EdDSA", truncated)),
            JwtConfigError::InvalidKey { .. }
        ));
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let shown = format!("{:?}", hs256());
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("HS256"));
    }
}
