//! Token grants: what a verified token allows, read from its claims.
//!
//! Pure functions over already-verified JSON claims (the signature, time
//! and audience are the server's to check): [`classic`] reads the classic
//! `mercure` claim (draft-07 of the Mercure protocol), [`access`] the
//! `authorization_details` entries of an access token (RFC 9396). Both
//! return [`Grants`]: the topic selectors a token may publish to and read
//! private updates of, in token order, with their payloads. [`backend`]
//! reads the grant lists an application's backend answers for a subscriber
//! (`--auth-url`) into [`BackendGrants`].
//!
//! Invariants: grants are never accepted in part. An entry that does not
//! parse makes the whole token's grants an error, because skipping it would
//! silently change what the token allows; the work one token can cause is
//! bounded by [`MAX_GRANT_ENTRIES`] and [`MAX_GRANT_SELECTORS`], checked
//! before any selector is compiled. The rules of each generation (detail
//! type, match types, actions) live in one function each, so a new draft of
//! the protocol is a change in one place.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::route::{MatchKind, Selector};

/// Most `authorization_details` entries (of any type) one token may carry.
pub const MAX_GRANT_ENTRIES: usize = 100;

/// Most topic selectors one token may grant, publish and subscribe grants
/// together (an entry granting both actions on a topic counts it twice).
/// Every selector is compiled each time the token is verified and tried
/// against topics afterwards, so this bounds the work one token can cause.
pub const MAX_GRANT_SELECTORS: usize = 1_000;

/// Why a token's grants were refused: the entry at fault and what is wrong
/// with it, in words fit for the client (token text shortened and escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(String);

/// Grants of a classic token (see [`Grants`] for what they allow).
pub fn classic(claims: &Map<String, Value>, base: &str) -> Result<Grants, GrantError> {
    classic_grants(claims, base).map_err(GrantError)
}

/// Grants of an access token (see [`Grants`] for what they allow).
pub fn access(claims: &Map<String, Value>, base: &str) -> Result<Grants, GrantError> {
    access_grants(claims, base).map_err(GrantError)
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
    /// Read from a current-draft access token: its bearer follows the
    /// current draft's rules where the generations differ (one topic per
    /// update, the subscriptions API's document form).
    current_draft: bool,
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

    /// Whether these grants come from a current-draft access token.
    pub fn is_current_draft(&self) -> bool {
        self.current_draft
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

/// The `type` of the authorization details this hub reads, compared byte
/// for byte: the type URI of the current draft, and `mercure`, the short
/// name of its earlier revisions, which issuers still mint. Entries of any
/// other type belong to other resource servers.
pub const DETAIL_TYPES: [&str; 2] = ["https://mercure.rocks/authorization-detail", "mercure"];

/// Grants of an access token: its `authorization_details` entries whose
/// type is one of [`DETAIL_TYPES`]. Entries of other types are skipped; an
/// entry of ours that does not parse makes the whole token invalid (the
/// draft forbids acting on the remaining entries: "Authorization Details").
fn access_grants(claims: &Map<String, Value>, base: &str) -> Result<Grants, String> {
    let mut grants = Grants {
        current_draft: true,
        ..Grants::default()
    };
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
            Some(Value::String(kind)) if DETAIL_TYPES.contains(&kind.as_str()) => {
                add_mercure_detail(&mut grants, detail, base).map_err(at)?;
            }
            Some(Value::String(_)) => {}
            _ => return Err(at("needs a string `type` (RFC 9396)".to_owned())),
        }
    }
    Ok(grants)
}

/// One `{"type": .., "actions": [..], "topics": [..], "payload": {..}}`
/// entry ("Authorization Details", "Topic Matcher List"):
///
/// - `actions`: a non-empty array of strings; `publish` and `subscribe`
///   grant, other strings are ignored (actions of later specifications
///   grant nothing here and must not break the token), anything but a
///   string is invalid;
/// - `topics`: a non-empty array of `{"match", "match_type"}` objects, with
///   `match_type` `exact` (the default) or `urlpattern`, case-sensitive, or
///   `uritemplate`, the classic protocol's matcher, which this hub supports
///   as an additional matcher type ("Matcher Types"); any other value is
///   invalid, since skipping a grant that cannot be evaluated
///   would change what the token allows. `matchType` with `Exact` or
///   `URLPattern` (the spelling of the draft's earlier revision) is read
///   when `match_type` is absent; both at once is invalid;
/// - `payload`: a JSON object, given to the subscriptions it covers.
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
            Some(_) => {}
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
    // Every matcher is compiled to be validated, even in an entry whose
    // actions grant nothing here, so each counts at least once.
    let uses = (usize::from(publish) + usize::from(subscribe)).max(1);
    grants.reserve(topics.len().saturating_mul(uses))?;
    for (j, topic) in topics.iter().enumerate() {
        let topic = topic
            .as_object()
            .ok_or_else(|| format!("topics[{j}] must be an object"))?;
        let text = topic
            .get("match")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("topics[{j}] needs a string `match`"))?;
        let kind = matcher_type(topic).map_err(|e| format!("topics[{j}]: {e}"))?;
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

