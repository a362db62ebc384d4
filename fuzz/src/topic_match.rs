//! Target `topic_match`: topic selectors never panic and answer the same
//! question the same way every time, through the match cache too; an exact
//! selector matches a topic iff they are equal; and a URI template matches
//! every topic RFC 6570 expands it to (expansions made here, by
//! [`crate::expand`], not by the hub).

use arbitrary::Arbitrary;
use pushwire_core::limits::MAX_TOPIC_LEN;
use pushwire_core::route::{MatchCache, MatchKind, Selector, MAX_SELECTOR_LEN};

use crate::expand::{self, Modifier, Value, Var, OPERATORS};

/// The hub's URL, against which relative URL patterns resolve.
const HUB_URL: &str = "https://hub.example/.well-known/mercure";

/// The sum of a template's bounded prefix lengths the hub accepts (its
/// documented budget); larger prefixes read as unbounded.
const PREFIX_BUDGET: u32 = 64;

#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    pub kind: u8,
    pub selector: String,
    pub topics: Vec<String>,
    pub template: Vec<Part>,
}

/// A piece of a generated template.
#[derive(Debug, Clone, Arbitrary)]
pub enum Part {
    Literal(String),
    Expression { operator: u8, vars: Vec<GenVar> },
}

#[derive(Debug, Clone, Arbitrary)]
pub struct GenVar {
    pub modifier: u8,
    pub prefix: u16,
    pub value: Option<GenValue>,
}

#[derive(Debug, Clone, Arbitrary)]
pub enum GenValue {
    Text(String),
    List(Vec<String>),
    Map(Vec<(String, String)>),
}

pub fn check(input: Input) {
    check_selector(input.kind, &input.selector, &input.topics);
    check_template(&input.template, &input.topics);
}

fn kind(k: u8) -> MatchKind {
    match k % 3 {
        0 => MatchKind::Exact,
        1 => MatchKind::UriTemplate,
        _ => MatchKind::UrlPattern,
    }
}

/// Any text as any kind of selector.
fn check_selector(k: u8, text: &str, topics: &[String]) {
    let kind = kind(k);
    let Ok(selector) = Selector::parse(kind, text, HUB_URL) else {
        return;
    };
    let again = Selector::parse(kind, text, HUB_URL).unwrap_or_else(|e| {
        panic!("`{text}` parsed once, then failed: {e}");
    });
    let mut cache = MatchCache::new(8);
    for topic in topics.iter().map(String::as_str).chain([text]) {
        let answer = selector.matches(topic);
        assert_eq!(answer, selector.matches(topic), "asked twice");
        assert_eq!(answer, again.matches(topic), "parsed twice");
        assert_eq!(answer, cache.matches(&selector, topic), "cache, first ask");
        assert_eq!(answer, cache.matches(&again, topic), "cache, second ask");
        if selector.is_any() {
            assert!(answer, "`*` selects everything");
        } else if kind == MatchKind::Exact {
            assert_eq!(answer, text == topic, "exact `{text}` against `{topic}`");
            assert_eq!(selector.exact_topic(), Some(text));
        }
    }
    // Classic reading: braces make a template, anything else is exact.
    if let Ok(classic) = Selector::classic(text) {
        if !text.contains('{') && !classic.is_any() {
            assert_eq!(classic.exact_topic(), Some(text));
        }
    }
}

