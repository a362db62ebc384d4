//! RFC 6570 URI templates (levels 1 to 4) read backwards: a template is
//! compiled into one anchored regular expression whose language is the set of
//! every string some assignment of the template's variables expands to. A
//! topic matches the template when the expression matches it.
//!
//! Why a regular expression: the `regex` crate runs in time linear in the
//! topic whatever the template, so a hostile subscriber cannot make fanout
//! slow; and it is compiled once, when the selector is parsed.
//!
//! Invariants of the compiled language (what the tests protect):
//! - every expansion RFC 6570 §3.2 allows is matched, including undefined
//!   variables (which vanish with their `name=` part and, when all of an
//!   expression's variables are undefined, with its leading operator
//!   character), empty values, lists and associative arrays (a variable
//!   without a modifier may hold any of the three), prefixes and explode;
//! - a variable's value only holds the characters its operator lets through
//!   unencoded (unreserved, plus reserved for `+` and `#`) and
//!   percent-encoded triplets; a raw `/` in a simple expansion does not
//!   match, `%2F` does;
//! - literal text matches itself and nothing else.
//!
//! Where the RFC is stricter than matching needs, this reads leniently:
//! literal text may hold any character but a lone `}` (the RFC also bars
//! spaces, quotes, `<>\^`|`), and a prefix counts a percent-encoded
//! character as one whatever its bytes. Template syntax errors (unclosed or
//! empty expressions, reserved operators, bad names or modifiers) are
//! refused with the byte where they occur.
//!
//! Cost: linear time is not enough, the constant matters too. The literal
//! prefix and suffix are compared as strings (see [`Template`]). The regex
//! is small for any template (variables with the same expansion are
//! grouped, long variable lists nest logarithmically), except for prefix
//! modifiers: `{x:n}` counts up to `n` characters, and counters side by
//! side make the automaton large and its lazy DFA thrash (three `{x:2047}`
//! took 150 ms to match a 2 KiB topic). So the bounded prefixes of one
//! template may add up to [`PREFIX_BUDGET`] characters; a template over it
//! is refused, never matched loosely, since selectors also grant access.

use regex::{Regex, RegexBuilder};

/// RFC 6570 §2.4.1: a prefix length is a positive integer below 10000.
const MAX_PREFIX: u32 = 9999;

/// The sum of a template's bounded prefix lengths (see the module
/// comment). Prefixes in the wild are a few characters long (RFC 6570's
/// examples go up to 30); within this budget a match of a 2 KiB topic
/// stays under a microsecond, where 256 already allowed 2 ms.
const PREFIX_BUDGET: u32 = 64;

/// Bounds the compiled program of one template. Within the prefix budget a
/// template of [`super::MAX_SELECTOR_LEN`] bytes stays well under it; it is
/// a last guard, reported as "too complex" rather than costing the hub
/// memory.
const REGEX_SIZE_LIMIT: usize = 4 * (1 << 20);

/// A prefix this long cannot shorten any topic the hub accepts: each
/// character of a value takes at least one byte of the topic. Such a
/// prefix is compiled as no prefix, which keeps `{x:9999}` cheap, is
/// exact for every topic of at most [`super::MAX_TOPIC_LEN`] bytes and does
/// not count against [`PREFIX_BUDGET`].
const UNBOUNDED_PREFIX: u32 = crate::limits::MAX_TOPIC_LEN as u32;

/// A percent-encoded octet, in either case (RFC 3986 §2.1 makes hex digits
/// case-insensitive, and `+`/`#` pass existing triplets through unchanged).
const PCT: &str = "%[0-9A-Fa-f]{2}";

/// One character of an original value, as it appears in the expansion: an
/// allowed character, or the percent-encoded UTF-8 bytes of one character
/// (a lead triplet and up to three continuation triplets). Used only to
/// count characters for prefix modifiers.
const PCT_CHAR: &str = "%[0-9A-Fa-f]{2}(?:%[89ABab][0-9A-Fa-f]){0,3}";

/// The operators of RFC 6570 §2.2 and their expansion rules (Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Simple,
    Reserved,
    Fragment,
    Label,
    Path,
    PathParameter,
    Query,
    QueryContinuation,
}

impl Operator {
    /// `Ok(None)` when the character is not an operator (the expression
    /// starts with a variable name).
    fn from_char(c: char) -> Result<Option<Operator>, String> {
        Ok(Some(match c {
            '+' => Operator::Reserved,
            '#' => Operator::Fragment,
            '.' => Operator::Label,
            '/' => Operator::Path,
            ';' => Operator::PathParameter,
            '?' => Operator::Query,
            '&' => Operator::QueryContinuation,
            '=' | ',' | '!' | '@' | '|' => {
                return Err(format!(
                    "the operator `{c}` is reserved for future extensions"
                ))
            }
            _ => return Ok(None),
        }))
    }

    /// What precedes the expansion when at least one variable is defined.
    fn first(self) -> &'static str {
        match self {
            Operator::Simple | Operator::Reserved => "",
            Operator::Fragment => "#",
            Operator::Label => ".",
            Operator::Path => "/",
            Operator::PathParameter => ";",
            Operator::Query => "?",
            Operator::QueryContinuation => "&",
        }
    }

    /// What separates the expansions of defined variables (and of the
    /// members of an exploded variable).
    fn separator(self) -> &'static str {
        match self {
            Operator::Simple | Operator::Reserved | Operator::Fragment => ",",
            Operator::Label => ".",
            Operator::Path => "/",
            Operator::PathParameter => ";",
            Operator::Query | Operator::QueryContinuation => "&",
        }
    }

    /// Whether each value is written as `name=value`.
    fn named(self) -> bool {
        matches!(
            self,
            Operator::PathParameter | Operator::Query | Operator::QueryContinuation
        )
    }

    /// For named operators: whether an empty value is written `name`
    /// (`;`) rather than `name=` (`?`, `&`).
    fn empty_is_bare(self) -> bool {
        self == Operator::PathParameter
    }

    /// The characters a value may contain unencoded, as a regex class.
    fn allowed(self) -> &'static str {
        match self {
            // Unreserved plus reserved (gen-delims and sub-delims).
            Operator::Reserved | Operator::Fragment => r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]",
            _ => r"[A-Za-z0-9\-._~]",
        }
    }

    /// Allowed characters plus the comma that joins the members of a
    /// non-exploded list or associative array.
    fn allowed_or_comma(self) -> &'static str {
        match self {
            Operator::Reserved | Operator::Fragment => self.allowed(),
            _ => r"[A-Za-z0-9\-._~,]",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    None,
    Prefix(u32),
    Explode,
}

