//! Topic selectors: the expressions a subscriber (or a token's grants) use
//! to name topics. Kinds: an exact topic, the wildcard `*`, an RFC 6570 URI
//! template (`https://example.com/books/{id}`) and a URLPattern
//! (`https://example.com/books/:id`). Templates and patterns are compiled
//! once, when the selector is made, into linear-time regular expressions, so
//! no selector a client sends can make matching slow (`template.rs` says
//! which limits keep the constant small too).
//!
//! Matching a template or a pattern still costs a regex run (and, for a
//! pattern, parsing the topic as a URL) per (selector, topic); the hub asks
//! the same question for every event of a topic, so [`MatchCache`]
//! remembers recent answers in bounded memory.

use std::fmt;
use std::sync::Arc;

use regex::Regex;
use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternOptions};

use super::template::Template;

/// The largest selector, in bytes.
pub const MAX_SELECTOR_LEN: usize = 2048;

/// How a selector's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// Byte-for-byte equality.
    Exact,
    /// An RFC 6570 URI template; a topic matches if some expansion yields it.
    UriTemplate,
    /// A URLPattern (WHATWG URL Pattern standard).
    UrlPattern,
}

impl MatchKind {
    /// The classic protocol's name of this kind (`Exact`, `URITemplate`,
    /// `URLPattern`).
    pub fn name(self) -> &'static str {
        match self {
            MatchKind::Exact => "Exact",
            MatchKind::UriTemplate => "URITemplate",
            MatchKind::UrlPattern => "URLPattern",
        }
    }

    /// The current draft's name of this kind ("Matcher Types"): `exact`,
    /// `urlpattern`. URI templates are not a matcher type of that draft; the
    /// hub supports them as an additional type named `uritemplate` (a name
    /// of the form the draft's registry asks for) and advertises it.
    pub fn draft_name(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::UriTemplate => "uritemplate",
            MatchKind::UrlPattern => "urlpattern",
        }
    }

    /// The kind a current-draft name stands for, compared case-sensitively.
    pub fn from_draft_name(name: &str) -> Option<MatchKind> {
        [
            MatchKind::Exact,
            MatchKind::UriTemplate,
            MatchKind::UrlPattern,
        ]
        .into_iter()
        .find(|kind| kind.draft_name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("a topic selector must not be empty")]
    Empty,
    #[error("a topic selector is limited to {MAX_SELECTOR_LEN} bytes")]
    TooLong,
    #[error("a topic selector must not contain control characters or invisible format characters (Unicode category Cf)")]
    ControlCharacter,
    #[error("invalid URI template `{text}`: {reason}")]
    Template { text: String, reason: String },
    #[error("invalid URL pattern `{text}`: {reason}")]
    Pattern { text: String, reason: String },
}

/// A compiled selector. Cloning is cheap.
#[derive(Clone)]
pub struct Selector {
    kind: MatchKind,
    text: Arc<str>,
    compiled: Arc<Compiled>,
}

enum Compiled {
    Any,
    Exact,
    /// Every expansion of the template, as a literal prefix and suffix and
    /// an anchored expression between them (see `template.rs`).
    Template(Template),
    /// `urlpattern`'s default engine is the `regex` crate (its
    /// `UrlPattern<R = regex::Regex>`, compiled with `Regex::new`), which
    /// runs in linear time: no backreferences or look-around, so a custom
    /// group like `:id(.*.*.*x)` cannot backtrack catastrophically.
    Pattern {
        /// Boxed: it is large (1.6 KB), and exact selectors, by far the most
        /// common, should not pay for it.
        pattern: Box<UrlPattern>,
        /// The hub's URL, against which relative topics are resolved.
        base: Option<Url>,
    },
}

