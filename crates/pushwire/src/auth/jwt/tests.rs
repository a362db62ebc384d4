//! The verifier, tried with real tokens: signatures and algorithms, keys of
//! every kind, time and audience rules, both generations of grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushwire_core::route::{MatchKind, Selector};
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
        publisher_keys: vec![key.to_owned()],
        subscriber_keys: vec![key.to_owned()],
        publisher_jwks: None,
        subscriber_jwks: None,
        audience: None,
        base_url: "https://hub.example.com/".to_owned(),
        issuers: Vec::new(),
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

/// A current-draft HS256 access token, with an `exp` ten minutes ahead
/// unless the claims set one (the draft requires it).
fn access(mut claims: Value) -> String {
    if let Some(map) = claims.as_object_mut() {
        map.entry("exp").or_insert(json!(now() + 600));
    }
    access_as_given(&claims)
}

/// A current-draft HS256 access token with exactly these claims.
fn access_as_given(claims: &Value) -> String {
    mint_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Some("at+jwt"),
        claims,
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

fn verifies_with_public_key(algorithm: &str, alg: Algorithm, private: &EncodingKey, public: &str) {
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
        EncodingKey::from_rsa_pem(include_bytes!("../../../tests/fixtures/jwt/rsa.pem")).unwrap();
    verifies_with_public_key("RS256", Algorithm::RS256, &private, "rsa.pub.pem");
    verifies_with_public_key("PS256", Algorithm::PS256, &private, "rsa.pub.pem");
    verifies_with_public_key("RS512", Algorithm::RS512, &private, "rsa.pkcs1.pub.pem");
}

#[test]
fn es256_tokens_verify_with_the_p256_public_key() {
    let private =
        EncodingKey::from_ec_pem(include_bytes!("../../../tests/fixtures/jwt/ec.pem")).unwrap();
    verifies_with_public_key("ES256", Algorithm::ES256, &private, "ec.pub.pem");
}

#[test]
fn eddsa_tokens_verify_with_the_ed25519_public_key() {
    let private =
        EncodingKey::from_ed_pem(include_bytes!("../../../tests/fixtures/jwt/ed25519.pem"))
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
        subscriber_keys: vec![OTHER_SECRET.to_owned()],
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
        subscriber_keys: vec![],
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

fn mercure_detail(actions: &[impl serde::Serialize], topics: Value) -> Value {
    json!({"type": "mercure", "actions": actions, "topics": topics})
}

/// An authorization detail of the type the current draft names.
fn draft_detail(actions: &[&str], topics: Value) -> Value {
    json!({"type": "https://mercure.rocks/authorization-detail", "actions": actions, "topics": topics})
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
            &json!({"aud": AUDIENCE, "exp": now() + 600, "authorization_details": [
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
        mercure_detail(&[] as &[&str], json!([{"match": "a"}])),
        mercure_detail(&[json!("publish"), json!(7)], json!([{"match": "a"}])),
        mercure_detail(
            &["publish"],
            json!([{"match": "a", "match_type": "regexp"}]),
        ),
        mercure_detail(&["publish"], json!([{"match": "a", "match_type": "Exact"}])),
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

/// "Authorization Details": unrecognised actions grant nothing and do not
/// invalidate the token.
#[test]
fn unrecognized_actions_are_ignored() {
    for actions in [
        &["publish", "delete"][..],
        &["Publish", "publish"],
        &["audit"],
    ] {
        let token = access(json!({"aud": AUDIENCE, "authorization_details": [
            draft_detail(actions, json!([{"match": "https://example.com/a"}])),
        ]}));
        let grants = hs256_with_audience()
            .verify(Role::Publisher, &token)
            .unwrap()
            .grants;
        assert_eq!(
            grants.may_publish("https://example.com/a"),
            actions.contains(&"publish"),
            "{actions:?}"
        );
        assert!(!grants.may_subscribe("https://example.com/a"));
    }
}

/// The issue's reproduction: a publisher token exactly as the current
/// draft writes one.
#[test]
fn draft_type_uri_with_url_pattern_grants_publish() {
    let token = access(json!({
        "aud": AUDIENCE,
        "authorization_details": [draft_detail(&["publish"], json!([
            {"match": "https://example.com/books/:id", "match_type": "urlpattern"},
        ]))],
    }));
    let grants = hs256_with_audience()
        .verify(Role::Publisher, &token)
        .unwrap()
        .grants;
    assert!(grants.may_publish("https://example.com/books/1"));
    assert!(!grants.may_publish("https://example.com/authors/1"));
}

/// "Token Validation": access tokens must carry `exp`; classic ones need not.
#[test]
fn access_token_without_exp_is_refused() {
    let token = access_as_given(&json!({"aud": AUDIENCE, "authorization_details": [
        draft_detail(&["publish"], json!([{"match": "*"}])),
    ]}));
    assert!(matches!(
        hs256_with_audience().verify(Role::Publisher, &token),
        Err(TokenError::InvalidClaims(reason)) if reason.contains("exp")
    ));
    assert!(hs256().verify(Role::Publisher, &classic(json!({}))).is_ok());
}

/// "Token Validation": with trusted authorization servers, `iss` must name
/// one of them; classic tokens are not checked.
#[test]
fn access_token_issuer_must_be_trusted_when_servers_are_configured() {
    let verifier = Verifier::new(&JwtSettings {
        audience: Some(AUDIENCE.to_owned()),
        issuers: vec!["https://auth.example.com".to_owned()],
        ..settings("HS256", SECRET)
    })
    .unwrap();
    let with_iss = |iss: Value| access(json!({"aud": AUDIENCE, "iss": iss}));
    assert!(verifier
        .verify(
            Role::Publisher,
            &with_iss(json!("https://auth.example.com"))
        )
        .is_ok());
    for iss in [
        json!("https://auth.example.com/"),
        json!("https://evil.example"),
        Value::Null,
    ] {
        assert_eq!(
            verifier
                .verify(Role::Publisher, &with_iss(iss.clone()))
                .unwrap_err(),
            TokenError::WrongIssuer,
            "{iss}"
        );
    }
    assert!(matches!(
        verifier.verify(Role::Publisher, &with_iss(json!(1))),
        Err(TokenError::InvalidClaims(_))
    ));
    assert!(verifier
        .verify(Role::Publisher, &classic(json!({})))
        .is_ok());
    // Without configured servers, `iss` is not checked.
    assert!(hs256_with_audience()
        .verify(Role::Publisher, &with_iss(json!("https://anyone.example")))
        .is_ok());
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
    let same = Selector::parse(MatchKind::UrlPattern, pattern, "https://hub.example.com/").unwrap();
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
        publisher_keys: vec![],
        subscriber_keys: vec![],
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
        JwtConfigError::EmptyKey(KeyName {
            role: Role::Publisher,
            nth: None
        })
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

// Several static keys.

#[test]
fn any_of_several_static_keys_verifies() {
    let verifier = Verifier::new(&JwtSettings {
        publisher_keys: vec![OTHER_SECRET.to_owned(), SECRET.to_owned()],
        ..settings("HS256", SECRET)
    })
    .unwrap();
    let claims = json!({"mercure": {"publish": ["*"]}});
    for secret in [SECRET, OTHER_SECRET] {
        let token = mint_with(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
            Some("JWT"),
            &claims,
        );
        assert!(verifier.verify(Role::Publisher, &token).is_ok(), "{secret}");
    }
    let stranger = mint_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"a third secret, configured nowhere at all"),
        Some("JWT"),
        &claims,
    );
    assert_eq!(
        verifier.verify(Role::Publisher, &stranger).unwrap_err(),
        TokenError::BadSignature
    );
    // Static keys have no id: a `kid` does not keep them from being tried.
    let with_kid = crafted(
        r#"{"alg":"HS256","typ":"JWT","kid":"whatever"}"#,
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(OTHER_SECRET.as_bytes()),
    );
    assert!(verifier.verify(Role::Publisher, &with_kid).is_ok());
}

#[test]
fn each_of_several_keys_is_checked_and_named_by_its_place() {
    let error = config_error(&JwtSettings {
        publisher_keys: vec![SECRET.to_owned(), " ".to_owned()],
        ..settings("HS256", SECRET)
    });
    assert!(
        matches!(
            error,
            JwtConfigError::EmptyKey(KeyName {
                role: Role::Publisher,
                nth: Some(2)
            })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("the 2nd publisher JWT key"),
        "{error}"
    );
    let error = config_error(&JwtSettings {
        subscriber_keys: vec![
            fixture("ec.pub.pem"),
            fixture("ec.pub.pem"),
            fixture("rsa.pub.pem"),
        ],
        ..settings("ES256", &fixture("ec.pub.pem"))
    });
    assert!(
        error.to_string().contains("the 3rd subscriber JWT key"),
        "{error}"
    );
    assert_eq!(
        [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal),
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]
    );
}

// JWK sets.

fn oct(kid: Option<&str>, secret: &str) -> Value {
    let mut jwk = json!({"kty": "oct", "k": b64url(secret.as_bytes())});
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    jwk
}

fn fixture_jwk(name: &str, kid: &str) -> Value {
    let mut jwk: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

fn key_set(algorithm: &str, keys: &[Value]) -> jwks::KeySet {
    let (_, _, kind) = keys::ALGORITHMS
        .into_iter()
        .find(|(name, ..)| *name == algorithm)
        .unwrap();
    let document = json!({ "keys": keys }).to_string();
    jwks::read_set(document.as_bytes(), algorithm, kind).unwrap()
}

fn kids(set: &jwks::KeySet, kid: Option<&str>) -> usize {
    set.candidates(kid).count()
}

#[test]
fn only_jwks_that_fit_the_configured_algorithm_enter_the_set() {
    let mut wrong_alg = oct(Some("wrong-alg"), SECRET);
    wrong_alg["alg"] = json!("HS512");
    let mut right_alg = oct(Some("right-alg"), SECRET);
    right_alg["alg"] = json!("HS256");
    let mut encryption = oct(Some("enc"), SECRET);
    encryption["use"] = json!("enc");
    let mut signing = oct(Some("sig"), SECRET);
    signing["use"] = json!("sig");
    let mut wrapping = oct(Some("wrap"), SECRET);
    wrapping["key_ops"] = json!(["wrapKey"]);
    let set = key_set(
        "HS256",
        &[
            wrong_alg,
            right_alg,
            encryption,
            signing,
            wrapping,
            oct(None, SECRET),
            oct(Some("empty"), ""),
            fixture_jwk("rsa.pub.jwk.json", "rsa"),
            json!({"kty": "oct", "kid": 7, "k": "c2VjcmV0"}),
            json!("not an object"),
        ],
    );
    assert!(set.has("right-alg") && set.has("sig"));
    for dropped in ["wrong-alg", "enc", "wrap", "empty", "rsa"] {
        assert!(!set.has(dropped), "{dropped}");
    }
    // right-alg, sig and the one without an id.
    assert_eq!(kids(&set, None), 3);
    assert_eq!(kids(&set, Some("sig")), 1);
    assert_eq!(kids(&set, Some("rsa")), 0);

    let rsa = key_set(
        "RS256",
        &[
            fixture_jwk("rsa.pub.jwk.json", "rsa"),
            oct(Some("oct"), SECRET),
        ],
    );
    assert!(rsa.has("rsa") && !rsa.has("oct"));
    // An RSA key is no EC key, and a P-256 key no P-384 key.
    assert_eq!(
        kids(
            &key_set("ES256", &[fixture_jwk("rsa.pub.jwk.json", "r")]),
            None
        ),
        0
    );
    assert_eq!(
        kids(
            &key_set("ES384", &[fixture_jwk("ec.pub.jwk.json", "e")]),
            None
        ),
        0
    );
    assert_eq!(
        kids(
            &key_set("ES256", &[fixture_jwk("ec.pub.jwk.json", "e")]),
            None
        ),
        1
    );
}

#[test]
fn documents_that_are_not_jwk_sets_are_refused_whole() {
    let kind = keys::KeyKind::Secret;
    for bad in ["", "not json", "[]", r#"{"keys": {}}"#, r#"{"key": []}"#] {
        assert!(
            jwks::read_set(bad.as_bytes(), "HS256", kind).is_err(),
            "{bad}"
        );
    }
    let many: Vec<Value> = (0..=MAX_KEYS)
        .map(|n| oct(Some(&n.to_string()), SECRET))
        .collect();
    let document = json!({ "keys": many }).to_string();
    let error = jwks::read_set(document.as_bytes(), "HS256", kind)
        .err()
        .unwrap();
    assert!(error.contains("101 keys"), "{error}");
    let empty = jwks::read_set(br#"{"keys": []}"#, "HS256", kind).unwrap();
    assert_eq!(kids(&empty, None), 0);
}

#[test]
fn cache_lifetime_follows_the_answer_within_bounds() {
    use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, DATE, EXPIRES};
    let now = std::time::SystemTime::now();
    let lifetime = |headers: &[(http::header::HeaderName, &str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        jwks::cache_lifetime(&map, now).as_secs()
    };
    assert_eq!(lifetime(&[]), 300);
    assert_eq!(lifetime(&[(CACHE_CONTROL, "public, max-age=3600")]), 3600);
    assert_eq!(lifetime(&[(CACHE_CONTROL, "max-age=5")]), 60);
    assert_eq!(lifetime(&[(CACHE_CONTROL, "max-age=9999999")]), 86_400);
    assert_eq!(lifetime(&[(CACHE_CONTROL, "no-cache")]), 60);
    assert_eq!(lifetime(&[(CACHE_CONTROL, "No-Store, max-age=3600")]), 60);
    let date = httpdate::fmt_http_date(now);
    let in_two_hours = httpdate::fmt_http_date(now + std::time::Duration::from_secs(7200));
    assert_eq!(lifetime(&[(DATE, &date), (EXPIRES, &in_two_hours)]), 7200);
    // max-age wins over Expires; a bad Expires is already expired.
    assert_eq!(
        lifetime(&[(CACHE_CONTROL, "max-age=600"), (EXPIRES, &in_two_hours)]),
        600
    );
    assert_eq!(lifetime(&[(EXPIRES, "0")]), 60);
}

#[test]
fn jwks_urls_are_https_loopback_http_or_files() {
    for good in [
        "https://issuer.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8081/jwks",
        "http://127.9.9.9/jwks",
        "http://[::1]:9000/jwks",
        "http://localhost/jwks",
        "http://LOCALHOST:1/jwks",
    ] {
        assert!(
            matches!(JwksLocation::parse(good), Ok(JwksLocation::Http(_))),
            "{good}"
        );
    }
    assert_eq!(
        JwksLocation::parse("file:///etc/pushwire/jwks.json"),
        Ok(JwksLocation::File("/etc/pushwire/jwks.json".into()))
    );
    for bad in [
        "http://issuer.example.com/jwks",
        "http://10.0.0.5/jwks",
        "http://localhost.example.com/jwks",
        "ftp://127.0.0.1/jwks",
        "/etc/pushwire/jwks.json",
        "jwks.json",
    ] {
        assert!(JwksLocation::parse(bad).is_err(), "{bad}");
    }
    let error = JwksLocation::parse("http://user:hunter2@issuer.example.com/jwks").unwrap_err();
    assert!(!error.contains("hunter2"), "{error}");
    assert!(matches!(
        config_error(&JwtSettings {
            subscriber_jwks: Some("http://issuer.example.com/jwks".to_owned()),
            ..settings("HS256", SECRET)
        }),
        JwtConfigError::JwksUrl {
            role: Role::Subscriber,
            ..
        }
    ));
}

/// A verifier whose subscribers' keys are only the JWK set in `path`,
/// fetched once.
async fn jwks_verifier(algorithm: &str, path: &std::path::Path) -> Verifier {
    let verifier = Verifier::new(&JwtSettings {
        publisher_keys: vec![],
        subscriber_keys: vec![],
        subscriber_jwks: Some(format!("file://{}", path.display())),
        ..settings(algorithm, SECRET)
    })
    .unwrap();
    verifier
        .start_key_sets(std::sync::Arc::new(Metrics::new()))
        .await;
    verifier
}

fn write_set(path: &std::path::Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
}

fn with_kid(
    kid: &str,
    alg: &str,
    claims: &Value,
    alg_used: Algorithm,
    key: &EncodingKey,
) -> String {
    crafted(
        &format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#),
        claims,
        alg_used,
        key,
    )
}

#[tokio::test]
async fn a_token_uses_the_jwk_its_kid_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_set(
        &path,
        &[oct(Some("old"), OTHER_SECRET), oct(Some("new"), SECRET)],
    );
    let verifier = jwks_verifier("HS256", &path).await;
    let claims = json!({"sub": "s", "mercure": {"subscribe": ["*"]}});
    let token = with_kid("new", "HS256", &claims, Algorithm::HS256, &hs_key());
    assert_eq!(
        verifier
            .verify(Role::Subscriber, &token)
            .unwrap()
            .subject
            .as_deref(),
        Some("s")
    );
    // The right secret under another key's id is not tried with it.
    let misnamed = with_kid("old", "HS256", &claims, Algorithm::HS256, &hs_key());
    assert_eq!(
        verifier.verify(Role::Subscriber, &misnamed).unwrap_err(),
        TokenError::BadSignature
    );
    let unknown = with_kid("gone", "HS256", &claims, Algorithm::HS256, &hs_key());
    assert!(matches!(
        verifier.verify(Role::Subscriber, &unknown).unwrap_err(),
        TokenError::UnknownKeyId { .. }
    ));
    // Without a `kid`, every key of the set is tried.
    assert!(verifier
        .verify(Role::Subscriber, &classic(claims.clone()))
        .is_ok());
    // The other role has no keys at all.
    assert_eq!(
        verifier.verify(Role::Publisher, &token).unwrap_err(),
        TokenError::NoKey(Role::Publisher)
    );
}

#[tokio::test]
async fn the_algorithm_still_comes_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let rsa_jwk = fixture_jwk("rsa.pub.jwk.json", "rsa");
    write_set(&path, std::slice::from_ref(&rsa_jwk));
    let verifier = jwks_verifier("RS256", &path).await;
    let claims = json!({"mercure": {"subscribe": ["*"]}});
    let private =
        EncodingKey::from_rsa_pem(include_bytes!("../../../tests/fixtures/jwt/rsa.pem")).unwrap();
    let good = with_kid("rsa", "RS256", &claims, Algorithm::RS256, &private);
    assert!(verifier.verify(Role::Subscriber, &good).is_ok());

    // HMAC keyed with the JWK's public material, under either name.
    let n = URL_SAFE_NO_PAD
        .decode(rsa_jwk["n"].as_str().unwrap())
        .unwrap();
    for material in [n.as_slice(), rsa_jwk.to_string().as_bytes()] {
        let confused = EncodingKey::from_secret(material);
        let hs = with_kid("rsa", "HS256", &claims, Algorithm::HS256, &confused);
        assert!(matches!(
            verifier.verify(Role::Subscriber, &hs),
            Err(TokenError::WrongAlgorithm { .. })
        ));
        let disguised = with_kid("rsa", "RS256", &claims, Algorithm::HS256, &confused);
        assert_eq!(
            verifier.verify(Role::Subscriber, &disguised).unwrap_err(),
            TokenError::BadSignature
        );
    }
    // Unsigned.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","kid":"rsa"}"#),
        b64url(claims.to_string().as_bytes())
    );
    assert!(matches!(
        verifier.verify(Role::Subscriber, &none),
        Err(TokenError::WrongAlgorithm { .. })
    ));

    // An HS256 hub given the RSA JWK does not turn it into a secret.
    let hs_verifier = jwks_verifier("HS256", &path).await;
    let confused = EncodingKey::from_secret(&n);
    let hs = with_kid("rsa", "HS256", &claims, Algorithm::HS256, &confused);
    assert!(matches!(
        hs_verifier.verify(Role::Subscriber, &hs),
        Err(TokenError::UnknownKeyId { .. })
    ));
    let kidless = mint_with(Algorithm::HS256, &confused, Some("JWT"), &claims);
    assert_eq!(
        hs_verifier.verify(Role::Subscriber, &kidless).unwrap_err(),
        TokenError::BadSignature
    );
}

#[tokio::test]
async fn a_jwk_for_another_algorithm_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let mut hs512 = oct(Some("k"), SECRET);
    hs512["alg"] = json!("HS512");
    write_set(&path, &[hs512]);
    let verifier = jwks_verifier("HS256", &path).await;
    let token = with_kid("k", "HS256", &json!({}), Algorithm::HS256, &hs_key());
    assert!(matches!(
        verifier.verify(Role::Subscriber, &token),
        Err(TokenError::UnknownKeyId { .. })
    ));
}

#[tokio::test]
async fn a_key_set_not_fetched_yet_refuses_its_tokens_and_a_file_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let verifier = jwks_verifier("HS256", &path).await;
    let token = with_kid("k", "HS256", &json!({}), Algorithm::HS256, &hs_key());
    assert_eq!(
        verifier.verify(Role::Subscriber, &token).unwrap_err(),
        TokenError::KeySetUnavailable(Role::Subscriber)
    );
    write_set(&path, &[oct(Some("k"), SECRET)]);
    verifier.refresh_keys_for(Role::Subscriber, &token).await;
    assert!(verifier.verify(Role::Subscriber, &token).is_ok());
    // A second unknown kid within the interval does not read it again.
    write_set(&path, &[oct(Some("k2"), SECRET)]);
    let token2 = with_kid("k2", "HS256", &json!({}), Algorithm::HS256, &hs_key());
    verifier.refresh_keys_for(Role::Subscriber, &token2).await;
    assert!(verifier.verify(Role::Subscriber, &token).is_ok());
    assert!(matches!(
        verifier.verify(Role::Subscriber, &token2),
        Err(TokenError::UnknownKeyId { .. })
    ));
}

#[test]
fn jwks_url_stays_in_debug_output_without_its_password() {
    let verifier = Verifier::new(&JwtSettings {
        publisher_jwks: Some("https://u:hunter2@issuer.example.com/jwks".to_owned()),
        ..settings("HS256", SECRET)
    })
    .unwrap();
    let shown = format!("{verifier:?}");
    assert!(
        shown.contains("issuer.example.com") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(verifier.has_keys(Role::Publisher) && verifier.has_keys(Role::Subscriber));
}