/// A compiled template: its literal prefix and suffix, compared as plain
/// strings, and the anchored expression for what lies between them.
///
/// Why split: a hub holds thousands of templates, so a template's regex is
/// usually cold in the CPU caches and each byte it reads costs a cache
/// miss (5,000 templates: 7 µs a match, against 0.1 µs for one hot
/// template). Most topics are rejected by the prefix alone, which reads
/// only the selector's own text, and the others leave the regex only the
/// variable part to read. Exact, since the prefix and suffix are fixed.
#[derive(Debug)]
pub(crate) struct Template {
    prefix: Box<str>,
    suffix: Box<str>,
    /// `None` when the template has no expression at all.
    middle: Option<Regex>,
}

impl Template {
    /// Compiles `template`. The error is a sentence for the client saying
    /// what is wrong and where.
    pub(crate) fn compile(template: &str) -> Result<Template, String> {
        let unexpected = |at: usize| format!("unexpected `}}` at byte {at}");
        let Some(start) = template.find('{') else {
            if let Some(at) = template.find('}') {
                return Err(unexpected(at));
            }
            return Ok(Template {
                prefix: template.into(),
                suffix: "".into(),
                middle: None,
            });
        };
        if let Some(at) = template[..start].find('}') {
            return Err(unexpected(at));
        }
        let end = match template.rfind('}') {
            Some(at) if at > start => at + 1,
            _ => return Err(unclosed(start)),
        };
        if let Some(at) = template[end..].find('{') {
            return Err(unclosed(end + at));
        }
        let source = to_regex(&template[start..end], start)?;
        let middle = RegexBuilder::new(&source)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => {
                    "the template is too complex to match efficiently (use shorter prefixes or fewer expressions)"
                        .to_owned()
                }
                other => format!("internal error compiling the template: {other}"),
            })?;
        Ok(Template {
            prefix: template[..start].into(),
            suffix: template[end..].into(),
            middle: Some(middle),
        })
    }

    /// Whether some expansion of the template is exactly `topic`.
    pub(crate) fn is_match(&self, topic: &str) -> bool {
        match (self.between_literals(topic), &self.middle) {
            (Some(middle), Some(regex)) => regex.is_match(middle),
            (Some(middle), None) => middle.is_empty(),
            (None, _) => false,
        }
    }

    /// Whether answering for `topic` takes running the regex, rather than
    /// comparing the literal prefix and suffix, which costs less than a
    /// cache lookup (and rejects most topics).
    pub(crate) fn needs_regex(&self, topic: &str) -> bool {
        self.middle.is_some() && self.between_literals(topic).is_some()
    }

    /// What lies between the prefix and the suffix, if `topic` has both.
    fn between_literals<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic
            .strip_prefix(&*self.prefix)?
            .strip_suffix(&*self.suffix)
    }
}

fn unclosed(at: usize) -> String {
    format!("the expression at byte {at} has no closing `}}`")
}

/// The regular expression source of `template`, anchored at both ends;
/// `start` is where `template` begins in the selector, for error messages.
fn to_regex(template: &str, start: usize) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() * 4 + 8);
    out.push_str(r"\A");
    let mut rest = template;
    let mut offset = start;
    let mut prefixes = 0;
    while !rest.is_empty() {
        let brace = rest.find(['{', '}']).unwrap_or(rest.len());
        out.push_str(&regex::escape(&rest[..brace]));
        rest = &rest[brace..];
        offset += brace;
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('}') {
            return Err(format!("unexpected `}}` at byte {offset}"));
        }
        let Some(close) = rest.find('}') else {
            return Err(unclosed(offset));
        };
        let body = &rest[1..close];
        expression(body, &mut prefixes, &mut out)
            .map_err(|reason| format!("in the expression at byte {offset}: {reason}"))?;
        rest = &rest[close + 1..];
        offset += close + 1;
    }
    out.push_str(r"\z");
    Ok(out)
}