impl Selector {
    /// A selector of the given kind. The text `*` is the wildcard whatever
    /// the kind. `base` is the hub's own URL, against which relative URL
    /// patterns and relative topics are resolved.
    ///
    /// An empty or unparsable `base` is no base: relative patterns are then
    /// refused and relative topics never match a pattern.
    pub fn parse(kind: MatchKind, text: &str, base: &str) -> Result<Selector, SelectorError> {
        check(text)?;
        let compiled = if text == "*" {
            Compiled::Any
        } else {
            match kind {
                MatchKind::Exact => Compiled::Exact,
                MatchKind::UriTemplate => {
                    let template =
                        Template::compile(text).map_err(|reason| SelectorError::Template {
                            text: text.to_owned(),
                            reason,
                        })?;
                    Compiled::Template(template)
                }
                MatchKind::UrlPattern => compile_pattern(text, base)?,
            }
        };
        Ok(Selector {
            kind,
            text: text.into(),
            compiled: Arc::new(compiled),
        })
    }

    /// A selector as the classic protocol reads it: `*`, a URI template when
    /// the text contains an expression (`{`), otherwise an exact topic.
    pub fn classic(text: &str) -> Result<Selector, SelectorError> {
        let kind = if text.contains('{') {
            MatchKind::UriTemplate
        } else {
            MatchKind::Exact
        };
        Selector::parse(kind, text, "")
    }

    pub fn exact(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(MatchKind::Exact, text, "")
    }

    pub fn kind(&self) -> MatchKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The wildcard `*`.
    pub fn is_any(&self) -> bool {
        matches!(*self.compiled, Compiled::Any)
    }

    /// The topic, when this selector names exactly one.
    pub fn exact_topic(&self) -> Option<&str> {
        matches!(*self.compiled, Compiled::Exact).then_some(&*self.text)
    }

    /// Whether `topic` is selected. For a URL pattern, a relative topic is
    /// first resolved against the hub's URL; a topic that is not a URL even
    /// then is not selected.
    pub fn matches(&self, topic: &str) -> bool {
        match &*self.compiled {
            Compiled::Any => true,
            Compiled::Exact => *self.text == *topic,
            Compiled::Template(template) => template.is_match(topic),
            Compiled::Pattern { pattern, base } => {
                let Ok(url) = Url::options().base_url(base.as_ref()).parse(topic) else {
                    return false;
                };
                pattern_matches(pattern, &url)
            }
        }
    }
}

/// Whether `url` matches `pattern`: what `UrlPattern::test` answers, read
/// from the same eight components it reads (urlpattern 0.6,
/// `quirks::parse_match_input`), without copying them into strings and
/// building the result (group maps) that `test` would throw away: 0.4 µs
/// instead of 2 µs for a hot pattern. A test checks that both agree.
fn pattern_matches(pattern: &UrlPattern, url: &Url) -> bool {
    // The path first: it is what tells most topics apart.
    let component = |c: &urlpattern::component::Component<Regex>, value: &str| {
        c.matcher.matches(value).is_some()
    };
    component(&pattern.pathname, url::quirks::pathname(url))
        && component(&pattern.hostname, url.host_str().unwrap_or_default())
        && component(&pattern.protocol, url.scheme())
        && component(&pattern.port, url::quirks::port(url))
        && component(&pattern.username, url.username())
        && component(&pattern.password, url.password().unwrap_or_default())
        && component(&pattern.search, url.query().unwrap_or_default())
        && component(&pattern.hash, url.fragment().unwrap_or_default())
}

/// Compiles a URL pattern, resolving a relative one against `base`.
/// `ignoreCase` stays off: paths are case-sensitive, as in the protocol's
/// examples (host names are lower-cased by URL parsing on both sides).
fn compile_pattern(text: &str, base: &str) -> Result<Compiled, SelectorError> {
    let error = |reason: String| SelectorError::Pattern {
        text: text.to_owned(),
        reason,
    };
    let base = Url::parse(base).ok();
    let init = UrlPatternInit::parse_constructor_string::<Regex>(text, base.clone()).map_err(
        |e| match e {
            urlpattern::Error::BaseUrlRequired => error(
                "a relative pattern needs the hub's absolute URL to resolve against".to_owned(),
            ),
            other => error(other.to_string()),
        },
    )?;
    let options = UrlPatternOptions {
        ignore_case: false,
        ..UrlPatternOptions::default()
    };
    let pattern = <UrlPattern>::parse(init, options).map_err(|e| error(e.to_string()))?;
    Ok(Compiled::Pattern {
        pattern: Box::new(pattern),
        base,
    })
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.kind.name(), self.text)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Selector) -> bool {
        self.kind == other.kind && self.text == other.text
    }
}

