//! RFC 6570 URI template expansion (levels 1 to 4), from the RFC's
//! Appendix A algorithm, to produce topics a template must match.

/// A variable's value (RFC 6570 §2.3). Empty lists and maps are undefined.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    List(Vec<String>),
    Map(Vec<(String, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    None,
    Explode,
    /// `:n`, 1 to 9999 characters; only for text values.
    Prefix(u32),
}

/// One variable of an expression and its value (`None`: undefined).
#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub modifier: Modifier,
    pub value: Option<Value>,
}

/// The operator characters, `None` for simple string expansion.
pub const OPERATORS: [Option<char>; 8] = [
    None,
    Some('+'),
    Some('#'),
    Some('.'),
    Some('/'),
    Some(';'),
    Some('?'),
    Some('&'),
];

struct Rules {
    first: &'static str,
    sep: &'static str,
    named: bool,
    ifemp: &'static str,
    reserved: bool,
}

fn rules(operator: Option<char>) -> Rules {
    let (first, sep, named, ifemp, reserved) = match operator {
        None => ("", ",", false, "", false),
        Some('+') => ("", ",", false, "", true),
        Some('.') => (".", ".", false, "", false),
        Some('/') => ("/", "/", false, "", false),
        Some(';') => (";", ";", true, "", false),
        Some('?') => ("?", "&", true, "=", false),
        Some('&') => ("&", "&", true, "=", false),
        _ => ("#", ",", false, "", true),
    };
    Rules {
        first,
        sep,
        named,
        ifemp,
        reserved,
    }
}

/// The expression's text as it appears in a template: `{+a,b*,c:3}`.
pub fn expression_text(operator: Option<char>, vars: &[Var]) -> String {
    let mut out = String::from("{");
    if let Some(op) = operator {
        out.push(op);
    }
    for (i, var) in vars.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&var.name);
        match var.modifier {
            Modifier::None => {}
            Modifier::Explode => out.push('*'),
            Modifier::Prefix(n) => out.push_str(&format!(":{n}")),
        }
    }
    out.push('}');
    out
}

/// Expands one expression (Appendix A).
pub fn expand_expression(operator: Option<char>, vars: &[Var]) -> String {
    let r = rules(operator);
    let enc = |text: &str| encode(text, r.reserved);
    let mut out = String::new();
    let mut first = true;
    for var in vars {
        let value = match &var.value {
            None => continue,
            Some(Value::List(l)) if l.is_empty() => continue,
            Some(Value::Map(m)) if m.is_empty() => continue,
            Some(v) => v,
        };
        out.push_str(if first { r.first } else { r.sep });
        first = false;
        match value {
            Value::Text(text) => {
                if r.named {
                    out.push_str(&var.name);
                    if text.is_empty() {
                        out.push_str(r.ifemp);
                        continue;
                    }
                    out.push('=');
                }
                let text = match var.modifier {
                    Modifier::Prefix(n) => text.chars().take(n as usize).collect(),
                    _ => text.clone(),
                };
                out.push_str(&enc(&text));
            }
            Value::List(items) if var.modifier != Modifier::Explode => {
                if r.named {
                    out.push_str(&var.name);
                    out.push('=');
                }
                let items: Vec<String> = items.iter().map(|i| enc(i)).collect();
                out.push_str(&items.join(","));
            }
            Value::Map(pairs) if var.modifier != Modifier::Explode => {
                if r.named {
                    out.push_str(&var.name);
                    out.push('=');
                }
                let items: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{},{}", enc(k), enc(v)))
                    .collect();
                out.push_str(&items.join(","));
            }
            Value::List(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|item| {
                        if !r.named {
                            enc(item)
                        } else if item.is_empty() {
                            format!("{}{}", var.name, r.ifemp)
                        } else {
                            format!("{}={}", var.name, enc(item))
                        }
                    })
                    .collect();
                out.push_str(&items.join(r.sep));
            }
            Value::Map(pairs) => {
                let items: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        if r.named && v.is_empty() {
                            format!("{}{}", enc(k), r.ifemp)
                        } else {
                            format!("{}={}", enc(k), enc(v))
                        }
                    })
                    .collect();
                out.push_str(&items.join(r.sep));
            }
        }
    }
    out
}

/// Percent-encodes what the operator does not let through: unreserved
/// characters always pass; reserved characters and existing `%XX`
/// triplets pass for `+` and `#`.
pub fn encode(text: &str, reserved: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let reserved_char = b":/?#[]@!$&'()*+,;=".contains(&b);
        let triplet = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if unreserved || (reserved && (reserved_char || triplet)) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, modifier: Modifier, value: Option<Value>) -> Var {
        Var {
            name: name.to_owned(),
            modifier,
            value,
        }
    }

    fn text(t: &str) -> Option<Value> {
        Some(Value::Text(t.to_owned()))
    }

    /// Examples of RFC 6570 §3.2.1.
    #[test]
    fn the_rfcs_examples() {
        let list = || {
            Some(Value::List(
                ["red", "green", "blue"].map(str::to_owned).to_vec(),
            ))
        };
        let keys = || {
            Some(Value::Map(vec![
                ("semi".into(), ";".into()),
                ("dot".into(), ".".into()),
                ("comma".into(), ",".into()),
            ]))
        };
        let cases: Vec<(Option<char>, Vec<Var>, &str)> = vec![
            (
                None,
                vec![var("var", Modifier::None, text("value"))],
                "value",
            ),
            (
                None,
                vec![var("hello", Modifier::None, text("Hello World!"))],
                "Hello%20World%21",
            ),
            (
                Some('+'),
                vec![var("path", Modifier::None, text("/foo/bar"))],
                "/foo/bar",
            ),
            (
                None,
                vec![var("var", Modifier::Prefix(3), text("value"))],
                "val",
            ),
            (
                None,
                vec![var("list", Modifier::None, list())],
                "red,green,blue",
            ),
            (
                Some('/'),
                vec![var("list", Modifier::Explode, list())],
                "/red/green/blue",
            ),
            (
                None,
                vec![var("keys", Modifier::None, keys())],
                "semi,%3B,dot,.,comma,%2C",
            ),
            (
                None,
                vec![var("keys", Modifier::Explode, keys())],
                "semi=%3B,dot=.,comma=%2C",
            ),
            (
                Some('?'),
                vec![var("keys", Modifier::Explode, keys())],
                "?semi=%3B&dot=.&comma=%2C",
            ),
            (
                Some(';'),
                vec![var("list", Modifier::Explode, list())],
                ";list=red;list=green;list=blue",
            ),
            (
                Some('?'),
                vec![
                    var("x", Modifier::None, text("1024")),
                    var("empty", Modifier::None, text("")),
                ],
                "?x=1024&empty=",
            ),
            (
                Some(';'),
                vec![
                    var("x", Modifier::None, text("1024")),
                    var("empty", Modifier::None, text("")),
                ],
                ";x=1024;empty",
            ),
            (Some('#'), vec![var("undef", Modifier::None, None)], ""),
            (
                Some('.'),
                vec![
                    var("x", Modifier::None, text("1024")),
                    var("undef", Modifier::None, None),
                ],
                ".1024",
            ),
            (
                Some('+'),
                vec![var("half", Modifier::None, text("50%"))],
                "50%25",
            ),
            (
                Some('+'),
                vec![var("half", Modifier::None, text("50%2F"))],
                "50%2F",
            ),
        ];
        for (op, vars, want) in cases {
            assert_eq!(
                expand_expression(op, &vars),
                want,
                "{}",
                expression_text(op, &vars)
            );
        }
    }
}