/// Builds a template and one expansion of it from the generated parts.
/// Returns `None` for templates the hub documents it refuses (too long,
/// over the prefix budget).
fn build(parts: &[Part]) -> Option<(String, String, bool)> {
    let mut template = String::new();
    let mut topic = String::new();
    let mut budget = 0u32;
    let mut has_expression = false;
    let mut names = 0usize;
    for part in parts.iter().take(16) {
        match part {
            Part::Literal(text) => {
                // Literal text may hold anything but braces and (like every
                // selector) control characters.
                let clean: String = text
                    .chars()
                    .filter(|c| !matches!(c, '{' | '}') && !c.is_control())
                    .collect();
                template.push_str(&clean);
                topic.push_str(&clean);
            }
            Part::Expression { operator, vars } => {
                let operator = OPERATORS[usize::from(*operator) % OPERATORS.len()];
                let mut made = Vec::new();
                for v in vars.iter().take(8) {
                    names += 1;
                    let value = v.value.clone().map(|value| match value {
                        GenValue::Text(t) => Value::Text(t),
                        GenValue::List(l) => Value::List(l),
                        GenValue::Map(m) => Value::Map(m),
                    });
                    // Prefixes apply to text values only (RFC 6570 §2.4.1).
                    let modifier = match (v.modifier % 3, &value) {
                        (1, _) => Modifier::Explode,
                        (2, Some(Value::Text(_)) | None) => {
                            let n = u32::from(v.prefix) % 9999 + 1;
                            if n < MAX_TOPIC_LEN as u32 {
                                budget += n;
                            }
                            Modifier::Prefix(n)
                        }
                        _ => Modifier::None,
                    };
                    made.push(Var {
                        name: format!("v{names}"),
                        modifier,
                        value,
                    });
                }
                if made.is_empty() {
                    continue;
                }
                has_expression = true;
                template.push_str(&expand::expression_text(operator, &made));
                topic.push_str(&expand::expand_expression(operator, &made));
            }
        }
    }
    let acceptable =
        !template.is_empty() && template.len() <= MAX_SELECTOR_LEN && budget <= PREFIX_BUDGET;
    acceptable.then_some((template, topic, has_expression))
}

fn check_template(parts: &[Part], topics: &[String]) {
    let Some((template, expansion, has_expression)) = build(parts) else {
        return;
    };
    let selector = match Selector::parse(MatchKind::UriTemplate, &template, HUB_URL) {
        Ok(selector) => selector,
        Err(e) => panic!("a well-formed template `{template}` was refused: {e}"),
    };
    if expansion.len() <= MAX_TOPIC_LEN {
        assert!(
            selector.matches(&expansion),
            "`{template}` does not match its expansion `{expansion}`"
        );
    }
    if !has_expression && !selector.is_any() {
        // A template without expressions is its own only expansion.
        for topic in topics {
            assert_eq!(
                selector.matches(topic),
                *topic == template,
                "`{template}` vs `{topic}`"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(operator: u8, vars: Vec<GenVar>) -> Part {
        Part::Expression { operator, vars }
    }

    fn text(modifier: u8, prefix: u16, t: &str) -> GenVar {
        GenVar {
            modifier,
            prefix,
            value: Some(GenValue::Text(t.to_owned())),
        }
    }

    #[test]
    fn templates_match_their_expansions() {
        for operator in 0..8 {
            check(Input {
                kind: 1,
                selector: "https://example.com/{id}".to_owned(),
                topics: vec!["https://example.com/1".to_owned(), "x".to_owned()],
                template: vec![
                    Part::Literal("https://example.com/books".to_owned()),
                    expr(
                        operator,
                        vec![
                            text(0, 0, "a b/ü%zz"),
                            text(2, 2, "prefix"),
                            GenVar {
                                modifier: 1,
                                prefix: 0,
                                value: Some(GenValue::Map(vec![
                                    ("k".into(), "".into()),
                                    ("".into(), "v".into()),
                                ])),
                            },
                            GenVar {
                                modifier: 0,
                                prefix: 0,
                                value: Some(GenValue::List(vec!["".into(), ",".into()])),
                            },
                            GenVar {
                                modifier: 0,
                                prefix: 0,
                                value: None,
                            },
                        ],
                    ),
                    Part::Literal("{}/tail".to_owned()),
                ],
            });
        }
    }

    #[test]
    fn exact_and_wildcard_selectors() {
        for kind in 0..3 {
            check(Input {
                kind,
                selector: "*".to_owned(),
                topics: vec!["anything".to_owned(), String::new()],
                template: vec![Part::Literal("plain".to_owned())],
            });
            check(Input {
                kind,
                selector: "https://example.com/a".to_owned(),
                topics: vec![
                    "https://example.com/a".to_owned(),
                    "https://example.com/A".to_owned(),
                ],
                template: vec![],
            });
        }
    }
}