impl Eq for Selector {}

/// Hashes what equality compares (kind and text), so selectors can key the
/// hub's index directly.
impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.text.hash(state);
    }
}

fn check(text: &str) -> Result<(), SelectorError> {
    if text.is_empty() {
        return Err(SelectorError::Empty);
    }
    if text.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError::TooLong);
    }
    if crate::text::has_forbidden(text) {
        return Err(SelectorError::ControlCharacter);
    }
    Ok(())
}

mod cache {
    use std::collections::hash_map::RandomState;
    use std::collections::HashMap;
    use std::fmt;
    use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
    use std::sync::Arc;

    use super::{Compiled, MatchKind, Selector};

    /// Remembers recent answers of template and pattern selectors, in bounded
    /// memory, so that the hub runs a selector's regex once per (selector,
    /// topic) rather than once per event. Whatever costs less than a lookup
    /// is answered directly: exact and wildcard selectors, and a template
    /// whose literal prefix or suffix the topic lacks (most of them, when an
    /// event's topic is checked against every subscriber's selectors).
    ///
    /// Entries live in two generations: new answers go to the current one;
    /// when it holds `capacity / 2` entries it becomes the previous one and the
    /// old previous one is dropped. A hit in the previous generation moves the
    /// entry back to the current one, so answers in use survive and the cache
    /// never holds more than `capacity` entries. A capacity below 2 disables
    /// caching.
    ///
    /// A hit allocates nothing: entries are keyed by a 64-bit hash of (kind,
    /// selector text, topic), computed with keys random per cache (so a client
    /// cannot aim collisions), and each entry keeps its strings to confirm the
    /// hit; a collision simply replaces the entry.
    ///
    /// Selectors are identified by kind and text, so one cache must only see
    /// selectors parsed against one base URL (the hub has one). It takes
    /// `&mut self`: the hub owns it under the lock it already holds.
    pub struct MatchCache {
        keys: RandomState,
        generation_len: usize,
        current: Generation,
        previous: Generation,
        hits: u64,
        misses: u64,
    }

    type Generation = HashMap<u64, CachedMatch, BuildHasherDefault<PrehashedKey>>;

    struct CachedMatch {
        kind: MatchKind,
        selector: Arc<str>,
        topic: Box<str>,
        matched: bool,
    }

    impl CachedMatch {
        /// Whether this entry is the answer for (`selector`, `topic`) and
        /// not a hash collision. The same selector object is recognised by
        /// pointer, which spares reading its (likely cold) text.
        fn answers(&self, selector: &Selector, topic: &str) -> bool {
            self.kind == selector.kind
                && *self.topic == *topic
                && (Arc::ptr_eq(&self.selector, &selector.text) || *self.selector == *selector.text)
        }
    }

    impl MatchCache {
        /// A cache holding at most `capacity` answers.
        pub fn new(capacity: usize) -> MatchCache {
            MatchCache {
                keys: RandomState::new(),
                generation_len: capacity / 2,
                current: Generation::default(),
                previous: Generation::default(),
                hits: 0,
                misses: 0,
            }
        }

        /// The same answer as [`Selector::matches`], remembered.
        pub fn matches(&mut self, selector: &Selector, topic: &str) -> bool {
            let worth_caching = match &*selector.compiled {
                Compiled::Any | Compiled::Exact => false,
                Compiled::Template(template) => template.needs_regex(topic),
                Compiled::Pattern { .. } => true,
            };
            if !worth_caching || self.generation_len == 0 {
                return selector.matches(topic);
            }
            let key = self.key(selector, topic);
            if let Some(entry) = self.current.get(&key) {
                if entry.answers(selector, topic) {
                    self.hits += 1;
                    return entry.matched;
                }
            } else if let Some(entry) = self.previous.remove(&key) {
                if entry.answers(selector, topic) {
                    self.hits += 1;
                    let matched = entry.matched;
                    self.insert(key, entry);
                    return matched;
                }
            }
            self.misses += 1;
            let matched = selector.matches(topic);
            self.insert(
                key,
                CachedMatch {
                    kind: selector.kind,
                    selector: Arc::clone(&selector.text),
                    topic: topic.into(),
                    matched,
                },
            );
            matched
        }