/// Appends the regex of one expression (the text between the braces);
/// `prefixes` is the sum of the template's bounded prefixes so far.
fn expression(body: &str, prefixes: &mut u32, out: &mut String) -> Result<(), String> {
    let mut chars = body.chars();
    let (operator, list) = match chars.next() {
        None => return Err("the expression is empty".to_owned()),
        Some(c) => match Operator::from_char(c)? {
            Some(op) => (op, chars.as_str()),
            None => (Operator::Simple, body),
        },
    };
    // Runs of variables with the same expansion (unnamed operators ignore
    // names, so `{a,b,c}` is one run of three): a run of `r` is a bounded
    // repetition rather than `r` copies in the selection below.
    let mut runs: Vec<(String, u32)> = Vec::new();
    for spec in list.split(',') {
        let (name, modifier) = varspec(spec)?;
        if let Modifier::Prefix(n) = modifier {
            if n < UNBOUNDED_PREFIX {
                *prefixes += n;
                if *prefixes > PREFIX_BUDGET {
                    return Err(format!(
                        "the template's prefix lengths add up to more than {PREFIX_BUDGET} characters, \
                         which would make matching slow (a prefix of {UNBOUNDED_PREFIX} or more is free)"
                    ));
                }
            }
        }
        let value = variable(operator, name, modifier);
        match runs.last_mut() {
            Some((last, count)) if *last == value => *count += 1,
            _ => runs.push((value, 1)),
        }
    }
    let first = regex::escape(operator.first());
    let separator = regex::escape(operator.separator());
    if operator.first() == operator.separator() {
        // Each defined variable contributes `sep expansion`, and the first
        // one's `sep` is the operator itself: the expression is a sequence
        // of independent optional parts (and all undefined gives "").
        for (value, count) in &runs {
            out.push_str(&format!("(?:{separator}{value}){{0,{count}}}"));
        }
    } else {
        // `first` then a non-empty, in-order selection of the variables
        // joined by `sep`; or nothing when all are undefined.
        let (selection, _) = selections(&runs, &separator);
        out.push_str(&format!("(?:{first}{selection})?"));
    }
    Ok(())
}

/// For runs of consecutive variables (an expansion and how many variables
/// in a row share it), returns `(X, Y)`: `X` matches a non-empty, in-order
/// selection of the variables joined by `separator`; `Y` matches any
/// selection, each one preceded by `separator`. Splitting the runs in
/// halves (`X = X_left Y_right | X_right`) keeps the nesting of groups
/// logarithmic and the size `O(n log n)` in the number of runs; a left fold
/// would nest one group per run, and the regex compiler recurses on
/// nesting, so a long variable list could overflow the stack.
fn selections(runs: &[(String, u32)], separator: &str) -> (String, String) {
    match runs {
        [] => (String::new(), String::new()),
        [(value, count)] => (
            format!("(?:{value}(?:{separator}{value}){{0,{}}})", count - 1),
            format!("(?:{separator}{value}){{0,{count}}}"),
        ),
        _ => {
            let (left, right) = runs.split_at(runs.len() / 2);
            let (left_x, left_y) = selections(left, separator);
            let (right_x, right_y) = selections(right, separator);
            (
                format!("(?:{left_x}{right_y}|{right_x})"),
                left_y + &right_y,
            )
        }
    }
}

/// Parses `varname [ ":" max-length | "*" ]`.
fn varspec(spec: &str) -> Result<(&str, Modifier), String> {
    let (name, modifier) = if let Some((name, length)) = spec.split_once(':') {
        (name, Modifier::Prefix(prefix_length(length)?))
    } else if let Some(name) = spec.strip_suffix('*') {
        (name, Modifier::Explode)
    } else {
        (spec, Modifier::None)
    };
    check_varname(name)?;
    Ok((name, modifier))
}

fn prefix_length(text: &str) -> Result<u32, String> {
    let well_formed = !text.is_empty()
        && text.len() <= 4
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    match text.parse::<u32>() {
        Ok(n) if well_formed && n <= MAX_PREFIX => Ok(n),
        _ if text.len() > 4 && text.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "the prefix length `{text}` is larger than {MAX_PREFIX}"
        )),
        _ => Err(format!(
            "the prefix length `{text}` is not a number from 1 to {MAX_PREFIX}"
        )),
    }
}

/// RFC 6570 §2.3: `varchar *( ["."] varchar )`, where a varchar is a
/// letter, a digit, `_` or a percent-encoded triplet.
fn check_varname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a variable name is missing".to_owned());
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    let mut after_dot = true; // a name may not start with a dot
    while i < bytes.len() {
        match bytes[i] {
            b'.' if !after_dot => {
                after_dot = true;
                i += 1;
            }
            b'%' if bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                after_dot = false;
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' => {
                after_dot = false;
                i += 1;
            }
            _ => {
                let c = name[i..].chars().next().unwrap_or('?');
                return Err(format!(
                    "`{c}` is not allowed in the variable name `{name}` (letters, digits, `_`, `%XX` and inner dots are)"
                ));
            }
        }
    }
    if after_dot {
        return Err(format!("the variable name `{name}` ends with a dot"));
    }
    Ok(())
}