/// The matcher type of one topic matcher object of an access token.
fn matcher_type(topic: &Map<String, Value>) -> Result<MatchKind, String> {
    let name = |value: &Value| {
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned)
    };
    match (topic.get("match_type"), topic.get("matchType")) {
        (Some(_), Some(_)) => Err("has both `match_type` and `matchType`".to_owned()),
        (None, None) => Ok(MatchKind::Exact),
        (Some(value), None) => MatchKind::from_draft_name(value.as_str().unwrap_or_default())
            .ok_or_else(|| {
                format!(
                    "unknown `match_type` `{}` (`exact`, `urlpattern` or `uritemplate`)",
                    shown(&name(value))
                )
            }),
        (None, Some(value)) => match value.as_str() {
            Some("Exact") => Ok(MatchKind::Exact),
            Some("URLPattern") => Ok(MatchKind::UrlPattern),
            _ => Err(format!(
                "unknown `matchType` `{}` (`Exact` or `URLPattern`)",
                shown(&name(value))
            )),
        },
    }
}

/// What an application's backend grants a subscriber (`--auth-url`): the
/// topics its streams may listen to, and the topics whose private updates
/// they may read, each read from a list of strings by [`backend`]. The
/// default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct BackendGrants {
    listen: Vec<Selector>,
    private: Vec<Selector>,
}

impl BackendGrants {
    /// Whether a stream may listen to `topic`.
    pub fn may_listen(&self, topic: &str) -> bool {
        self.listen.iter().any(|grant| grant.matches(topic))
    }

    /// Whether a stream may listen with `selector`. An exact topic is
    /// granted as [`BackendGrants::may_listen`] says. A template or a
    /// pattern (Mercure's `topic={..}`, `match_urlpattern=`) is granted only
    /// by the same selector or by `*`: whether every topic one pattern
    /// selects is also selected by another is not something matching can
    /// answer, and a guess could grant more than the backend meant.
    pub fn may_listen_with(&self, selector: &Selector) -> bool {
        match selector.exact_topic() {
            Some(topic) => self.may_listen(topic),
            None => self
                .listen
                .iter()
                .any(|grant| grant.is_any() || grant == selector),
        }
    }

    /// The selectors of the topics whose private updates may be read (a
    /// stream's `readable`).
    pub fn private_selectors(&self) -> &[Selector] {
        &self.private
    }
}

/// Reads a backend's grant lists (`topics` and `private` of its answer).
/// Each entry selects the topic equal to it and, when it reads as a URL
/// pattern, every topic that pattern matches, relative patterns and topics
/// resolved against `base` (the hub's URL) as Mercure's `match_urlpattern`
/// does: `orders/alice/*`, `https://example.com/books/:id`; `*` selects
/// every topic. An entry that is not a valid pattern selects its exact
/// topic only (never more than it says). An entry that is no valid
/// selector at all (empty, too long, control characters), or lists longer
/// than [`MAX_GRANT_SELECTORS`] together, refuse the whole answer, as a
/// token's grants are refused whole.
pub fn backend(
    listen: &[String],
    private: &[String],
    base: &str,
) -> Result<BackendGrants, GrantError> {
    if listen.len().saturating_add(private.len()) > MAX_GRANT_SELECTORS {
        return Err(GrantError(format!(
            "the grants name more than {MAX_GRANT_SELECTORS} topics"
        )));
    }
    let read = |name: &str, entries: &[String]| -> Result<Vec<Selector>, GrantError> {
        let mut selectors = Vec::with_capacity(entries.len() * 2);
        for (i, text) in entries.iter().enumerate() {
            let exact =
                Selector::exact(text).map_err(|e| GrantError(format!("{name}[{i}]: {e}")))?;
            match Selector::parse(MatchKind::UrlPattern, text, base) {
                Ok(pattern) if pattern.is_any() => selectors.push(pattern),
                Ok(pattern) => selectors.extend([exact, pattern]),
                Err(_) => selectors.push(exact),
            }
        }
        Ok(selectors)
    };
    Ok(BackendGrants {
        listen: read("topics", listen)?,
        private: read("private", private)?,
    })
}