        /// How many answers are remembered (at most the capacity).
        pub fn len(&self) -> usize {
            self.current.len() + self.previous.len()
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Answers found in the cache since it was made.
        pub fn hits(&self) -> u64 {
            self.hits
        }

        /// Answers computed (and remembered) since the cache was made.
        pub fn misses(&self) -> u64 {
            self.misses
        }

        /// Forgets every answer (the counters stay).
        pub fn clear(&mut self) {
            self.current.clear();
            self.previous.clear();
        }

        fn key(&self, selector: &Selector, topic: &str) -> u64 {
            let mut hasher = self.keys.build_hasher();
            selector.kind.hash(&mut hasher);
            selector.text.hash(&mut hasher);
            topic.hash(&mut hasher);
            hasher.finish()
        }

        /// Stores `matched` as the answer for `stored_topic` under the key
        /// of `topic`: what a hash collision between the two would leave.
        #[cfg(test)]
        pub(super) fn plant_collision(
            &mut self,
            selector: &Selector,
            topic: &str,
            stored_topic: &str,
            matched: bool,
        ) {
            let key = self.key(selector, topic);
            let entry = CachedMatch {
                kind: selector.kind,
                selector: Arc::clone(&selector.text),
                topic: stored_topic.into(),
                matched,
            };
            self.current.insert(key, entry);
        }

        fn insert(&mut self, key: u64, entry: CachedMatch) {
            if self.current.len() >= self.generation_len && !self.current.contains_key(&key) {
                // Reuse the old generation's allocation for the new one.
                std::mem::swap(&mut self.current, &mut self.previous);
                self.current.clear();
            }
            self.current.insert(key, entry);
        }
    }

    impl fmt::Debug for MatchCache {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("MatchCache")
                .field("capacity", &(self.generation_len * 2))
                .field("len", &self.len())
                .field("hits", &self.hits)
                .field("misses", &self.misses)
                .finish()
        }
    }

    /// The map's keys are already uniform hashes; hashing them again would only
    /// cost time.
    #[derive(Default)]
    struct PrehashedKey(u64);

    impl Hasher for PrehashedKey {
        fn finish(&self) -> u64 {
            self.0
        }

        fn write(&mut self, bytes: &[u8]) {
            // Only `write_u64` is used by a `u64` key; this keeps the hasher
            // correct for any other use.
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }

        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }
}