/// The regex of one defined variable's expansion (without the separator
/// that precedes it), for every kind of value the variable may hold.
fn variable(operator: Operator, name: &str, modifier: Modifier) -> String {
    let allowed = operator.allowed();
    // Any run of a value's characters.
    let value = format!("(?:{allowed}|{PCT})*");
    let name = regex::escape(name);
    match modifier {
        // Only strings take a prefix (§2.4.1), so this is the only shape.
        Modifier::Prefix(n) => {
            let chars = |min: u32| {
                if n >= UNBOUNDED_PREFIX {
                    format!("(?:{allowed}|{PCT_CHAR}){{{min},}}")
                } else {
                    format!("(?:{allowed}|{PCT_CHAR}){{{min},{n}}}")
                }
            };
            match (operator.named(), operator.empty_is_bare()) {
                (false, _) => chars(0),
                (true, true) => format!("{name}(?:={})?", chars(1)),
                (true, false) => format!("{name}={}", chars(0)),
            }
        }
        // A string, or a list / associative array joined by commas.
        Modifier::None => {
            let or_comma = operator.allowed_or_comma();
            let joined = format!("(?:{or_comma}|{PCT})*");
            match (operator.named(), operator.empty_is_bare()) {
                (false, _) => joined,
                (true, true) => format!("{name}(?:={joined})?"),
                (true, false) => format!("{name}={joined}"),
            }
        }
        // Members joined by the operator's separator. A list member is
        // `value` (unnamed) or `name=value`; an associative array's member is
        // `key=value` with any key, so the name itself does not constrain
        // the members.
        Modifier::Explode => {
            let member = match (operator.named(), operator.empty_is_bare()) {
                (false, _) => format!("{value}(?:={value})?"),
                (true, true) => format!("{value}(?:={value})?"),
                (true, false) => format!("{value}={value}"),
            };
            let separator = regex::escape(operator.separator());
            format!("{member}(?:{separator}{member})*")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Asserts that each `(template, expansion)` pair matches.
    fn assert_expansions(cases: &[(&str, &str)]) {
        for (template, expansion) in cases {
            let compiled = Template::compile(template)
                .unwrap_or_else(|e| panic!("`{template}` should compile: {e}"));
            assert!(
                compiled.is_match(expansion),
                "`{template}` should match `{expansion}` ({compiled:?})"
            );
        }
    }

    fn assert_rejected(cases: &[(&str, &str)]) {
        for (template, topic) in cases {
            let compiled = Template::compile(template).unwrap();
            assert!(
                !compiled.is_match(topic),
                "`{template}` should not match `{topic}` ({compiled:?})"
            );
        }
    }

    fn error_of(template: &str) -> String {
        match Template::compile(template) {
            Ok(compiled) => panic!("`{template}` should be refused, compiled to {compiled:?}"),
            Err(e) => e,
        }
    }

    // The expansion tables of RFC 6570 §3.2, read backwards. Variables:
    // count := ("one", "two", "three"), dom := ("example", "com"),
    // dub := "me/too", hello := "Hello World!", half := "50%",
    // var := "value", who := "fred", base := "http://example.com/home/",
    // path := "/foo/bar", list := ("red", "green", "blue"),
    // keys := [("semi",";"),("dot","."),("comma",",")], v := "6",
    // x := "1024", y := "768", empty := "", empty_keys := [], undef := null.

    #[test]
    fn rfc_3_2_1_variable_expansion() {
        assert_expansions(&[
            ("{count}", "one,two,three"),
            ("{count*}", "one,two,three"),
            ("{/count}", "/one,two,three"),
            ("{/count*}", "/one/two/three"),
            ("{;count}", ";count=one,two,three"),
            ("{;count*}", ";count=one;count=two;count=three"),
            ("{?count}", "?count=one,two,three"),
            ("{?count*}", "?count=one&count=two&count=three"),
            ("{&count*}", "&count=one&count=two&count=three"),
        ]);
    }

    #[test]
    fn rfc_3_2_2_simple_string_expansion() {
        assert_expansions(&[
            ("{var}", "value"),
            ("{hello}", "Hello%20World%21"),
            ("{half}", "50%25"),
            ("O{empty}X", "OX"),
            ("O{undef}X", "OX"),
            ("{x,y}", "1024,768"),
            ("{x,hello,y}", "1024,Hello%20World%21,768"),
            ("?{x,empty}", "?1024,"),
            ("?{x,undef}", "?1024"),
            ("?{undef,y}", "?768"),
            ("{var:3}", "val"),
            ("{var:30}", "value"),
            ("{list}", "red,green,blue"),
            ("{list*}", "red,green,blue"),
            ("{keys}", "semi,%3B,dot,.,comma,%2C"),
            ("{keys*}", "semi=%3B,dot=.,comma=%2C"),
        ]);
    }

    #[test]
    fn rfc_3_2_3_reserved_expansion() {
        assert_expansions(&[
            ("{+var}", "value"),
            ("{+hello}", "Hello%20World!"),
            ("{+half}", "50%25"),
            ("{base}index", "http%3A%2F%2Fexample.com%2Fhome%2Findex"),
            ("{+base}index", "http://example.com/home/index"),
            ("O{+empty}X", "OX"),
            ("O{+undef}X", "OX"),
            ("{+path}/here", "/foo/bar/here"),
            ("here?ref={+path}", "here?ref=/foo/bar"),
            ("up{+path}{var}/here", "up/foo/barvalue/here"),
            ("{+x,hello,y}", "1024,Hello%20World!,768"),
            ("{+path,x}/here", "/foo/bar,1024/here"),
            ("{+path:6}/here", "/foo/b/here"),
            ("{+list}", "red,green,blue"),
            ("{+list*}", "red,green,blue"),
            ("{+keys}", "semi,;,dot,.,comma,,"),
            ("{+keys*}", "semi=;,dot=.,comma=,"),
        ]);
    }

    #[test]
    fn rfc_3_2_4_fragment_expansion() {
        assert_expansions(&[
            ("{#var}", "#value"),
            ("{#hello}", "#Hello%20World!"),
            ("{#half}", "#50%25"),
            ("foo{#empty}", "foo#"),
            ("foo{#undef}", "foo"),
            ("{#x,hello,y}", "#1024,Hello%20World!,768"),
            ("{#path,x}/here", "#/foo/bar,1024/here"),
            ("{#path:6}/here", "#/foo/b/here"),
            ("{#list}", "#red,green,blue"),
            ("{#list*}", "#red,green,blue"),
            ("{#keys}", "#semi,;,dot,.,comma,,"),
            ("{#keys*}", "#semi=;,dot=.,comma=,"),
        ]);
    }

    #[test]
    fn rfc_3_2_5_label_expansion() {
        assert_expansions(&[
            ("{.who}", ".fred"),
            ("{.who,who}", ".fred.fred"),
            ("{.half,who}", ".50%25.fred"),
            ("www{.dom*}", "www.example.com"),
            ("X{.var}", "X.value"),
            ("X{.empty}", "X."),
            ("X{.undef}", "X"),
            ("X{.var:3}", "X.val"),
            ("X{.list}", "X.red,green,blue"),
            ("X{.list*}", "X.red.green.blue"),
            ("X{.keys}", "X.semi,%3B,dot,.,comma,%2C"),
            ("X{.keys*}", "X.semi=%3B.dot=..comma=%2C"),
            ("X{.empty_keys}", "X"),
            ("X{.empty_keys*}", "X"),
        ]);
    }

    #[test]
    fn rfc_3_2_6_path_segment_expansion() {
        assert_expansions(&[
            ("{/who}", "/fred"),
            ("{/who,who}", "/fred/fred"),
            ("{/half,who}", "/50%25/fred"),
            ("{/who,dub}", "/fred/me%2Ftoo"),
            ("{/var}", "/value"),
            ("{/var,empty}", "/value/"),
            ("{/var,undef}", "/value"),
            ("{/var,x}/here", "/value/1024/here"),
            ("{/var:1,var}", "/v/value"),
            ("{/list}", "/red,green,blue"),
            ("{/list*}", "/red/green/blue"),
            ("{/list*,path:4}", "/red/green/blue/%2Ffoo"),
            ("{/keys}", "/semi,%3B,dot,.,comma,%2C"),
            ("{/keys*}", "/semi=%3B/dot=./comma=%2C"),
        ]);
    }

    #[test]
    fn rfc_3_2_7_path_style_parameter_expansion() {
        assert_expansions(&[
            ("{;who}", ";who=fred"),
            ("{;half}", ";half=50%25"),
            ("{;empty}", ";empty"),
            ("{;v,empty,who}", ";v=6;empty;who=fred"),
            ("{;v,bar,who}", ";v=6;who=fred"),
            ("{;x,y}", ";x=1024;y=768"),
            ("{;x,y,empty}", ";x=1024;y=768;empty"),
            ("{;x,y,undef}", ";x=1024;y=768"),
            ("{;hello:5}", ";hello=Hello"),
            ("{;list}", ";list=red,green,blue"),
            ("{;list*}", ";list=red;list=green;list=blue"),
            ("{;keys}", ";keys=semi,%3B,dot,.,comma,%2C"),
            ("{;keys*}", ";semi=%3B;dot=.;comma=%2C"),
        ]);
    }

    #[test]
    fn rfc_3_2_8_form_style_query_expansion() {
        assert_expansions(&[
            ("{?who}", "?who=fred"),
            ("{?half}", "?half=50%25"),
            ("{?x,y}", "?x=1024&y=768"),
            ("{?x,y,empty}", "?x=1024&y=768&empty="),
            ("{?x,y,undef}", "?x=1024&y=768"),
            ("{?var:3}", "?var=val"),
            ("{?list}", "?list=red,green,blue"),
            ("{?list*}", "?list=red&list=green&list=blue"),
            ("{?keys}", "?keys=semi,%3B,dot,.,comma,%2C"),
            ("{?keys*}", "?semi=%3B&dot=.&comma=%2C"),
        ]);
    }

    #[test]
    fn rfc_3_2_9_form_style_query_continuation() {
        assert_expansions(&[
            ("{&who}", "&who=fred"),
            ("{&half}", "&half=50%25"),
            ("?fixed=yes{&x}", "?fixed=yes&x=1024"),
            ("{&x,y,empty}", "&x=1024&y=768&empty="),
            ("{&var:3}", "&var=val"),
            ("{&list}", "&list=red,green,blue"),
            ("{&list*}", "&list=red&list=green&list=blue"),
            ("{&keys}", "&keys=semi,%3B,dot,.,comma,%2C"),
            ("{&keys*}", "&semi=%3B&dot=.&comma=%2C"),
        ]);
    }

    #[test]
    fn rfc_1_2_level_examples() {
        assert_expansions(&[
            // Level 1 to 4 examples of §1.2.
            ("{var}", "value"),
            ("{hello}", "Hello%20World%21"),
            ("{+hello}", "Hello%20World!"),
            ("{+path}/here", "/foo/bar/here"),
            ("X{#var}", "X#value"),
            ("X{#hello}", "X#Hello%20World!"),
            ("map?{x,y}", "map?1024,768"),
            ("{x,hello,y}", "1024,Hello%20World%21,768"),
            ("{+x,hello,y}", "1024,Hello%20World!,768"),
            ("{#x,hello,y}", "#1024,Hello%20World!,768"),
            ("X{.x,y}", "X.1024.768"),
            ("{/var,x}/here", "/value/1024/here"),
            ("{;x,y,empty}", ";x=1024;y=768;empty"),
            ("{?x,y,empty}", "?x=1024&y=768&empty="),
            ("?fixed=yes{&x}", "?fixed=yes&x=1024"),
            ("{var:3}", "val"),
            ("{var:30}", "value"),
            ("{/var:1,var}", "/v/value"),
            ("{?var:3}", "?var=val"),
            ("{&x,y,empty}", "&x=1024&y=768&empty="),
            ("{/list*}", "/red/green/blue"),
            ("{;list*}", ";list=red;list=green;list=blue"),
            ("{?keys*}", "?semi=%3B&dot=.&comma=%2C"),
        ]);
    }

    #[test]
    fn every_variable_may_be_undefined_in_every_operator() {
        assert_expansions(&[
            ("a{x,y}b", "ab"),
            ("a{+x,y}b", "ab"),
            ("a{#x,y}b", "ab"),
            ("a{.x,y}b", "ab"),
            ("a{/x,y}b", "ab"),
            ("a{;x,y}b", "ab"),
            ("a{?x,y}b", "ab"),
            ("a{&x,y}b", "ab"),
            // Only the middle one defined.
            ("{?x,y,z}", "?y=1"),
            ("{#x,y,z}", "#1"),
            ("{;x,y,z}", ";y"),
        ]);
    }

    #[test]
    fn prefix_counts_characters_not_encoded_bytes() {
        assert_expansions(&[
            // "é" is one character, two encoded octets.
            ("{var:1}", "%C3%A9"),
            ("{var:2}", "a%C3%A9"),
            // "😀" is four octets.
            ("{var:1}", "%F0%9F%98%80"),
            ("{;semi:2}", ";semi=%3B"),
        ]);
        assert_rejected(&[
            ("{var:3}", "valu"),
            ("{var:1}", "%C3%A9a"),
            ("{?var:3}", "?var=valu"),
            ("{;var:3}", ";var=valu"),
        ]);
    }

    #[test]
    fn simple_expansion_allows_pct_encoded_but_not_raw_reserved() {
        let books = "https://example.com/books/{id}";
        assert_expansions(&[
            (books, "https://example.com/books/1"),
            (books, "https://example.com/books/"),
            (books, "https://example.com/books/a%2Fb"),
            (books, "https://example.com/books/a%2fb"),
            // A list value.
            (books, "https://example.com/books/1,2"),
        ]);
        assert_rejected(&[
            (books, "https://example.com/books/1/2"),
            (books, "https://example.com/books/1?x"),
            (books, "https://example.com/books/1#x"),
            (books, "https://example.com/books/a b"),
            (books, "https://example.com/books/%zz"),
            (books, "https://example.com/books/%2"),
            (books, "https://example.com/books/é"),
            (books, "https://example.com/authors/1"),
            (books, "https://example.com/books"),
            (books, "xhttps://example.com/books/1"),
            (books, "https://example.com/books/1\n"),
        ]);
    }

    #[test]
    fn reserved_expansion_allows_raw_reserved_characters() {
        assert_expansions(&[
            (
                "https://example.com/{+rest}",
                "https://example.com/a/b?c=d#e",
            ),
            ("https://example.com/{#frag}", "https://example.com/#a/b?c"),
        ]);
        assert_rejected(&[
            ("https://example.com/{+rest}", "https://example.com/a b"),
            ("https://example.com/{+rest}", "https://example.com/a{b}"),
            ("https://example.com/{+rest}", "https://example.com/a%"),
        ]);
    }

    #[test]
    fn operators_constrain_their_shape() {
        assert_rejected(&[
            ("{/who}", "fred"),
            ("{/who}", "/fred/x"),
            ("{.who}", "/fred"),
            ("{;who}", ";bob=fred"),
            ("{;who}", "who=fred"),
            ("{?who}", "?who"),
            ("{?who}", "&who=fred"),
            ("{?who}", "?bob=fred"),
            ("{?x,y}", "?y=1&x=2"),
            ("{&x}", "?x=1"),
            ("{#var}", "value"),
            ("{?list}", "?list=a&list=b"),
            ("{?keys*}", "?semi"),
            ("{x,y}", "1,2,3%2C/"),
        ]);
    }

    #[test]
    fn the_literal_prefix_and_suffix_are_matched_around_the_expressions() {
        assert_expansions(&[
            (
                "https://example.com/{id}.json",
                "https://example.com/1.json",
            ),
            ("https://example.com/{id}.json", "https://example.com/.json"),
            ("a{x}b{y}c", "a1b2c"),
            ("{x}", ""),
            ("ab", "ab"),
            // Prefix and suffix may share characters but not overlap.
            ("ab{x}ba", "abba"),
        ]);
        assert_rejected(&[
            ("https://example.com/{id}.json", "https://example.com/1.xml"),
            ("https://example.com/{id}.json", "https://example.com.json"),
            ("ab{x}ba", "aba"),
            ("ab{x}ba", "ab"),
            ("ab", "abc"),
            ("ab", "a"),
            ("a{x}b{y}c", "a1b2/c"),
        ]);
    }

    #[test]
    fn literals_are_matched_literally() {
        assert_expansions(&[
            ("https://example.com/a.b/{x}", "https://example.com/a.b/1"),
            ("/(x)+[y]/{x}", "/(x)+[y]/1"),
            ("/caf\u{e9}/{x}", "/caf\u{e9}/1"),
        ]);
        assert_rejected(&[
            ("https://example.com/a.b/{x}", "https://example.com/aXb/1"),
            ("/(x)+[y]/{x}", "/xxx[y]/1"),
            ("/a*/{x}", "/aaa/1"),
        ]);
    }

    #[test]
    fn variable_names_may_hold_dots_and_pct_encoded() {
        assert_expansions(&[("{;a.b}", ";a.b=1"), ("{?%41b}", "?%41b=1"), ("{_x9}", "1")]);
        assert_rejected(&[("{;a.b}", ";aXb=1")]);
    }

    #[test]
    fn malformed_templates_are_refused_with_a_reason() {
        for (template, reason) in [
            ("https://example.com/{id", "no closing"),
            ("https://example.com/id}", "unexpected `}`"),
            ("{}", "empty"),
            ("{+}", "variable name is missing"),
            ("{x,}", "variable name is missing"),
            ("{,x}", "reserved for future extensions"),
            ("{=x}", "reserved for future extensions"),
            ("{!x}", "reserved for future extensions"),
            ("{@x}", "reserved for future extensions"),
            ("{|x}", "reserved for future extensions"),
            ("{a b}", "not allowed"),
            ("{a-b}", "not allowed"),
            ("{a{b}", "not allowed"),
            ("{.a..b}", "not allowed"),
            ("{.a.}", "ends with a dot"),
            ("{%4}", "not allowed"),
            ("{x:}", "not a number"),
            ("{x:0}", "not a number"),
            ("{x:01}", "not a number"),
            ("{x:a}", "not a number"),
            ("{x:10000}", "larger than 9999"),
            ("{x:3*}", "not a number"),
            ("{x*:3}", "not allowed"),
            ("{x**}", "not allowed"),
        ] {
            let error = error_of(template);
            assert!(
                error.contains(reason),
                "`{template}`: expected a reason containing `{reason}`, got `{error}`"
            );
        }
        assert!(error_of("ab{c").contains("byte 2"));
    }

    #[test]
    fn large_prefixes_are_free_when_no_topic_can_exceed_them() {
        let long = "a".repeat(crate::limits::MAX_TOPIC_LEN);
        assert_expansions(&[("{x:9999}", "value"), ("{x:2048}", &long)]);
        let many = "{x:9999}".repeat(200);
        assert_expansions(&[(&many, "abc")]);
    }

    #[test]
    fn bounded_prefixes_share_a_budget() {
        assert_expansions(&[("{x:64}", &"a".repeat(64))]);
        assert_rejected(&[("{x:64}", &"a".repeat(65))]);
        let at_budget = "{x:2}".repeat(32);
        assert_expansions(&[(&at_budget, &"a".repeat(64))]);
        assert_rejected(&[(&at_budget, &"a".repeat(65))]);
        for over in ["{x:65}", "{x:60}{y:5}", "{x:60,y:5}", "{x:2047}"] {
            assert!(error_of(over).contains("add up to more than 64"), "{over}");
        }
    }

    #[test]
    fn long_variable_lists_compile_and_keep_their_order() {
        let wide = format!("{{?{}}}", vec!["a"; 1000].join(","));
        assert!(wide.len() <= super::super::MAX_SELECTOR_LEN);
        assert_expansions(&[(&wide, "?a=1&a=2&a=")]);
        let names: Vec<String> = (0..400).map(|i| format!("v{i}")).collect();
        let distinct = format!("{{?{}}}", names.join(","));
        assert!(distinct.len() <= super::super::MAX_SELECTOR_LEN);
        assert_expansions(&[
            (&distinct, "?v3=1&v200=2"),
            (&distinct, "?v399="),
            (&distinct, ""),
        ]);
        assert_rejected(&[
            (&distinct, "?v200=2&v3=1"),
            (&distinct, "?v3=1&v3=1"),
            (&distinct, "?"),
            (&distinct, "?v400=1"),
        ]);
    }

    #[test]
    fn runs_of_variables_keep_their_count() {
        assert_expansions(&[
            ("{/a,b,c}", "/1/2/3"),
            ("{/a,b,c}", "/1"),
            ("{?a,a,b}", "?a=1&a=2&b=3"),
            ("{?a,a,b}", "?a=2&b=3"),
            ("{#a,b}", "#1,2"),
            ("{;a,a}", ";a;a=1"),
        ]);
        assert_rejected(&[
            ("{/a,b,c}", "/1/2/3/4"),
            ("{?a,a,b}", "?a=1&a=2&a=3"),
            ("{;a,a}", ";a;a;a"),
            // (a label value may itself contain dots: `.1.2.3` matches)
            ("{.a,b}", ".1/2"),
        ]);
    }

    #[test]
    fn hostile_templates_stay_linear() {
        // Nested unbounded repetitions that a backtracking engine would
        // explode on; the automaton answers at once.
        let template = "{+a}{+b}{+c}{+d}{+e}{+f}{+g}{+h}!";
        let topic = "a".repeat(2000);
        let compiled = Template::compile(template).unwrap();
        let started = std::time::Instant::now();
        assert!(!compiled.is_match(&topic));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// A value of RFC 6570 §2.4 (an undefined variable is simply absent).
    #[derive(Debug, Clone)]
    enum Value {
        Text(String),
        List(Vec<String>),
        Pairs(Vec<(String, String)>),
    }

    /// The expansion algorithm of RFC 6570 Appendix A, written from the
    /// RFC for these tests only; the compiler above never expands.
    fn expand(operator: Operator, specs: &[(&str, Modifier, Option<Value>)]) -> String {
        let reserved = operator.allowed().contains(':');
        let encode = |text: &str| {
            let mut out = String::new();
            let bytes = text.as_bytes();
            let mut i = 0;
            for c in text.chars() {
                let width = c.len_utf8();
                let triplet = reserved
                    && c == '%'
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
                let unreserved = c.is_ascii_alphanumeric() || "-._~".contains(c);
                let reserved_char = ":/?#[]@!$&'()*+,;=".contains(c);
                if unreserved || (reserved && reserved_char) || triplet {
                    out.push(c);
                } else {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
                i += width;
            }
            out
        };
        let ifemp = if operator.empty_is_bare() { "" } else { "=" };
        let sep = operator.separator();
        let mut out = String::new();
        let mut first = true;
        for (name, modifier, value) in specs {
            let Some(value) = value else { continue };
            match value {
                Value::List(items) if items.is_empty() => continue,
                Value::Pairs(pairs) if pairs.is_empty() => continue,
                _ => {}
            }
            out.push_str(if first { operator.first() } else { sep });
            first = false;
            match (value, modifier) {
                (Value::Text(text), _) => {
                    if operator.named() {
                        out.push_str(name);
                        if text.is_empty() {
                            out.push_str(ifemp);
                            continue;
                        }
                        out.push('=');
                    }
                    let text: String = match modifier {
                        Modifier::Prefix(n) => text.chars().take(*n as usize).collect(),
                        _ => text.clone(),
                    };
                    out.push_str(&encode(&text));
                }
                (composite, Modifier::Explode) => {
                    let members: Vec<String> = match composite {
                        Value::List(items) => items
                            .iter()
                            .map(|item| match (operator.named(), item.is_empty()) {
                                (false, _) => encode(item),
                                (true, true) => format!("{name}{ifemp}"),
                                (true, false) => format!("{name}={}", encode(item)),
                            })
                            .collect(),
                        Value::Pairs(pairs) => pairs
                            .iter()
                            .map(|(k, v)| match (operator.named(), v.is_empty()) {
                                (true, true) => format!("{}{ifemp}", encode(k)),
                                _ => format!("{}={}", encode(k), encode(v)),
                            })
                            .collect(),
                        Value::Text(_) => unreachable!(),
                    };
                    out.push_str(&members.join(sep));
                }
                (composite, _) => {
                    if operator.named() {
                        out.push_str(name);
                        out.push('=');
                    }
                    let members: Vec<String> = match composite {
                        Value::List(items) => items.iter().map(|i| encode(i)).collect(),
                        Value::Pairs(pairs) => pairs
                            .iter()
                            .flat_map(|(k, v)| [encode(k), encode(v)])
                            .collect(),
                        Value::Text(_) => unreachable!(),
                    };
                    out.push_str(&members.join(","));
                }
            }
        }
        out
    }

    /// A deterministic generator (xorshift), so a failure is reproducible.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % sides as u64) as usize
        }

        fn text(&mut self) -> String {
            #[rustfmt::skip]
            const PIECES: &[&str] = &[
                "a", "Z", "0", "-", ".", "_", "~", "/", "?", "#", "&", "=", ",", ";", ":",
                "+", "!", "'", "(", "[", " ", "%", "%41", "%zz", "\u{e9}", "\u{1f600}", "\"",
            ];
            (0..self.roll(6))
                .map(|_| PIECES[self.roll(PIECES.len())])
                .collect()
        }

        fn value(&mut self, modifier: Modifier) -> Option<Value> {
            match (self.roll(5), modifier) {
                (0, _) => None,
                (_, Modifier::Prefix(_)) | (1 | 2, _) => Some(Value::Text(self.text())),
                (3, _) => Some(Value::List(
                    (0..self.roll(4)).map(|_| self.text()).collect(),
                )),
                _ => Some(Value::Pairs(
                    (0..self.roll(4))
                        .map(|_| (format!("k{}", self.text()), self.text()))
                        .collect(),
                )),
            }
        }
    }

    #[test]
    fn every_generated_expansion_matches_its_template() {
        const OPERATORS: &[(&str, Operator)] = &[
            ("", Operator::Simple),
            ("+", Operator::Reserved),
            ("#", Operator::Fragment),
            (".", Operator::Label),
            ("/", Operator::Path),
            (";", Operator::PathParameter),
            ("?", Operator::Query),
            ("&", Operator::QueryContinuation),
        ];
        const NAMES: &[&str] = &["x", "y", "long_name", "a.b", "%41"];
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        for case in 0..1000 {
            let mut template = String::from("https://example.com/");
            let mut expansion = template.clone();
            for _ in 0..1 + dice.roll(3) {
                let (symbol, operator) = OPERATORS[dice.roll(OPERATORS.len())];
                let specs: Vec<_> = (0..1 + dice.roll(3))
                    .map(|_| {
                        let name = NAMES[dice.roll(NAMES.len())];
                        let modifier = match dice.roll(4) {
                            0 => Modifier::Prefix(1 + dice.roll(5) as u32),
                            1 => Modifier::Explode,
                            _ => Modifier::None,
                        };
                        (name, modifier, dice.value(modifier))
                    })
                    .collect();
                let list: Vec<String> = specs
                    .iter()
                    .map(|(name, modifier, _)| match modifier {
                        Modifier::None => (*name).to_owned(),
                        Modifier::Prefix(n) => format!("{name}:{n}"),
                        Modifier::Explode => format!("{name}*"),
                    })
                    .collect();
                template.push_str(&format!("{{{symbol}{}}}/", list.join(",")));
                expansion.push_str(&expand(operator, &specs));
                expansion.push('/');
                if dice.roll(2) == 0 {
                    template.push_str("lit.");
                    expansion.push_str("lit.");
                }
            }
            let compiled = Template::compile(&template).unwrap();
            assert!(
                compiled.is_match(&expansion),
                "case {case}: `{template}` should match `{expansion}`"
            );
        }
    }

    #[test]
    fn the_reference_expander_agrees_with_the_rfc() {
        let list = || {
            Some(Value::List(vec![
                "red".into(),
                "green".into(),
                "blue".into(),
            ]))
        };
        let keys = || {
            Some(Value::Pairs(vec![
                ("semi".into(), ";".into()),
                ("dot".into(), ".".into()),
                ("comma".into(), ",".into()),
            ]))
        };
        let text = |t: &str| Some(Value::Text(t.to_owned()));
        assert_eq!(
            expand(
                Operator::Simple,
                &[("hello", Modifier::None, text("Hello World!"))]
            ),
            "Hello%20World%21"
        );
        assert_eq!(
            expand(
                Operator::Path,
                &[
                    ("list", Modifier::Explode, list()),
                    ("path", Modifier::Prefix(4), text("/foo/bar"))
                ]
            ),
            "/red/green/blue/%2Ffoo"
        );
        assert_eq!(
            expand(
                Operator::PathParameter,
                &[("list", Modifier::Explode, list())]
            ),
            ";list=red;list=green;list=blue"
        );
        assert_eq!(
            expand(Operator::Query, &[("keys", Modifier::Explode, keys())]),
            "?semi=%3B&dot=.&comma=%2C"
        );
        assert_eq!(
            expand(Operator::Reserved, &[("keys", Modifier::None, keys())]),
            "semi,;,dot,.,comma,,"
        );
        assert_eq!(
            expand(
                Operator::PathParameter,
                &[
                    ("v", Modifier::None, text("6")),
                    ("empty", Modifier::None, text("")),
                    ("bar", Modifier::None, None),
                    ("who", Modifier::None, text("fred"))
                ]
            ),
            ";v=6;empty;who=fred"
        );
    }
}