/// Token-supplied text made fit for a log line: at most 40 characters,
/// control characters escaped.
pub fn shown(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    const BASE: &str = "https://hub.example.com/.well-known/mercure";

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn backend_grants_select_exact_topics_and_url_patterns() {
        let grants = backend(
            &strings(&["news", "orders/alice/*", "https://example.com/books/:id"]),
            &strings(&["orders/alice/*"]),
            BASE,
        )
        .unwrap();
        assert!(grants.may_listen("news"));
        assert!(!grants.may_listen("news2") && !grants.may_listen("new"));
        assert!(grants.may_listen("orders/alice/42"));
        assert!(!grants.may_listen("orders/bob/42"));
        assert!(grants.may_listen("https://example.com/books/7"));
        assert!(!grants.may_listen("https://example.com/books/7/pages"));
        // A relative grant and a relative topic resolve against the hub's URL.
        assert!(grants.may_listen("https://hub.example.com/.well-known/orders/alice/1"));
        let readable = grants.private_selectors();
        assert!(readable.iter().any(|s| s.matches("orders/alice/1")));
        assert!(!readable.iter().any(|s| s.matches("news")));
    }

    #[test]
    fn backend_grants_cover_a_requested_pattern_only_by_itself_or_the_wildcard() {
        let grants = backend(&strings(&["orders/:id"]), &[], BASE).unwrap();
        let pattern = |text: &str| Selector::parse(MatchKind::UrlPattern, text, BASE).unwrap();
        assert!(grants.may_listen_with(&pattern("orders/:id")));
        // `orders/*` matches the topic `orders/*` the grant's `:id` reads as
        // one segment, yet selects far more than the grant.
        assert!(!grants.may_listen_with(&pattern("orders/*")));
        assert!(grants.may_listen_with(&Selector::exact("orders/7").unwrap()));
        assert!(!grants.may_listen_with(&Selector::classic("orders/{id}").unwrap()));
        let everything = backend(&strings(&["*"]), &[], BASE).unwrap();
        assert!(everything.may_listen_with(&Selector::classic("orders/{id}").unwrap()));
        assert!(everything.may_listen("anything at all"));
    }

    #[test]
    fn backend_grants_are_refused_whole_and_bounded() {
        assert!(backend(&strings(&["ok", ""]), &[], BASE).is_err());
        assert!(backend(&[], &strings(&["bad\u{7}"]), BASE).is_err());
        let many = vec!["t".to_owned(); MAX_GRANT_SELECTORS + 1];
        assert!(backend(&many, &[], BASE).is_err());
        // Not a pattern: the exact topic only, never more.
        let odd = backend(&strings(&["a(b"]), &[], BASE).unwrap();
        assert!(odd.may_listen("a(b") && !odd.may_listen("ab"));
        assert!(!BackendGrants::default().may_listen("news"));
    }

    #[test]
    fn no_grants_no_payload() {
        assert_eq!(
            Grants::default().payload_for(&Selector::parse(MatchKind::Exact, "a", BASE).unwrap()),
            None
        );
        assert!(!Grants::default().may_subscribe("a"));
        assert!(!Grants::default().publish_all());
    }

    #[test]
    fn classic_claims_grant_exactly_their_lists() {
        let grants = classic(
            &claims(
                json!({"mercure": {"publish": ["a", "b/{id}"], "subscribe": [{"match": "c"}]}}),
            ),
            BASE,
        )
        .unwrap();
        assert!(grants.may_publish("a") && grants.may_publish("b/1"));
        assert!(!grants.may_publish("c") && !grants.publish_all());
        assert!(grants.may_subscribe("c") && !grants.may_subscribe("a"));
        assert!(!classic(&claims(json!({})), BASE).unwrap().may_publish("a"));
    }

    #[test]
    fn access_claims_read_only_mercure_details_and_refuse_a_bad_one_whole() {
        let detail = |actions: Value, topics: Value| json!({"type": "mercure", "actions": actions, "topics": topics});
        let grants = access(
            &claims(json!({"authorization_details": [
                {"type": "other", "anything": 1},
                detail(json!(["publish"]), json!([{"match": "*"}])),
            ]})),
            BASE,
        )
        .unwrap();
        assert!(grants.publish_all() && !grants.may_subscribe("a"));
        let bad = access(
            &claims(json!({"authorization_details": [
                detail(json!(["subscribe"]), json!([{"match": "ok"}])),
                detail(json!(["publish"]), json!([{"match": "x", "matchType": "Regex"}])),
            ]})),
            BASE,
        )
        .unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("authorization_details[1]: topics[0]"),
            "{bad}"
        );
    }

    /// The current draft's "Authorization Details" and "Topic Matcher List".
    #[test]
    fn current_draft_details_read_type_uri_match_type_and_ignore_unknown_actions() {
        let detail = |kind: &str, actions: Value, topics: Value| {
            claims(
                json!({"authorization_details": [{"type": kind, "actions": actions, "topics": topics}]}),
            )
        };
        let uri = DETAIL_TYPES[0];
        let grants = access(
            &detail(
                uri,
                json!(["publish", "subscribe", "audit"]),
                json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}, {"match": "a"}]),
            ),
            BASE,
        )
        .unwrap();
        assert!(grants.may_publish("https://example.com/books/7"));
        assert!(grants.may_subscribe("a") && !grants.may_publish("b"));
        // A detail whose actions are all unknown grants nothing but is valid.
        let nothing = access(
            &detail(uri, json!(["audit"]), json!([{"match": "*"}])),
            BASE,
        )
        .unwrap();
        assert!(!nothing.may_publish("a") && !nothing.may_subscribe("a"));
        // `*` is the wildcard whatever the match type.
        let all = access(
            &detail(
                uri,
                json!(["publish"]),
                json!([{"match": "*", "match_type": "urlpattern"}]),
            ),
            BASE,
        )
        .unwrap();
        assert!(all.publish_all());
        // The short type of the draft's earlier revisions still reads; a
        // type differing by case is another resource server's.
        assert!(access(
            &detail("mercure", json!(["publish"]), json!([{"match": "*"}])),
            BASE
        )
        .unwrap()
        .publish_all());
        assert!(!access(
            &detail(
                "https://mercure.rocks/Authorization-Detail",
                json!(["publish"]),
                json!([{"match": "*"}])
            ),
            BASE
        )
        .unwrap()
        .publish_all());
        for (actions, topics, why) in [
            (json!(["publish", 1]), json!([{"match": "a"}]), "strings"),
            (json!([]), json!([{"match": "a"}]), "non-empty"),
            (
                json!(["publish"]),
                json!([{"match": "a", "match_type": "URLPattern"}]),
                "match_type",
            ),
            (
                json!(["publish"]),
                json!([{"match": "a", "match_type": "regexp"}]),
                "match_type",
            ),
            (
                json!(["audit"]),
                json!([{"match": "a", "match_type": "regexp"}]),
                "match_type",
            ),
            (
                json!(["publish"]),
                json!([{"match": "a", "match_type": "exact", "matchType": "Exact"}]),
                "both",
            ),
            (json!(["publish"]), json!(["a"]), "object"),
            (
                json!(["publish"]),
                json!([{"match_type": "exact"}]),
                "`match`",
            ),
        ] {
            let error = access(&detail(uri, actions, topics), BASE).unwrap_err();
            assert!(error.to_string().contains(why), "{why}: {error}");
        }
        // URI templates, the hub's additional matcher type.
        let template = access(
            &detail(
                uri,
                json!(["publish"]),
                json!([{"match": "https://e.com/{id}", "match_type": "uritemplate"}]),
            ),
            BASE,
        )
        .unwrap();
        assert!(template.may_publish("https://e.com/1"));
        // The earlier revision's `matchType` spelling.
        let legacy = access(
            &detail(
                uri,
                json!(["publish"]),
                json!([{"match": "https://e.com/:id", "matchType": "URLPattern"}]),
            ),
            BASE,
        )
        .unwrap();
        assert!(legacy.may_publish("https://e.com/1"));
    }

    #[test]
    fn grant_limits_are_checked_before_selectors_are_compiled() {
        let list: Vec<String> = (0..=MAX_GRANT_SELECTORS).map(|i| format!("t{i}")).collect();
        let error = classic(&claims(json!({"mercure": {"publish": list}})), BASE).unwrap_err();
        assert!(error.to_string().contains("topic selectors"), "{error}");
        let details: Vec<Value> = (0..=MAX_GRANT_ENTRIES)
            .map(|_| json!({"type": "other"}))
            .collect();
        let error = access(&claims(json!({"authorization_details": details})), BASE).unwrap_err();
        assert!(error.to_string().contains("entries"), "{error}");
    }
}