pub use cache::MatchCache;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HUB: &str = "https://localhost/.well-known/mercure";

    fn template(text: &str) -> Selector {
        Selector::parse(MatchKind::UriTemplate, text, HUB).unwrap()
    }

    fn pattern(text: &str) -> Selector {
        Selector::parse(MatchKind::UrlPattern, text, HUB).unwrap()
    }

    #[test]
    fn selectors_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<Selector>();
        shared::<MatchCache>();
    }

    #[test]
    fn the_wildcard_matches_everything_whatever_the_kind() {
        for kind in [
            MatchKind::Exact,
            MatchKind::UriTemplate,
            MatchKind::UrlPattern,
        ] {
            let any = Selector::parse(kind, "*", HUB).unwrap();
            assert!(any.is_any());
            assert_eq!(any.exact_topic(), None);
            for topic in ["https://example.com/books/1", "/books/1", "not a url", "*"] {
                assert!(any.matches(topic), "{kind:?} `*` should match `{topic}`");
            }
        }
    }

    #[test]
    fn classic_reads_braces_as_a_template_and_the_rest_as_exact() {
        let any = Selector::classic("*").unwrap();
        assert!(any.is_any());

        let exact = Selector::classic("https://example.com/books/1").unwrap();
        assert_eq!(exact.kind(), MatchKind::Exact);
        assert_eq!(exact.exact_topic(), Some("https://example.com/books/1"));
        assert!(exact.matches("https://example.com/books/1"));
        assert!(!exact.matches("https://example.com/books/2"));

        let templated = Selector::classic("https://example.com/books/{id}").unwrap();
        assert_eq!(templated.kind(), MatchKind::UriTemplate);
        assert_eq!(templated.exact_topic(), None);
        assert!(!templated.is_any());
        assert!(templated.matches("https://example.com/books/1"));
    }

    #[test]
    fn a_template_selector_matches_the_expansions_of_its_template() {
        let books = template("https://example.com/books/{id}");
        assert_eq!(books.as_str(), "https://example.com/books/{id}");
        assert!(books.matches("https://example.com/books/1"));
        assert!(books.matches("https://example.com/books/"));
        assert!(books.matches("https://example.com/books/a%2Fb"));
        assert!(!books.matches("https://example.com/books/1/2"));
        assert!(!books.matches("https://example.com/books"));
        assert!(!books.matches("{id}"));

        let query = template("https://example.com/search{?q,page}");
        assert!(query.matches("https://example.com/search"));
        assert!(query.matches("https://example.com/search?q=rust&page=2"));
        assert!(query.matches("https://example.com/search?page=2"));
        assert!(!query.matches("https://example.com/search?page=2&q=rust"));
    }

    #[test]
    fn a_template_without_expressions_is_its_own_only_expansion() {
        let plain = template("https://example.com/a.b");
        assert!(plain.matches("https://example.com/a.b"));
        assert!(!plain.matches("https://example.com/aXb"));
    }

    #[test]
    fn a_malformed_template_is_refused_with_its_text_and_reason() {
        let error = Selector::classic("https://example.com/books/{id").unwrap_err();
        match &error {
            SelectorError::Template { text, reason } => {
                assert_eq!(text, "https://example.com/books/{id");
                assert!(reason.contains("no closing"), "{reason}");
            }
            other => panic!("expected a template error, got {other:?}"),
        }
        assert!(error.to_string().contains("https://example.com/books/{id"));
        assert!(matches!(
            Selector::parse(MatchKind::UriTemplate, "{x:10000}", HUB),
            Err(SelectorError::Template { .. })
        ));
    }

    #[test]
    fn text_checks_apply_to_every_kind() {
        for kind in [
            MatchKind::Exact,
            MatchKind::UriTemplate,
            MatchKind::UrlPattern,
        ] {
            assert_eq!(Selector::parse(kind, "", HUB), Err(SelectorError::Empty));
            let long = "a".repeat(MAX_SELECTOR_LEN + 1);
            assert_eq!(
                Selector::parse(kind, &long, HUB),
                Err(SelectorError::TooLong)
            );
            assert_eq!(
                Selector::parse(kind, "/a\n{b}", HUB),
                Err(SelectorError::ControlCharacter)
            );
        }
    }

    #[test]
    fn a_url_pattern_matches_urls_of_its_shape() {
        let books = pattern("https://example.com/books/:id");
        assert_eq!(books.kind(), MatchKind::UrlPattern);
        assert_eq!(books.exact_topic(), None);
        assert!(books.matches("https://example.com/books/1"));
        assert!(books.matches("https://example.com/books/a%2Fb"));
        // The default port and the host's case are normalised by URL parsing.
        assert!(books.matches("https://example.com:443/books/1"));
        assert!(books.matches("https://EXAMPLE.com/books/1"));
        // A pattern string without `?` or `#` leaves search and hash free.
        assert!(books.matches("https://example.com/books/1?page=2"));

        assert!(!books.matches("https://example.com/books/1/2"));
        assert!(!books.matches("https://example.com/books/"));
        assert!(!books.matches("https://example.com/authors/1"));
        assert!(!books.matches("http://example.com/books/1"));
        assert!(!books.matches("https://example.org/books/1"));
        assert!(!books.matches("https://example.com:8443/books/1"));
    }

    #[test]
    fn url_pattern_paths_are_case_sensitive() {
        let books = pattern("https://example.com/books/:id");
        assert!(!books.matches("https://example.com/Books/1"));
        assert!(!books.matches("https://example.com/BOOKS/1"));
        let relative = pattern("/books/:id");
        assert!(!relative.matches("/Books/1"));
    }

    #[test]
    fn relative_patterns_and_topics_resolve_against_the_hub() {
        let subscriptions = pattern("/.well-known/mercure/subscriptions/:topic/:subscriber");
        assert!(subscriptions.matches("/.well-known/mercure/subscriptions/a%2Fb/urn%3Auuid%3A1"));
        assert!(subscriptions.matches("https://localhost/.well-known/mercure/subscriptions/t/s"));
        assert!(!subscriptions.matches("https://example.com/.well-known/mercure/subscriptions/t/s"));
        assert!(!subscriptions.matches("/.well-known/mercure/subscriptions/t"));

        let books = pattern("/books/:id");
        assert!(books.matches("/books/1"));
        assert!(books.matches("https://localhost/books/1"));
        assert!(!books.matches("https://example.com/books/1"));
        // A path without a leading slash is relative to the hub's directory.
        assert!(!books.matches("books/1"));
        assert!(pattern("books/:id").matches("books/1"));
        assert!(pattern("books/:id").matches("https://localhost/.well-known/books/1"));
    }

    #[test]
    fn a_topic_that_is_not_a_url_never_matches_a_pattern() {
        let absolute = Selector::parse(MatchKind::UrlPattern, "https://example.com/*", "").unwrap();
        assert!(absolute.matches("https://example.com/anything"));
        // Without a base, a relative topic is not a URL.
        assert!(!absolute.matches("/anything"));
        assert!(!absolute.matches("not a url"));
        assert!(!pattern("https://example.com/*").matches("http://[::1"));
    }

    #[test]
    fn a_relative_pattern_needs_the_hubs_url() {
        for base in ["", "not a url"] {
            match Selector::parse(MatchKind::UrlPattern, "/books/:id", base) {
                Err(SelectorError::Pattern { text, reason }) => {
                    assert_eq!(text, "/books/:id");
                    assert!(reason.contains("relative"), "{reason}");
                }
                other => panic!("expected a pattern error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_pattern_is_refused() {
        for text in [
            "https://example.com/books/:id(",
            "https://example.com/books/(",
            "::",
        ] {
            assert!(
                matches!(
                    Selector::parse(MatchKind::UrlPattern, text, HUB),
                    Err(SelectorError::Pattern { .. })
                ),
                "`{text}` should be refused"
            );
        }
    }

    #[test]
    fn pattern_matching_agrees_with_the_crates_own_test() {
        let patterns = [
            "https://example.com/books/:id",
            "https://example.com/books/:id?",
            "https://example.com/books/:id(\\d+)",
            "https://example.com/books/*",
            "https://example.com/books/:id?page=:n#top",
            "https://:user@example.com/*",
            "https://*.example.com:8443/*",
            "http{s}?://example.com/{books/}?:id",
            "/books/:id",
            "books/:id",
            "*://*/*",
        ];
        let topics = [
            "https://example.com/books/1",
            "https://example.com/books/abc",
            "https://example.com/books/",
            "https://example.com/books/1/2",
            "https://example.com/books/1?page=2#top",
            "https://example.com/books/1?page=2",
            "https://alice@example.com/x",
            "https://alice:secret@example.com/x",
            "https://a.example.com:8443/x",
            "https://a.example.com/x",
            "http://example.com/1",
            "http://example.com/books/1",
            "https://localhost/books/1",
            "/books/1",
            "books/1",
            "urn:isbn:123",
            "mailto:someone@example.com",
            "https://example.com/b%C3%BCcher/1",
            "https://EXAMPLE.com/Books/1",
        ];
        let mut agreed = 0;
        for text in patterns {
            let selector = pattern(text);
            let Compiled::Pattern { pattern, base } = &*selector.compiled else {
                panic!("{text} should be a pattern");
            };
            for topic in topics {
                let Ok(url) = Url::options().base_url(base.as_ref()).parse(topic) else {
                    continue;
                };
                let expected = pattern
                    .test(urlpattern::UrlPatternMatchInput::Url(url.clone()))
                    .unwrap();
                assert_eq!(
                    pattern_matches(pattern, &url),
                    expected,
                    "`{text}` on `{topic}`"
                );
                agreed += usize::from(expected);
            }
        }
        // The corpus exercises matches, not only refusals.
        assert!(agreed > 20, "{agreed}");
    }

    #[test]
    fn a_pattern_with_a_hostile_regex_group_stays_fast() {
        let hostile = pattern("https://example.com/:x((?:a+)+b)");
        let topic = format!("https://example.com/{}", "a".repeat(2000));
        let started = std::time::Instant::now();
        assert!(!hostile.matches(&topic));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn selectors_are_equal_by_kind_and_text() {
        assert_eq!(template("/books/{id}"), template("/books/{id}"));
        assert_ne!(template("/books/{id}"), template("/books/{x}"));
        assert_ne!(
            Selector::parse(MatchKind::Exact, "/books/1", HUB).unwrap(),
            pattern("/books/1")
        );
        assert_eq!(
            format!("{:?}", pattern("/books/:id")),
            "URLPattern(/books/:id)"
        );
    }

    #[test]
    fn the_cache_gives_the_answers_of_the_selectors() {
        let selectors = [
            template("https://example.com/books/{id}"),
            template("https://example.com/books/{id}{?page}"),
            pattern("https://example.com/books/:id"),
            pattern("/books/:id"),
            Selector::exact("https://example.com/books/1").unwrap(),
            Selector::classic("*").unwrap(),
        ];
        let topics = [
            "https://example.com/books/1",
            "https://example.com/books/1?page=2",
            "https://example.com/books/1/2",
            "https://localhost/books/1",
            "/books/1",
            "not a url",
        ];
        let mut cache = MatchCache::new(1024);
        for round in 0..3 {
            for selector in &selectors {
                for topic in topics {
                    assert_eq!(
                        cache.matches(selector, topic),
                        selector.matches(topic),
                        "round {round}: {selector:?} on `{topic}`"
                    );
                }
            }
        }
        // Cached: two patterns times six topics, and the two templates for
        // the three topics that start with their prefix; each computed once.
        // Exact and wildcard selectors are never cached.
        assert_eq!(cache.misses(), 18);
        assert_eq!(cache.hits(), 36);
        assert_eq!(cache.len(), 18);
    }

    #[test]
    fn a_selector_parsed_twice_shares_cached_answers() {
        let mut cache = MatchCache::new(16);
        assert!(cache.matches(&template("/books/{id}"), "/books/1"));
        assert!(cache.matches(&template("/books/{id}"), "/books/1"));
        assert_eq!((cache.misses(), cache.hits()), (1, 1));
        // Same text, other kind: another answer.
        assert!(!cache.matches(&pattern("/books/{id}"), "/books/1"));
        assert_eq!(cache.misses(), 2);
        // Rejected by the literal prefix: answered without the cache.
        assert!(!cache.matches(&template("/books/{id}"), "/authors/1"));
        assert_eq!((cache.misses(), cache.hits()), (2, 1));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let selector = template("/books/{id}");
        let mut cache = MatchCache::new(100);
        for i in 0..1000 {
            let topic = format!("/books/{i}");
            assert!(cache.matches(&selector, &topic));
            assert!(cache.len() <= 100, "{} entries after {i}", cache.len());
        }
        assert!(cache.len() >= 50);
        // The most recent answers are still there.
        let misses = cache.misses();
        assert!(cache.matches(&selector, "/books/999"));
        assert_eq!(cache.misses(), misses);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn answers_in_use_survive_a_generation_change() {
        let selector = template("/books/{id}");
        let mut cache = MatchCache::new(8);
        for i in 0..100 {
            // A hot topic asked between every new one.
            assert!(cache.matches(&selector, "/books/hot"));
            assert!(cache.matches(&selector, &format!("/books/{i}")));
        }
        assert_eq!(cache.misses(), 101);
    }

    #[test]
    fn a_tiny_cache_caches_nothing_and_still_answers() {
        let selector = template("/books/{id}");
        for capacity in [0, 1] {
            let mut cache = MatchCache::new(capacity);
            assert!(cache.matches(&selector, "/books/1"));
            assert!(!cache.matches(&selector, "/authors/1"));
            assert!(cache.is_empty());
        }
    }

    #[test]
    fn a_hash_collision_is_recomputed_not_believed() {
        let selector = template("/books/{id}");
        let mut cache = MatchCache::new(16);
        // A wrong answer, stored for another topic under this one's key.
        cache.plant_collision(&selector, "/authors/1", "/books/1", true);
        assert!(!cache.matches(&selector, "/authors/1"));
        assert!(!cache.matches(&selector, "/authors/1"));
    }
}
